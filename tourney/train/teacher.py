"""A teacher for distillation without a stronger model: an arithmetic verifier that writes short judging rationales.

For two step-by-step solutions to a math word problem (GSM8K-style: each calculation written ``48/2 = 24`` or
annotated ``<<48/2=24>>``), one of them known to be right, the teacher recomputes every calculation of both, names
the first step where the two solutions part, says which one is right and why (its arithmetic holds, the other's
fails at a step, or the other's final answer is not what its own work gives), and ends with the judge family's
verdict string for the known-better side. What it knows: the two texts and which one is right; nothing else (no
gold answer, no question understanding, no model). It writes a trace only when its recomputation backs the label:

- the known-better solution has no calculation that fails, and the other has one (a slipped step, as in
  ``experiments/gsm8k.py``'s synthetic wrong solutions); or
- neither has a failing calculation, but the other's final ``#### answer`` appears nowhere in its own working while
  the better one's does (a wrong final line).

Anything else (a wrong method with sound arithmetic, a right solution with a miscalculation) gets no trace.

Injection: the rationale is built from the recomputed numbers only (never a candidate's words), and the verdict
from the label, so a candidate that writes a fake verdict or ``</think>`` changes neither.

Pure Python plus ``tourney.judges``: importable in verl's environment (no vLLM).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tourney.judges import Family, get_family
from tourney.types import Prompt

TEACHERS = ("arithmetic",)  # the teachers `tourney train sft-prepare --teacher` knows
THINK_CLOSE = "\n</think>\n\n"  # what a thinking family's trace closes its reasoning with (as trl_loop forces)

# GSM8K's calculator annotations: <<48/2=24>>.
ANNOTATION = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
# A written calculation: numbers (commas, decimals, a $ sign, parentheses, one unit word: "20 sheep", "60 pounds/hour")
# joined by + - * / (also x, the en dash and the minus sign, as GSM8K writes them), then = and a number.
_NUM = r"\$?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s+[A-Za-z]+(?:/[A-Za-z]+)?(?=\s*[-+*/x\u00d7\u2013\u2212=)]))?"
_OP = r"[-+*/\u00d7\u2013\u2212]|(?<=[\d\s])x(?=[\s\d])"
EQUATION = re.compile(
    rf"(?<![\w.$])(\(*\s*{_NUM}\s*\)*(?:\s*(?:{_OP})\s*\(*\s*{_NUM}\s*\)*)+)\s*=\s*\$?(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+))(?![\w])"
)
FINAL = re.compile(r"####\s*\$?(-?[0-9][0-9,]*(?:\.[0-9]+)?)")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
TOLERANCE = 0.005  # GSM8K rounds results to two decimals (1/3 = 0.33): a gap below half a cent is rounding


@dataclass(frozen=True)
class Step:
    """One calculation: the expression as written (normalised), the result it claims, and the recomputed value."""

    expr: str
    claimed: float
    value: float

    @property
    def holds(self) -> bool:
        """True when the claimed result is the recomputed one (up to GSM8K's two-decimal rounding)."""
        return abs(self.value - self.claimed) <= max(TOLERANCE, 1e-9 * abs(self.value))

    def text(self) -> str:
        """``expr = claimed``, numbers written plainly."""
        return f"{self.expr} = {fmt(self.claimed)}"


def fmt(value: float) -> str:
    """A number as GSM8K writes it: integers plain, others with at most two decimals."""
    if abs(value - round(value)) < 1e-9:
        return str(int(round(value)))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def number(text: str) -> float | None:
    """A written number (commas, a $ sign and a trailing comma allowed) as a float, or None."""
    try:
        value = float(text.strip().rstrip(",").replace(",", "").replace("$", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def evaluate(expr: str) -> float | None:
    """Evaluate numbers, + - * / and parentheses safely; None for anything else (or a division by zero)."""
    try:
        tree = ast.parse(expr.replace(",", "").replace("$", "").strip(), mode="eval").body
    except SyntaxError:
        return None

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError("unsupported")

    try:
        value = ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


def normalise(expr: str) -> str:
    """An expression written the teacher's way: no commas or $, one space around each operator."""
    plain = re.sub(r"\s+", "", expr.replace(",", "").replace("$", ""))
    return re.sub(r"(?<=[\d)])([-+*/])", r" \1 ", plain)


def plain_expr(written: str) -> str:
    """A written calculation as arithmetic: x, the en dash and the minus sign as * and -, unit words dropped."""
    expr = re.sub(r"(?<=[\d\s])x(?=[\s\d])", "*", written).replace("\u00d7", "*")
    return re.sub(r"[A-Za-z]+(?:/[A-Za-z]+)?", "", expr.replace("\u2013", "-").replace("\u2212", "-"))


def steps_of(text: str) -> list[Step]:
    """The calculations of a solution, in order: its ``<<expr=result>>`` annotations if it has any, else every
    written ``expr = result`` with at least one operator. Calculations that do not evaluate are left out."""
    found = [(m.group(1), m.group(2)) for m in ANNOTATION.finditer(text)]
    if not found:
        found = [(plain_expr(m.group(1)), m.group(2)) for m in EQUATION.finditer(text)]
    steps = []
    for expr, result in found:
        value, claimed = evaluate(expr), number(result)
        if value is not None and claimed is not None:
            steps.append(Step(normalise(expr), claimed, value))
    return steps


def final_answer(text: str) -> float | None:
    """The number after the last ``####``, or None."""
    found = FINAL.findall(text)
    return number(found[-1]) if found else None


def in_working(text: str, answer: float) -> bool:
    """True when ``answer`` is written somewhere in the solution before its final ``####`` line."""
    body = text[: text.rfind("####")] if "####" in text else text
    return any(number(t) == answer for t in re.findall(r"\d[\d,]*(?:\.\d+)?", ANNOTATION.sub("", body)))


def names(family: Family) -> tuple[str, str]:
    """How the family's prompt names the two responses: RM-R1's Chatbot A/B, RRM's Assistant 1/2, else Response."""
    for stem in ("Chatbot", "Assistant"):
        if all(f"{stem} {c}" in (family.user + (family.system or "")) for c in family.choices):
            return f"{stem} {family.choices[0]}", f"{stem} {family.choices[1]}"
    return f"Response {family.choices[0]}", f"Response {family.choices[1]}"


def verdict_text(family: Family, side: str) -> str:
    """The end of a trace: ``</think>`` for a thinking family, then the family's verdict string for ``side``."""
    return (THINK_CLOSE if family.thinks else "\n") + family.verdicts[0 if side == "A" else 1]


def _line(name: str, steps: Sequence[Step], answer: float | None, text: str) -> str:
    """``Chatbot A: 16 - 3 - 4 = 9 (ok); 9 * 2 = 15 (wrong: 9 * 2 is 18); answer 15 (in its work).`` The final
    answer is checked against the response's own working right where it is written (``in its work`` or ``not in its
    work``): a judge learning from the trace then decides that next to the two numbers, not lines later."""
    parts = [f"{s.text()} (ok)" if s.holds else f"{s.text()} (wrong: {s.expr} is {fmt(s.value)})" for s in steps]
    shown = "; ".join(parts) if parts else "no calculation written"
    if answer is None:
        return f"{name}: {shown}; answer missing."
    return f"{name}: {shown}; answer {fmt(answer)} ({'in' if in_working(text, answer) else 'not in'} its work)."


def _parting(sa: Sequence[Step], sb: Sequence[Step]) -> int | None:
    """Index of the first calculation where the two solutions differ (expression or result), None if none does."""
    for k, (x, y) in enumerate(zip(sa, sb)):
        if x.expr != y.expr or fmt(x.claimed) != fmt(y.claimed):
            return k
    return min(len(sa), len(sb)) if len(sa) != len(sb) else None


def rationale(family: Family | str, answer_a: str, answer_b: str, better: str) -> str | None:
    """The teacher's judgment of A vs B ending with the family's verdict for ``better`` ("A"/"B"), or None when its
    recomputation does not back that label (see the module docstring)."""
    if better not in ("A", "B"):
        raise ValueError(f"better must be 'A' or 'B', got {better!r}")
    fam = get_family(family)
    texts = {"A": answer_a, "B": answer_b}
    worse = "B" if better == "A" else "A"
    steps = {s: steps_of(texts[s]) for s in "AB"}
    answers = {s: final_answer(texts[s]) for s in "AB"}
    name = dict(zip("AB", names(fam)))
    failing = {s: [k for k, st in enumerate(steps[s]) if not st.holds] for s in "AB"}
    if failing[better]:
        return None
    if failing[worse]:
        k = failing[worse][0]
        why = f"{name[worse]}'s step {k + 1} is wrong: {steps[worse][k].expr} is {fmt(steps[worse][k].value)}, " + (
            f"not {fmt(steps[worse][k].claimed)}, and the error carries to its answer."
        )
    else:
        good, bad = answers[better], answers[worse]
        if good is None or not in_working(texts[better], good) or (bad is not None and in_working(texts[worse], bad)):
            return None
        given = fmt(bad) if bad is not None else "no answer"
        why = f"{name[worse]}'s calculations hold, but its final answer ({given}) is not what its own work gives."
    part = _parting(steps["A"], steps["B"])
    if part is not None:
        where = f"The two solutions part at step {part + 1}."
    elif answers["A"] != answers["B"]:
        where = "The two solutions compute the same steps and part only at the final answer."
    else:
        return None  # same steps and same answer: nothing the arithmetic can tell apart
    lines = [
        "Let me recompute every calculation of both responses.",
        _line(name["A"], steps["A"], answers["A"], texts["A"]),
        _line(name["B"], steps["B"], answers["B"], texts["B"]),
        where,
        why,
        f"{name[better]}'s arithmetic holds throughout, so {name[better]} is right.",
    ]
    return "\n".join(lines) + verdict_text(fam, better)


def teach(family: Family | str, prompt: Prompt, chosen: str, rejected: str) -> list[dict[str, Any]] | None:
    """Both orders of one pair as SFT rows (``messages``: the family's judge prompt, then the teacher's trace), the
    known-better ``chosen`` first in A, then in B; None when the teacher cannot back the label."""
    fam = get_family(family)
    rows = []
    for better, a, b in (("A", chosen, rejected), ("B", rejected, chosen)):
        trace = rationale(fam, a, b, better)
        if trace is None:
            return None
        rows.append({"messages": fam.render(prompt, a, b) + [{"role": "assistant", "content": trace}]})
    return rows
