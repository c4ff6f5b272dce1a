"""How close does tourney come to raw vLLM? Side-by-side timings on the tiny random model.

    python -m experiments.bench_engine [--prompts 64] [--n 8] [--max-tokens 32] [--repeats 2]
    python -m experiments.bench_engine --backend ray --replicas 2

For each tournament, tourney runs first and every batch it sends to the engine is recorded (as token ids). Then the
same batches go through ``LLM.generate`` directly, one call per recorded batch, on the same engine: that is the time
the model work alone takes. efficiency = raw time / tourney wall time; scheduler share = the part of tourney's wall
time spent outside judge calls (strategies, cache look-ups, bookkeeping). Knockout rounds depend on earlier
verdicts, so its raw time is one call per round; the pipelined run (AsyncLLM) is compared with the same raw time.
Greedy decoding and --verdict parse, so raw and tourney do exactly the same model work; the prefix cache is reset
before every timed run, and each side is timed ``--repeats`` times, interleaved, keeping the best.

``--backend ray --replicas R``: the same tournaments on R Ray replicas (a private cluster on this machine, one core
each) against R separate in-process runs of 1/R of the prompts each, side by side at the same time (one process and
one core each, the ideal R machines would reach with no coordination). efficiency = the slowest separate run's wall
time / the replicas' wall time, engines started and warmed up on both sides before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from experiments.args import Parser, at_least_two, non_negative, positive, script_env, script_exit

if TYPE_CHECKING:
    from tourney.types import Request

CONTEXT = 2048  # the judge's context in every run here
MAX_TOKENS = 1536  # the longest judge prompt here takes about 330 tokens of the context (rm-r1 template)

WORDS = "the a judge answer reason model token step proof number sum result because therefore value check".split()


def judge_tokens(text: str) -> int:
    """--max-tokens: what the bench's context leaves after its judge prompts (checked before the model starts;
    vLLM would cut longer ones short, and the table would claim tokens nobody generated)."""
    value = positive(text)
    if value > MAX_TOKENS:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_TOKENS} (the judge's context here is {CONTEXT} tokens, its prompts up to ~330), got {value}"
        )
    return value


def make_items(prompts: int, n: int, seed: int = 0) -> list:
    """Synthetic prompts with n responses of varied length (deterministic)."""
    import numpy as np

    from tourney.io import Item

    rng = np.random.default_rng(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi))))

    return [
        Item(id=k, line=k + 1, prompt=f"Question {k}: {text(10, 40)}?", texts=[text(5, 60) for _ in range(n)],
             fields=[{} for _ in range(n)])
        for k in range(prompts)
    ]  # fmt: skip


class Recorder:
    """Wraps a judge and keeps every batch of requests it is sent (converted to token ids after the timed run)."""

    def __init__(self, inner: Any) -> None:
        """Wrap ``inner`` (a PairwiseJudge on the vLLM backend)."""
        self.inner = inner
        self.batches: list[list[Request]] = []

    def key_fields(self) -> tuple:
        """No fields besides the texts."""
        return ()

    def retries(self) -> int:
        """No retries in-process."""
        return 0

    def identity(self) -> dict:
        """The wrapped judge's identity."""
        return self.inner.identity()

    def judge(self, requests: list) -> list:
        """Record the batch, then judge it."""
        self.batches.append(list(requests))
        return self.inner.judge(requests)

    def close(self) -> None:
        """Close the wrapped judge."""
        self.inner.close()


