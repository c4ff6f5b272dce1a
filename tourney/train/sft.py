"""Distillation data: a judge's own rationales with CORRECT verdicts -> verl's SFT parquet (``messages`` column).

RM-R1 (arXiv 2505.02387, §3) first fine-tunes on reasoning traces whose verdict agrees with the label, then runs
RLVR. Here the traces are the ``raw`` texts of tourney's ``--judgments`` records (optionally from a stronger judge);
the prompt and the two candidates come from the run's input JSONL, and which candidate is better from each
response's ``quality`` (higher wins) or ``correct`` (true beats false). A record is kept only if its verdict was
written by the judge (not forced from log-probabilities), parses from ``raw`` with the family's parser, names
the better candidate, and writes a verdict exactly once: a trace that also writes the other verdict ("[[A]] or
[[B]]?") or repeats its own would teach the judge to do so. Each kept row is the family's judge prompt followed by
the judge's text as the assistant turn.

With a teacher (``teacher_prepare``), the traces come from ``tourney.train.teacher`` instead: preference pairs in,
both orders of each pair the teacher can back out (so the verdicts are exactly balanced A/B).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from tourney.errors import InputError
from tourney.io import Item, Row, jsonl_records, parquet, read_items, write_all
from tourney.judges import Family, get_family, parse_verdict
from tourney.judges.base import verdict_forms
from tourney.train.pairs import read_pairs
from tourney.train.prepare import make_dir, split_by_group


def read_judgments(path: str) -> list[tuple[int, dict[str, Any]]]:
    """(line, record) for every line of a ``--judgments`` JSONL file, checking the fields this stage reads."""
    out = []
    for name, line, value in jsonl_records(path):
        row = Row.of(value, name, line)
        for key in ("id", "a", "b", "raw", "forced"):
            if key not in row.data:
                raise row.bad("missing", key)
        row.id()
        for key, kind, what in (("a", int, "an integer"), ("b", int, "an integer"), ("raw", str, "a string"),
                                ("forced", bool, "true or false")):  # fmt: skip
            if not isinstance(row.data[key], kind) or (kind is int and isinstance(row.data[key], bool)):
                raise row.bad(f"expected {what}", key)
        if row.data.get("verdict") not in ("A", "B", None):
            raise row.bad("expected 'A', 'B' or null", "verdict")
        out.append((line, row.data))
    return out


def better(item: Item, a: int, b: int) -> str | None:
    """Which of candidates a, b is better by ``quality`` (higher) or ``correct`` (true over false); None if unknown."""
    fa, fb = item.fields[a], item.fields[b]
    qa, qb = fa.get("quality"), fb.get("quality")
    if isinstance(qa, (int, float)) and isinstance(qb, (int, float)) and qa != qb:
        return "A" if qa > qb else "B"
    ca, cb = fa.get("correct"), fb.get("correct")
    if isinstance(ca, bool) and isinstance(cb, bool) and ca != cb:
        return "A" if ca else "B"
    return None


def verdict_count(family: Family, text: str) -> int:
    """How many verdicts of either side ``text`` writes: each side's shortest form (RM-R1's bare ``[[A]]``, found
    inside ``<answer>[[A]]</answer>`` too), else the verdict string itself."""
    marks = {side: min((form for form, s, _, _ in verdict_forms(family.verdicts) if s == side), key=len)
             for side in ("A", "B")}  # fmt: skip
    return sum(text.count(mark) for mark in marks.values())


def sft_rows(
    judgments_path: str, items_path: str, family_name: str
) -> tuple[list[tuple[str, dict[str, Any]]], Counter[str]]:
    """(prompt id, row) for every kept record, and the counts of kept and skipped records by reason."""
    family = get_family(family_name)
    items = {str(it.id): it for it in read_items(items_path)}
    rows: list[tuple[str, dict[str, Any]]] = []
    counts: Counter[str] = Counter()
    for line, rec in read_judgments(judgments_path):
        item = items.get(str(rec["id"]))
        if item is None:
            raise InputError(f"prompt id {rec['id']!r} is not in {items_path}", judgments_path, line, "id")
        for key in ("a", "b"):
            if not 0 <= rec[key] < len(item.texts):
                raise InputError(f"no response {rec[key]} (prompt has {len(item.texts)})", judgments_path, line, key)
        truth = better(item, rec["a"], rec["b"])
        if truth is None:
            counts["skipped_no_label"] += 1
        elif rec["forced"] or rec["verdict"] is None:
            counts["skipped_forced_or_invalid"] += 1
        elif parse_verdict(family, rec["raw"], quoted=(item.texts[rec["a"]], item.texts[rec["b"]])) != rec["verdict"]:
            counts["skipped_unparsed"] += 1
        elif rec["verdict"] != truth:
            counts["skipped_wrong"] += 1
        elif verdict_count(family, rec["raw"]) != 1:
            counts["skipped_several_verdicts"] += 1
        else:
            try:
                messages = family.render(item.prompt, item.texts[rec["a"]], item.texts[rec["b"]])
            except InputError as err:
                raise InputError(err.message, items_path, item.line, "prompt") from None
            rows.append((str(rec["id"]), {"messages": messages + [{"role": "assistant", "content": rec["raw"]}]}))
            counts["kept"] += 1
    return rows, counts


def sft_schema() -> Any:
    """Arrow schema of verl's multi-turn SFT data: one ``messages`` list of {role, content}."""
    import pyarrow as pa

    return pa.schema([("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))])


def sft_prepare(
    judgments_path: str, items_path: str, family_name: str, out_dir: str, seed: int = 0, val_fraction: float = 0.1
) -> dict[str, Any]:
    """Write ``train.parquet`` / ``val.parquet`` for verl's SFT trainer (split by prompt id); return the counts."""
    rows, counts = sft_rows(judgments_path, items_path, family_name)
    if not rows:
        why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(counts.items()) if v) or "the file has none"
        raise InputError(f"no judgment kept ({why}): nothing to distil", file=judgments_path)
    train, val = write_split(rows, out_dir, seed, val_fraction)
    return {**{k: counts[k] for k in sorted(counts)}, "train": len(train), "val": len(val), "out": out_dir}


def write_split(
    rows: list[tuple[str, dict[str, Any]]], out_dir: str, seed: int, val_fraction: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split (group, row) pairs by group, write ``train.parquet`` / ``val.parquet``; return the two splits."""
    train_rows, val_rows = split_by_group(rows, lambda row: row[0], val_fraction, seed)
    train, val = [r for _, r in train_rows], [r for _, r in val_rows]
    make_dir(out_dir)
    schema = sft_schema()
    write_all([(os.path.join(out_dir, "train.parquet"), parquet(train, schema)),
               (os.path.join(out_dir, "val.parquet"), parquet(val, schema))])  # fmt: skip
    return train, val


def teacher_prepare(
    pairs_path: str, family_name: str, out_dir: str, seed: int = 0, val_fraction: float = 0.1
) -> dict[str, Any]:
    """Preference pairs -> the arithmetic teacher's traces, both orders of each pair it backs, as verl SFT parquet
    (split by prompt, as ``prepare`` does: both orders of a pair land in the same split); return the counts."""
    import json

    from tourney.train.teacher import teach

    family = get_family(family_name)
    pairs = read_pairs(pairs_path)
    rows: list[tuple[str, dict[str, Any]]] = []
    counts: Counter[str] = Counter()
    for pair in pairs:
        if pair.chosen == pair.rejected:
            counts["skipped_identical"] += 1
            continue
        try:
            taught = teach(family, pair.prompt, pair.chosen, pair.rejected)
        except InputError as err:
            raise InputError(err.message, pairs_path, pair.line, "prompt") from None
        if taught is None:
            counts["skipped_unverified"] += 1
            continue
        counts["kept"] += 1
        rows += [(json.dumps(pair.prompt, ensure_ascii=False), row) for row in taught]
    if not rows:
        why = ", ".join(f"{n} {k.replace('skipped_', '').replace('_', ' ')}" for k, n in counts.items() if n)
        raise InputError(f"the teacher backed no pair ({why or 'no pairs'}): nothing to distil", file=pairs_path)
    train, val = write_split(rows, out_dir, seed, val_fraction)
    return {"pairs": len(pairs), **{k: counts[k] for k in ("kept", "skipped_identical", "skipped_unverified")},
            "teacher": "arithmetic", "train": len(train), "val": len(val), "out": out_dir}  # fmt: skip
