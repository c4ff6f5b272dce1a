"""How far one coordinator scales: the real ``tourney rank`` on 10k to 1M prompts with the simulated judge.

    python -m experiments.bench_scale [--sizes 10000,100000,1000000] [--strategies knockout,round-robin,lucb]
                                      [--cache-sizes 10000,100000] [--window W] [--mode lockstep] [--quick]

A benchmark, not a test. Each input is generated on the fly into a temporary JSONL file and deleted afterwards:
N = 16 responses per prompt, each a SHORT text (40 bytes, so the input is ~1.1 KB a prompt and the coordinator's
work, not the JSON of long responses, is measured) with a "quality" number the simulated judge reads. Every run is
the command a user types (``python -m tourney rank INPUT --judge simulated --strategy S -o -``) in a child process:

- judgments/s = the run's judgments (from ``--summary``) / the command's whole wall time (start-up, the input's
  checking pass, reading it again and writing the output included; ``engine/s``: over the engine's own clock, the
  summary's ``wall_s``), first with ``--no-cache``, then with ``--cache`` in a temporary folder twice: a first run
  filling it and a second one reading every judgment back;
- peak RSS: the child's own ``ru_maxrss`` (``os.wait4``);
- first row: seconds from the start until the first output line arrives on the pipe (``-o -``).

Sizes per strategy (prompts x judgments per prompt): knockout 15, lucb 45 (``--budget 45`` = 3(N-1)), swiss and
adaptive knockout up to their plan, round robin 120, so round robin is run at 10k and 100k only (1M would be 120M
judgments, hours); cached runs (a SQLite file of every judgment) at ``--cache-sizes`` only. The last line is
``scale: knockout=…/s round-robin=…/s lucb=…/s rss_1M=… MB``: judgments/s without the cache at each strategy's
largest size, and the peak RSS of the 1M-prompt knockout run ("-" when not run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.args import Parser, given, positive

N = 16
TEXT_BYTES = 40
ROOT = Path(__file__).resolve().parents[1]  # the child runs this checkout's tourney
STRATEGIES = ("knockout", "round-robin", "lucb", "adaptive-knockout", "swiss")
MAIN = ("knockout", "round-robin", "lucb")  # the last line's
EXTRA_ARGS = {"lucb": ["--budget", str(3 * (N - 1))], "swiss": ["--budget", str(3 * (N - 1))]}
LARGEST = {"round-robin": 100_000, "adaptive-knockout": 100_000, "swiss": 100_000}  # beyond: hours per run
PER_PROMPT = {
    "knockout": N - 1,
    "round-robin": N * (N - 1) // 2,
    "lucb": 3 * (N - 1),
    "swiss": 3 * (N - 1),
    "adaptive-knockout": 3 * (N - 1),
}  # judgments per prompt, at most (adaptive knockout: about)


@dataclass(frozen=True)
class Measured:
    """One child run: its wall time, the run's judgments (cached ones among them), peak RSS and first-row time."""

    strategy: str
    prompts: int
    cache: str  # "none", "fill" or "cached"
    wall_s: float
    engine_s: float  # the engine's own clock (--summary's wall_s): from its first prompt to its last
    judgments: int
    cached: int
    rss_mb: float
    first_row_s: float
    rows: int

    @property
    def per_s(self) -> float:
        """Judgments per second of the whole command."""
        return self.judgments / self.wall_s


def write_input(path: Path, prompts: int, seed: int = 0) -> None:
    """``prompts`` JSONL lines of N short responses with a quality each (formatted directly: 1M lines in seconds)."""
    rng = random.Random(seed)
    pad = "x" * TEXT_BYTES
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
        for k in range(prompts):
            responses = ",".join(
                f'{{"text":"{(f"answer {i} to question {k} " + pad)[:TEXT_BYTES]}","quality":{rng.random():.4f}}}'
                for i in range(N)
            )
            f.write(f'{{"id":{k},"prompt":"question {k}","responses":[{responses}]}}\n')


def run_cli(input_path: Path, strategy: str, cache: Path | None, work: Path, extra: Sequence[str]) -> tuple:
    """Run ``tourney rank`` on ``input_path`` in a child; return (wall s, summary, peak RSS MB, first row s, rows)."""
    summary = work / "summary.json"
    cmd = [sys.executable, "-m", "tourney", "rank", str(input_path), "--judge", "simulated", "--strategy", strategy,
           *EXTRA_ARGS.get(strategy, []), *(["--cache", str(cache)] if cache else ["--no-cache"]), "-o", "-",
           "--summary", str(summary), "-q", *extra]  # fmt: skip
    err_path = work / "stderr.txt"
    with open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        first = None
        rows = 0
        try:
            while chunk := os.read(proc.stdout.fileno(), 1 << 20):  # whatever has arrived, up to 1 MB
                if first is None:  # the first row is complete once its newline has arrived
                    first = time.perf_counter() - t0 if b"\n" in chunk else None
                rows += chunk.count(b"\n")
        except BaseException:  # interrupted: leave no child running
            proc.kill()
            raise
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen not to wait again
    if proc.returncode != 0:
        raise SystemExit(f"bench_scale: {' '.join(cmd)} failed ({proc.returncode}):\n{err_path.read_text()[-2000:]}")
    return wall, json.loads(summary.read_text()), usage.ru_maxrss / 1024, first if first is not None else wall, rows