def raw_time(llm: Any, batches: list[list[list[int]]], max_tokens: int) -> float:
    """Time LLM.generate over the recorded batches, one call each, with the judge's own sampling."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    llm.reset_prefix_cache()  # neither side may reuse the other's cached prefills
    t0 = time.perf_counter()
    for batch in batches:
        llm.generate([{"prompt_token_ids": ids} for ids in batch], params, use_tqdm=False)
    return time.perf_counter() - t0


def run_engine(judge: Any, items: list, strategy: str, pipelined: bool) -> tuple[Any, float]:
    """Run one tourney Engine (no cache) and return its run (results + counters) with its wall time."""
    from tourney.engine import Engine
    from tourney.tournament import Tournament

    engine = Engine(judge, Tournament(strategy))
    backend = getattr(judge, "inner", judge).backend
    if not hasattr(backend, "_llm"):  # Ray replicas: each run uses prompts of its own
        pass
    elif backend._llm is not None:  # neither side may reuse the other's (or an earlier repeat's) cached prefills
        backend._llm.reset_prefix_cache()
    elif backend._async is not None:
        backend.loop.run(backend._async.reset_prefix_cache())
    t0 = time.perf_counter()
    run = asyncio.run(engine.arun(items)) if pipelined else engine.run(items)
    return run, time.perf_counter() - t0


def prompt_ids(judge: Any, requests: list) -> list[list[int]]:
    """The token ids of the judge prompts tourney sent for ``requests``."""
    backend, fam = judge.backend, judge.family
    return [backend.loop.run(backend.chat_ids(fam.render(r.prompt, r.a, r.b))) for r in requests]


def main() -> None:
    """Build the tiny model, run the tournaments and the raw baselines, print the table and the ratios."""
    ap = Parser(
        prog="python -m experiments.bench_engine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--prompts", type=positive, default=64, help="prompts in each run (default: 64)")
    ap.add_argument("--n", type=at_least_two, default=8, help="responses per prompt, >= 2 (default: 8)")
    ap.add_argument("--max-tokens", type=judge_tokens, default=32,
                    help=f"judge tokens per judgment, at most {MAX_TOKENS} (default: 32)")  # fmt: skip
    ap.add_argument("--repeats", type=positive, default=2, help="timed runs of each side (the best is kept)")
    ap.add_argument(
        "--backend",
        choices=("vllm", "ray"),
        default="vllm",
        help="ray: R replicas against R separate in-process runs (see above)",
    )
    ap.add_argument("--replicas", type=positive, default=2, help="--backend ray: replicas (and separate runs)")
    ap.add_argument("--part", type=non_negative, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--strategy", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default=None, help=argparse.SUPPRESS)  # K/R: one separate run (a child process)
    args = ap.parse_args()
    if args.part is not None:
        return separate_run(args)
    if args.backend == "ray":
        return bench_ray(args)

    from tourney.backends.vllm import VLLMBackend
    from tourney.config import JudgeConfig, make_judge
    from tourney.judge import PairwiseJudge
    from tourney.testing import build_tiny_model

    model = build_tiny_model(Path(tempfile.mkdtemp(prefix="tourney-bench-")) / "tiny")
    items = make_items(args.prompts, args.n)
    common = dict(family="rm-r1", max_tokens=args.max_tokens, temperature=0.0, verdict="parse", dtype="float32",
                  max_model_len=CONTEXT, engine_kwargs={"enforce_eager": True})  # fmt: skip
    lock = make_judge(JudgeConfig(str(model), mode="lockstep", **common))
    # A model judge on the in-process engine: that engine is timed directly below.
    assert isinstance(lock, PairwiseJudge) and isinstance(lock.backend, VLLMBackend)
    rec = Recorder(lock)
    warm = make_items(4, args.n, seed=1)
    run_engine(lock, warm, "round-robin", False)  # warm-up: first calls pay one-off costs

    rows = []
    for strategy in ("round-robin", "knockout"):
        walls, raws = [], []  # walls: (wall time, that run's counters), so the scheduler share is one run's
        for _ in range(args.repeats):  # interleaved repeats, best of each: the machine's noise is not ours
            rec.batches = []
            run, wall = run_engine(rec, items, strategy, False)
            walls.append((wall, run.stats))
            raws.append(
                raw_time(lock.backend._llm, [prompt_ids(lock, batch) for batch in rec.batches], args.max_tokens)
            )
        rows.append((f"{strategy} lockstep", min(raws), *min(walls, key=lambda w: w[0])))
        if strategy == "knockout":
            knock_raw = min(raws)
    lock.close()
    pipe = make_judge(JudgeConfig(str(model), mode="pipelined", **common))
    run_engine(pipe, warm, "knockout", True)
    walls = []
    for _ in range(args.repeats):
        run, wall = run_engine(pipe, items, "knockout", True)
        walls.append((wall, run.stats))
    rows.append(("knockout pipelined", knock_raw, *min(walls, key=lambda w: w[0])))
    pipe.close()

    print(f"{args.prompts} prompts x N={args.n}, tiny random model, greedy, {args.max_tokens} new tokens")
    print(f"{'run':<22}{'judgments':>10}{'calls':>7}{'raw s':>9}{'tourney s':>11}{'efficiency':>12}{'scheduler':>11}")
    eff = {}
    for name, raw, wall, st in rows:
        share = max(wall - st.judge_s, 0.0) / wall
        eff[name] = raw / wall
        print(f"{name:<22}{st.judgments:>10}{st.backend_calls:>7}{raw:>9.2f}{wall:>11.2f}{raw / wall:>12.3f}"
              f"{share:>10.1%}")  # fmt: skip
    best_knockout = max(eff["knockout lockstep"], eff["knockout pipelined"])
    print(f"efficiency_round_robin={eff['round-robin lockstep']:.3f} efficiency_knockout={best_knockout:.3f}")


RAY_RUNS = {"lockstep": ("round-robin", "knockout"), "pipelined": ("knockout",)}


def judge_options(args: argparse.Namespace) -> dict[str, Any]:
    """The judge settings both sides of the Ray comparison share."""
    return dict(family="rm-r1", max_tokens=args.max_tokens, temperature=0.0, verdict="parse", dtype="float32",
                max_model_len=CONTEXT, engine_kwargs={"enforce_eager": True})  # fmt: skip


def timed_items(args: argparse.Namespace, repeat: int) -> list:
    """The prompts of one timed run: new ones each repeat, so no run reuses another's cached prefills."""
    return make_items(args.prompts, args.n, seed=100 + repeat)


