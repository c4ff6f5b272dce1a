"""Preference pairs for DPO from ranked results: which responses become chosen/rejected, and how sure the judge was.

Pairing policies (``parse_policy``):

- ``best-worst``: one pair per prompt, the top-ranked response against the bottom-ranked one.
- ``top-bottom:K``: K pairs per prompt, the i-th best against the i-th worst (i < K), so no response is on both
  sides; a prompt with fewer than 2K distinct responses gives as many pairs as it can.
- ``all:MARGIN``: every pair whose score gap is at least MARGIN (in the units of ``tourney rank``'s scores: ELO
  points, Bradley–Terry log-strengths, or knockout rounds).

A pair is only made when the chosen response's score is strictly above the rejected one's. A prompt with fewer than
two distinct responses, or where the judge separated nothing (every score equal, or no valid vote that was not a
tie), gives no pair and is counted in ``PairStats``; nothing is ever paired at random.

Confidence (``--min-confidence``): the share of the *direct* votes between the two responses that favour the chosen
one (soft votes count by their probability; invalid votes abstain), i.e. what the judge itself said about this very
pair, with positions balanced by ``--votes``. We prefer it to Bradley–Terry bootstrap intervals because a prompt has
only N(N-1)/2 matches: with N = 4 to 16 samples the intervals are wide and mostly set by the prior, so they would
filter out nearly everything while telling little about a given pair. Round-robin (the default) judges every pair
directly; with knockout, two responses that never met have no direct vote, confidence ``None``, and are dropped by
any ``--min-confidence``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tourney.engine import Record, Result
from tourney.errors import InputError
from tourney.io import Item, Writer, parquet

POLICIES = ("best-worst", "top-bottom:K", "all:MARGIN")


@dataclass(frozen=True)
class Policy:
    """A pairing policy: ``kind`` is best-worst, top-bottom (with ``k``) or all (with ``margin``)."""

    kind: str
    k: int = 1
    margin: float = 0.0


@dataclass
class PairStats:
    """What pairing did: prompts seen, pairs written, and prompts skipped (by reason) or thinned by the filter."""

    prompts: int = 0
    pairs: int = 0
    skipped_too_few: int = 0  # fewer than two distinct responses
    skipped_unseparated: int = 0  # every score equal, or no decisive valid vote
    skipped_no_pair: int = 0  # separated, but no pair met the policy (e.g. no gap >= MARGIN)
    dropped_low_confidence: int = 0  # pairs removed by --min-confidence
    dropped_no_direct_vote: int = 0  # of those, pairs whose responses never met (confidence null)
    duplicates_merged: int = 0  # responses whose text repeats an earlier one of the same prompt

    def as_dict(self) -> dict[str, Any]:
        """The counters as a JSON-able dict."""
        return asdict(self)


@dataclass
class Pair:
    """One preference pair: candidate indices into the input's responses, scores and the direct votes."""

    item: Item
    chosen: int
    rejected: int
    score_chosen: float
    score_rejected: float
    votes_for: int
    votes_against: int
    votes_invalid: int
    confidence: float | None
    rationale: list[dict[str, Any]] = field(default_factory=list)


def parse_policy(text: str) -> Policy:
    """Parse ``best-worst``, ``top-bottom:K`` (K >= 1) or ``all:MARGIN`` (MARGIN >= 0); InputError otherwise."""
    name, _, arg = text.partition(":")
    try:
        if name == "best-worst" and not arg:
            return Policy("best-worst")
        if name == "top-bottom" and arg and int(arg) >= 1:
            return Policy("top-bottom", k=int(arg))
        if name == "all" and arg and float(arg) >= 0 and float(arg) != float("inf"):
            return Policy("all", margin=float(arg))
    except ValueError:
        pass
    what = "bad value in pairing policy" if name in ("best-worst", "top-bottom", "all") else "unknown pairing policy"
    raise InputError(f"{what} {text!r}; use best-worst, top-bottom:K (K >= 1) or all:MARGIN (MARGIN >= 0)",
                     field="--pairing")  # fmt: skip