def measure(strategy: str, prompts: int, with_cache: bool, work: Path, extra: Sequence[str]) -> Iterator[Measured]:
    """Generate the input, run without the cache and (``with_cache``) twice with a fresh one; delete everything."""
    input_path = work / "input.jsonl"
    write_input(input_path, prompts)
    try:
        runs: list[tuple[str, Path | None]] = [("none", None)]
        if with_cache:
            runs += [("fill", work / "cache.sqlite"), ("cached", work / "cache.sqlite")]
        for label, cache in runs:
            wall, summary, rss, first, rows = run_cli(input_path, strategy, cache, work, extra)
            if rows != prompts:
                raise SystemExit(f"bench_scale: {strategy} on {prompts} prompts wrote {rows} rows")
            yield Measured(strategy, prompts, label, wall, summary["wall_s"], summary["judgments"], summary["cached"],
                           rss, first, rows)  # fmt: skip
    finally:
        for name in ("input.jsonl", "cache.sqlite", "cache.sqlite-wal", "cache.sqlite-shm", "summary.json"):
            (work / name).unlink(missing_ok=True)


def sizes(text: str) -> list[int]:
    """Comma-separated prompt counts."""
    return [positive(part.strip()) for part in text.split(",")]


def names(text: str) -> list[str]:
    """Comma-separated strategy names."""
    out = [part.strip() for part in text.split(",")]
    bad = [name for name in out if name not in STRATEGIES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown strategy {bad[0]!r}; choose from {', '.join(STRATEGIES)}")
    return out


def main() -> None:
    """Run every strategy at its sizes; print one line per run, then the summary line."""
    ap = Parser(prog="python -m experiments.bench_scale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--sizes", type=sizes, default=[10_000, 100_000, 1_000_000], help="prompt counts")
    ap.add_argument("--strategies", type=names, default=list(STRATEGIES), help="comma-separated (default: all)")
    ap.add_argument("--cache-sizes", type=sizes, default=[10_000, 100_000], help="sizes also run with the cache")
    ap.add_argument("--window", type=positive, default=None, help="passed on as --window (default: the CLI's)")
    ap.add_argument("--mode", choices=["lockstep", "pipelined"], default=None, help="passed on (default: the CLI's)")
    ap.add_argument("--max-judgments", type=positive, default=None,
                    help="skip runs that would make more judgments than this (a shorter sweep)")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1,000 prompts, every strategy, both caches")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still delete the temporary files
    sizes_given = given(sys.argv[1:], "--sizes", "--cache-sizes")
    if args.quick and sizes_given:
        ap.error(f"{sizes_given[0]} has no effect with --quick (it runs 1,000 prompts)")
    if args.quick:
        args.sizes, args.cache_sizes = [1000], [1000]
    if "--cache-sizes" not in sizes_given:  # the default ones that are run at all
        args.cache_sizes = [c for c in args.cache_sizes if c in args.sizes]
    if not set(args.cache_sizes) <= set(args.sizes):
        ap.error(f"--cache-sizes {','.join(map(str, args.cache_sizes))} must be among --sizes (those runs are repeated"
                 " with the cache)")  # fmt: skip
    extra = [*(["--window", str(args.window)] if args.window else []), *(["--mode", args.mode] if args.mode else [])]
    print(f"N={N} responses of {TEXT_BYTES} bytes per prompt, simulated judge; load average {os.getloadavg()[0]:.2f}"
          f" on {os.cpu_count()} cores; {' '.join(extra) or 'CLI defaults (window, mode)'}", flush=True)  # fmt: skip
    skipped = [(s, p) for s in args.strategies for p in args.sizes if p > LARGEST.get(s, p)
               or (args.max_judgments and p * PER_PROMPT[s] > args.max_judgments)]  # fmt: skip
    for s, p in skipped:
        print(f"skipped: {s} at {p:,} prompts ({p * PER_PROMPT[s]:,} judgments: too long a run)")
    print(f"{'strategy':<18}{'prompts':>9}{'cache':>8}{'judgments':>12}{'wall s':>9}{'judg/s':>9}{'engine/s':>9}"
          f"{'RSS MB':>8}{'1st row s':>10}", flush=True)  # fmt: skip
    done: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for strategy in args.strategies:
            for prompts in sorted(args.sizes):
                if (strategy, prompts) in skipped:
                    continue
                for m in measure(strategy, prompts, prompts in args.cache_sizes, Path(tmp), extra):
                    done.append(m)
                    print(f"{m.strategy:<18}{m.prompts:>9,}{m.cache:>8}{m.judgments:>12,}{m.wall_s:>9.1f}"
                          f"{m.per_s:>9,.0f}{m.judgments / m.engine_s:>9,.0f}{m.rss_mb:>8.0f}{m.first_row_s:>10.1f}",
                          flush=True)  # fmt: skip
    parts = []
    for strategy in MAIN:
        runs = [m for m in done if m.strategy == strategy and m.cache == "none"]
        best = max(runs, key=lambda m: m.prompts) if runs else None
        parts.append(f"{strategy}={best.per_s:.0f}/s" if best else f"{strategy}=-/s")
    rss = [m.rss_mb for m in done if m.strategy == "knockout" and m.prompts == 1_000_000 and m.cache == "none"]
    print(f"scale: {' '.join(parts)} rss_1M={f'{rss[0]:.0f}' if rss else '-'} MB")


if __name__ == "__main__":
    main()