def bench_ray(args: argparse.Namespace) -> None:
    """R replicas on Ray against R separate in-process runs of 1/R of the prompts each, at the same time."""
    from tourney.config import JudgeConfig, make_judge
    from tourney.testing import build_tiny_model

    model = build_tiny_model(Path(tempfile.mkdtemp(prefix="tourney-bench-")) / "tiny")
    rows = []
    for mode, strategies in RAY_RUNS.items():
        apart = separate_runs(args, str(model), mode, strategies)
        judge = make_judge(JudgeConfig(str(model), backend="ray", replicas=args.replicas, mode=mode,
                                       **judge_options(args)))  # fmt: skip
        try:
            run_engine(judge, make_items(args.prompts, args.n, seed=1), strategies[0], mode == "pipelined")  # warm-up
            for strategy in strategies:
                walls = []
                for r in range(args.repeats):
                    run, wall = run_engine(judge, timed_items(args, r), strategy, mode == "pipelined")
                    walls.append(wall)
                slowest, judged_apart = min(apart[strategy])
                rows.append((f"{strategy} {mode}", run.stats.judgments, judged_apart, slowest, min(walls)))
        finally:
            judge.close()
    print(f"{args.prompts} prompts x N={args.n}, tiny random model, greedy, {args.max_tokens} new tokens; "
          f"{args.replicas} Ray replicas vs {args.replicas} separate in-process runs of 1/{args.replicas} each "
          f"(best of {args.repeats})")  # fmt: skip
    print(f"{'run':<22}{'judgments':>10}{'separate s':>12}{'replicas s':>12}{'efficiency':>12}")
    for name, judged, judged_apart, slowest, wall in rows:
        assert judged == judged_apart, (name, judged, judged_apart)
        print(f"{name:<22}{judged:>10}{slowest:>12.2f}{wall:>12.2f}{slowest / wall:>12.3f}")
    worst = min(slowest / wall for _, _, _, slowest, wall in rows)
    print(f"replicas={args.replicas} worst_efficiency={worst:.3f}")


def separate_runs(
    args: argparse.Namespace, model: str, mode: str, strategies: tuple[str, ...]
) -> dict[str, list[tuple[float, int]]]:
    """R child processes, one core each, running their share of every timed run at the same time (a barrier before
    each): per strategy and repeat, the slowest child's wall time and the judgments of all."""
    import json
    import subprocess
    import sys

    argv = [sys.executable, "-m", "experiments.bench_engine", "--prompts", str(args.prompts), "--n", str(args.n),
            "--max-tokens", str(args.max_tokens), "--replicas", str(args.replicas), "--repeats", str(args.repeats),
            "--model", model, "--mode", mode, "--strategy", ",".join(strategies)]  # fmt: skip
    cores = sorted(os.sched_getaffinity(0))
    env = os.environ | {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1",
                        "VLLM_LOGGING_STREAM": "ext://sys.stderr"}  # fmt: skip
    kids = [subprocess.Popen([*argv, "--part", str(k)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=env | {"VLLM_CPU_OMP_THREADS_BIND": str(cores[k % len(cores)])})
            for k in range(args.replicas)]  # fmt: skip
    out: dict[str, list[tuple[float, int]]] = {s: [] for s in strategies}
    try:
        for strategy in strategies:
            for _ in range(args.repeats):
                for kid in kids:  # each has started (and warmed up) its engine
                    assert kid.stdout is not None and kid.stdout.readline().strip() == "ready", "a separate run failed"
                for kid in kids:
                    assert kid.stdin is not None
                    kid.stdin.write("go\n")
                    kid.stdin.flush()
                done = [json.loads(kid.stdout.readline()) for kid in kids if kid.stdout is not None]
                out[strategy].append((max(d["wall"] for d in done), sum(d["judgments"] for d in done)))
    finally:
        for kid in kids:
            kid.wait(timeout=600)
    return out


def separate_run(args: argparse.Namespace) -> None:
    """A child of ``bench_ray``: its share of each timed run's prompts on its own in-process engine, each run
    started when every child is ready (it reads "go")."""
    import json
    import sys

    from tourney.config import JudgeConfig, make_judge

    k, parts = int(args.part), args.replicas
    judge = make_judge(JudgeConfig(args.model, mode=args.mode, **judge_options(args)))
    strategies = args.strategy.split(",")
    try:
        run_engine(judge, make_items(args.prompts, args.n, seed=1), strategies[0], args.mode == "pipelined")  # warm-up
        for strategy in strategies:
            for r in range(args.repeats):
                items = timed_items(args, r)
                share = len(items) // parts
                mine = items[k * share : (k + 1) * share] if k < parts - 1 else items[k * share :]
                print("ready", flush=True)
                sys.stdin.readline()
                run, wall = run_engine(judge, mine, strategy, args.mode == "pipelined")
                print(json.dumps({"wall": wall, "judgments": run.stats.judgments}), flush=True)
    finally:
        judge.close()


if __name__ == "__main__":
    script_env()
    main()
    script_exit()