def distinct(item: Item) -> tuple[Item, list[int]]:
    """The item with repeated response texts removed (first kept), and each kept response's input index."""
    keep: dict[str, int] = {}
    for k, text in enumerate(item.texts):
        keep.setdefault(text, k)
    index = list(keep.values())
    slim = Item(item.id, item.line, item.prompt, [item.texts[k] for k in index], [item.fields[k] for k in index],
                item.row)  # fmt: skip
    return slim, index


def check_policy(items: Sequence[Item], policy: Policy, path: str) -> None:
    """top-bottom:K needs 2K responses in every prompt that has two or more; fail at the first that has fewer."""
    if policy.kind != "top-bottom":
        return
    for item in items:
        if 2 <= len(item.texts) < 2 * policy.k:
            raise InputError(f"top-bottom:{policy.k} needs at least {2 * policy.k} responses per prompt, got "
                             f"{len(item.texts)}", path, item.line, "responses")  # fmt: skip


def make_pairs(
    results: Sequence[Result],
    index: Sequence[Sequence[int]],
    originals: Sequence[Item],
    policy: Policy,
    *,
    min_confidence: float | None = None,
    rationale: bool = False,
    stats: PairStats | None = None,
) -> list[Pair]:
    """Pairs from ranked results over distinct responses; ``index[p]`` maps result p's candidates to input indices.

    The results need their judgment records (``Engine(keep_records=True)``): without them nothing counts as separated.
    """
    stats = stats if stats is not None else PairStats()
    out: list[Pair] = []
    for res, idx, orig in zip(results, index, originals):
        stats.prompts += 1
        stats.duplicates_merged += len(orig.texts) - len(idx)
        n = len(res.scores)
        if n < 2:
            stats.skipped_too_few += 1
            continue
        decisive = any(r.p_a is not None and r.p_a != 0.5 for r in res.records)
        if not decisive or max(res.scores) == min(res.scores):
            stats.skipped_unseparated += 1
            continue
        met = 0  # pairs that met the policy; those --min-confidence then drops are counted as pairs, not here
        for c, r in _candidates(res, policy):
            if not res.scores[c] > res.scores[r]:
                continue
            met += 1
            pair = _pair(res, orig, idx, c, r, rationale)
            if min_confidence is not None and (pair.confidence is None or pair.confidence < min_confidence):
                stats.dropped_low_confidence += 1
                stats.dropped_no_direct_vote += pair.confidence is None
                continue
            out.append(pair)
        if not met:
            stats.skipped_no_pair += 1
    stats.pairs += len(out)
    return out


