"""Pipelined vs lockstep scheduling against a fleet-like judge: makespans beside their lower bound.

    python -m experiments.bench_pipeline [--prompts 200] [--n 16] [--slots 32] [--median-ms 20] [--sigma 0.8]

The judge stands in for a fleet of servers: C concurrent slots (``--slots``), and every judgment takes a lognormal
time (median ``--median-ms``, log-sd ``--sigma``) drawn from its own request seed, so both modes see the same
latency for the same judgment. Lockstep sends each engine step as one batch and waits for its slowest judgment (a
barrier across prompts); pipelined lets each prompt's knockout move on as soon as its own round is judged.

The lower bound on any schedule is the larger of (total judge time / C) and the longest chain of dependent
judgments (per prompt: its rounds one after another, each as long as its slowest judgment). The last line is
``pipeline: lockstep=<x>·LB pipelined=<y>·LB`` (goal: pipelined <= 1.15, where lockstep >= 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Sequence

from experiments.args import positive, positive_float
from tourney.engine import Engine, Run
from tourney.io import Item
from tourney.simulated import SimulatedJudge
from tourney.tournament import Tournament
from tourney.types import Judgment, Request


class FleetJudge(SimulatedJudge):
    """The simulator behind C slots with lognormal latencies; records each judgment's latency by prompt and call."""

    def __init__(self, slots: int, median_s: float, sigma: float) -> None:
        """``slots`` judgments run at once; each takes exp(N(log median_s, sigma²)) seconds, seeded by the request."""
        super().__init__(tau=1.0)
        self.slots, self.median_s, self.sigma = slots, median_s, sigma
        self.busy_s = 0.0  # total judge time (the lower bound's numerator)
        self.rounds: dict[str, list[float]] = defaultdict(list)  # prompt -> slowest judgment of each of its calls
        self._sem: asyncio.Semaphore | None = None

    def service_time(self, request: Request) -> float:
        """This judgment's service time, the same in every mode."""
        return random.Random(request.seed).lognormvariate(0.0, self.sigma) * self.median_s

    async def _serve(self, requests: Sequence[Request]) -> list[Judgment]:
        """Run each request on a free slot for its service time; the batch ends with its slowest request."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        sem = self._sem

        async def one(r: Request) -> None:
            async with sem:
                await asyncio.sleep(self.service_time(r))

        await asyncio.gather(*(one(r) for r in requests))
        lat = [self.service_time(r) for r in requests]
        self.busy_s += sum(lat)
        by_prompt: dict[str, float] = {}
        for r, t in zip(requests, lat):
            by_prompt[str(r.prompt)] = max(by_prompt.get(str(r.prompt), 0.0), t)
        for prompt, t in by_prompt.items():
            self.rounds[prompt].append(t)
        return self.verdicts(requests)

    def judge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Lockstep: one batch, a barrier at its end."""
        self._sem = None  # a fresh semaphore for this call's own event loop
        return asyncio.run(self._serve(requests))

    async def ajudge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Pipelined: the batch shares the slots with every other prompt's in flight."""
        return await self._serve(requests)

    def lower_bound(self) -> float:
        """max(total judge time / slots, the longest chain of one prompt's rounds)."""
        chain = max((sum(ts) for ts in self.rounds.values()), default=0.0)
        return max(self.busy_s / self.slots, chain)


def make_items(prompts: int, n: int, seed: int = 0) -> list[Item]:
    """Prompts with ``n`` candidates of random quality (the simulator reads it)."""
    rng = random.Random(seed)
    return [Item(id=k, line=k + 1, prompt=f"q{k}", texts=[f"q{k} answer {i}" for i in range(n)],
                 fields=[{"quality": rng.random()} for _ in range(n)]) for k in range(prompts)]  # fmt: skip


def timed(judge: FleetJudge, items: list[Item], pipelined: bool) -> tuple[float, Run]:
    """Run a knockout over every prompt in one mode; return its makespan and run."""
    engine = Engine(judge, Tournament("knockout"))
    t0 = time.perf_counter()
    run = asyncio.run(engine.arun(items)) if pipelined else engine.run(items)
    return time.perf_counter() - t0, run


def main() -> None:
    """Run both modes on the same prompts and latencies; print makespans and their ratios to the lower bound."""
    ap = argparse.ArgumentParser(prog="python -m experiments.bench_pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--prompts", type=positive, default=200)
    ap.add_argument("--n", type=positive, default=16, help="candidates per prompt (knockout)")
    ap.add_argument("--slots", type=positive, default=32, help="judgments in flight at once (the fleet's size)")
    ap.add_argument("--median-ms", type=positive_float, default=20.0, help="median judgment latency")
    ap.add_argument("--sigma", type=positive_float, default=0.8, help="log-sd of the lognormal latency")
    args = ap.parse_args()
    items = make_items(args.prompts, args.n)
    rows = []
    for name, pipelined in (("lockstep", False), ("pipelined", True)):
        judge = FleetJudge(args.slots, args.median_ms / 1000.0, args.sigma)
        wall, run = timed(judge, items, pipelined)
        rows.append((name, wall, judge.lower_bound(), run.stats.judgments, run.stats.backend_calls))
    print(f"{args.prompts} prompts x N={args.n} knockout, {args.slots} slots, lognormal latency median "
          f"{args.median_ms:g} ms, sigma {args.sigma:g}")  # fmt: skip
    print(f"{'mode':<11}{'judgments':>10}{'calls':>7}{'makespan s':>12}{'lower bound s':>15}{'ratio':>8}")
    for name, wall, bound, judgments, calls in rows:
        print(f"{name:<11}{judgments:>10}{calls:>7}{wall:>12.2f}{bound:>15.2f}{wall / bound:>8.2f}")
    ratio = {name: wall / bound for name, wall, bound, _, _ in rows}
    print(f"pipeline: lockstep={ratio['lockstep']:.2f}·LB pipelined={ratio['pipelined']:.2f}·LB")


if __name__ == "__main__":
    main()