def _candidates(res: Result, policy: Policy) -> list[tuple[int, int]]:
    """(chosen, rejected) candidate pairs the policy proposes for one ranked prompt, best pairs first."""
    rank = res.ranking
    if policy.kind == "best-worst":
        return [(rank[0], rank[-1])]
    if policy.kind == "top-bottom":
        return [(rank[i], rank[-1 - i]) for i in range(min(policy.k, len(rank) // 2))]
    return [(rank[a], rank[b]) for a in range(len(rank)) for b in range(a + 1, len(rank))
            if res.scores[rank[a]] - res.scores[rank[b]] >= policy.margin]  # fmt: skip


def _pair(res: Result, orig: Item, idx: Sequence[int], c: int, r: int, rationale: bool) -> Pair:
    """Build one pair with the direct votes between candidates ``c`` (chosen) and ``r`` (rejected)."""
    direct = [rec for rec in res.records if {rec.a, rec.b} == {c, r}]
    p_chosen = [_p_for(rec, c) for rec in direct]
    valid = [p for p in p_chosen if p is not None]
    # p_a and forced: a forced verdict's raw text holds no verdict (it was read from the log-probabilities).
    why = [{"chosen_shown_as": "A" if rec.a == c else "B", "verdict": rec.verdict, "p_a": rec.p_a,
            "forced": rec.forced, "raw": rec.raw} for rec in direct] if rationale else []  # fmt: skip
    return Pair(
        item=orig, chosen=idx[c], rejected=idx[r], score_chosen=res.scores[c], score_rejected=res.scores[r],
        votes_for=sum(p > 0.5 for p in valid), votes_against=sum(p < 0.5 for p in valid),
        votes_invalid=len(p_chosen) - len(valid), confidence=round(sum(valid) / len(valid), 6) if valid else None,
        rationale=why,
    )  # fmt: skip


def _p_for(rec: Record, c: int) -> float | None:
    """P(candidate ``c`` wins) according to one judgment record (None: invalid)."""
    if rec.p_a is None:
        return None
    return rec.p_a if rec.a == c else 1.0 - rec.p_a


def to_row(pair: Pair, conversational: bool, rationale: bool) -> dict[str, Any]:
    """One output row: prompt/chosen/rejected as strings, or as message lists (TRL's conversational format)."""
    item = pair.item
    chosen, rejected = item.texts[pair.chosen], item.texts[pair.rejected]
    if conversational:
        messages = [{"role": "user", "content": item.prompt}] if isinstance(item.prompt, str) else item.prompt
        prompt = [{"role": m["role"], "content": m["content"]} for m in messages]
        row: dict[str, Any] = {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                               "rejected": [{"role": "assistant", "content": rejected}]}  # fmt: skip
    else:
        row = {"prompt": item.prompt, "chosen": chosen, "rejected": rejected}
    row |= {
        "prompt_id": str(item.id), "chosen_index": pair.chosen, "rejected_index": pair.rejected,
        "score_chosen": pair.score_chosen, "score_rejected": pair.score_rejected,
        "margin": round(pair.score_chosen - pair.score_rejected, 6) + 0.0,
        "votes_for": pair.votes_for, "votes_against": pair.votes_against, "votes_invalid": pair.votes_invalid,
        "confidence": pair.confidence,
    }  # fmt: skip
    if rationale:
        row["rationale"] = pair.rationale
    return row


def rows_of(pairs: Sequence[Pair], rationale: bool = False, conversational: bool | None = None) -> list[dict[str, Any]]:
    """Output rows for all pairs: strings when every prompt is a string, else all conversational (one schema);
    ``conversational``: decided by the caller (a stream's rows are made a prompt at a time)."""
    if conversational is None:
        conversational = any(not isinstance(p.item.prompt, str) for p in pairs)
    return [to_row(p, conversational, rationale) for p in pairs]


def parquet_rows(rows: Sequence[dict[str, Any]]) -> Writer:
    """The pairs as a Parquet payload for ``tourney.io.write_all`` (an explicit schema, see ``_schema``)."""
    return parquet(rows, _schema(rows))


def _schema(rows: Sequence[dict[str, Any]]) -> Any:
    """An explicit Arrow schema, so an empty file or a column of nulls still has the right types."""
    import pyarrow as pa

    msg = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    conversational = bool(rows) and not isinstance(rows[0]["prompt"], str)
    text = msg if conversational else pa.string()
    fields = [("prompt", text), ("chosen", text), ("rejected", text), ("prompt_id", pa.string()),
              ("chosen_index", pa.int64()), ("rejected_index", pa.int64()), ("score_chosen", pa.float64()),
              ("score_rejected", pa.float64()), ("margin", pa.float64()), ("votes_for", pa.int64()),
              ("votes_against", pa.int64()), ("votes_invalid", pa.int64()), ("confidence", pa.float64())]  # fmt: skip
    if rows and "rationale" in rows[0]:
        why = pa.struct([("chosen_shown_as", pa.string()), ("verdict", pa.string()), ("p_a", pa.float64()),
                         ("forced", pa.bool_()), ("raw", pa.string())])  # fmt: skip
        fields.append(("rationale", pa.list_(why)))
    return pa.schema(fields)
