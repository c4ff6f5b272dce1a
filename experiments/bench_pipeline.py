"""Pipelined vs lockstep scheduling against a fleet-like judge: makespans beside their lower bound.

    python -m experiments.bench_pipeline [--prompts 1000] [--n 16] [--slots 64] [--median-ms 20] [--sigma 0.8]
                                         [--window W] [--queue both] [--sweep] [--repeats 1]

The judge stands in for a fleet of servers: C concurrent slots (``--slots``), each judgment taking a lognormal time
(median ``--median-ms``, log-sd ``--sigma``) drawn from its own request seed, so every mode sees the same latency for
the same judgment. The fleet's own work never runs on the coordinator's event loop, as real servers' does not; who
holds the slots (``--queue``):

- ``server``: the fleet queues what it is sent, first come first served; a slot takes the next request the moment it
  frees (servers sent more than they batch at once);
- ``client``: the coordinator holds the slots (``--concurrency`` no larger than what the servers take in), on its
  backend's own event loop thread through ``tourney.aio.LoopThread`` as tourney's backends do, so a freed slot is
  refilled only when that thread gets to it (the coordinator's work holds the GIL meanwhile);
- ``shared``: as ``client``, with the engine itself run on the backend's loop (no thread hop, but the engine's bursts
  of work delay the slots' refills). ``both`` = server and client; ``all`` adds shared.

Lockstep sends each engine step as one batch and waits for its slowest judgment (a barrier across prompts);
pipelined lets each prompt's knockout move on as soon as its own round is judged. The lower bound on any schedule
is the larger of (total judge time / C) and the longest chain of dependent judgments (per prompt: its rounds one
after another, each as long as its slowest judgment). ``cpu s`` is the coordinator process's CPU time (all threads);
``lag ms`` is how late, on average, the engine picked up an answer after its last judgment ended.

Real reasoning judges take ~1-3 s a judgment. The settings scale that down 10-100x so a run takes seconds, which
asks the coordinator for 10-100x a real fleet's judgments/s (64 slots at a 100 ms median: ~470/s; at 20 ms: ~2,300/s):
its own CPU weighs that much more here than against real servers. ``--sweep`` runs several settings; how many
prompts share a slot decides how much lockstep's barriers cost. The last line is
``pipeline: lockstep=<x>·LB pipelined=<y>·LB`` for the setting (and queue) where pipelined did worst (goal:
pipelined <= 1.15 where lockstep >= 1.5). Other work on the machine lengthens makespans: the load is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import os
import random
import statistics
import sys
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.args import Parser, at_least_two, given, positive, positive_float
from tourney.aio import LoopThread
from tourney.engine import Engine
from tourney.io import Item
from tourney.simulated import SimulatedJudge
from tourney.tournament import Tournament
from tourney.types import Judgment, Request


class FleetJudge(SimulatedJudge):
    """The simulator behind C slots with lognormal latencies; records what the lower bound needs.

    ``queue="server"``: the fleet queues what it is sent and serves it first come, first served, a slot taking the
    next request the moment it frees (servers sent more than they batch at once). ``queue="client"``: the coordinator
    holds the slots (``--concurrency`` no larger than what the servers take in), on its backend's own event loop
    thread as tourney's server pool does, so a freed slot is refilled only when that loop gets to it: a late loop,
    or the coordinator's work holding the GIL, delays the judge.
    """

    def __init__(self, slots: int, median_s: float, sigma: float, queue: str = "server") -> None:
        """``slots`` judgments run at once; each takes exp(N(log median_s, sigma²)) seconds, seeded by the request."""
        super().__init__(tau=1.0)
        self.slots, self.median_s, self.sigma, self.queue = slots, median_s, sigma, queue
        self.busy_s = 0.0  # total judge time (the lower bound's numerator)
        self.rounds: dict[str, list[float]] = defaultdict(list)  # prompt -> slowest judgment of each of its calls
        self.lags: list[float] = []  # per call: how late the coordinator picked up its answer, seconds
        self._free = [0.0] * slots  # server queue: a heap of when each slot is next free (asyncio's clock)
        self._idle = slots  # client queue: slots free now, the requests waiting for one, the backend's loop
        self._waiting: deque[tuple[float, _Pending]] = deque()
        self._backend: LoopThread | None = None

    def service_time(self, request: Request) -> float:
        """This judgment's service time, the same in every mode."""
        return random.Random(request.seed).lognormvariate(0.0, self.sigma) * self.median_s

    def _account(self, requests: Sequence[Request]) -> list[float]:
        """Each request's service time, added to the total and to its prompt's chain."""
        took = [self.service_time(r) for r in requests]
        self.busy_s += sum(took)
        by_prompt: dict[str, float] = {}
        for r, t in zip(requests, took):
            key = str(r.prompt)
            by_prompt[key] = max(by_prompt.get(key, 0.0), t)
        for key, t in by_prompt.items():
            self.rounds[key].append(t)
        return took

    def _send(self, took: list[float], now: float) -> float:
        """Server queue: each request starts on the first slot to free up (not before ``now``); the last end."""
        free, last = self._free, now
        for t in took:
            end = max(now, free[0]) + t
            heapq.heapreplace(free, end)
            last = max(last, end)
        return last

    def judge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Lockstep: one batch, a barrier at its end (nothing else runs meanwhile, so both queues are the same)."""
        end = self._send(self._account(requests), time.monotonic())
        time.sleep(max(0.0, end - time.monotonic()))
        self.lags.append(time.monotonic() - end)
        return self.verdicts(requests)

    async def ajudge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Pipelined: the batch queues behind every other prompt's requests in flight."""
        loop = asyncio.get_running_loop()
        took = self._account(requests)
        if self.queue == "server":
            end = self._send(took, loop.time())
            await asyncio.sleep(max(0.0, end - loop.time()))
            self.lags.append(loop.time() - end)
        else:
            end = await self.backend().wrap(self._queued(took))
            self.lags.append(time.monotonic() - end)  # asyncio's clock on every loop
        return self.verdicts(requests)

    def backend(self) -> LoopThread:
        """The backend's own event loop thread (client queue), started on first use."""
        self._backend = self._backend or LoopThread("fleet")
        return self._backend

    async def _queued(self, took: list[float]) -> float:
        """Client queue, on the backend's loop: wait for a slot per request, then its service time; the last end."""
        loop = asyncio.get_running_loop()
        pending = _Pending(len(took), loop.create_future())
        self._waiting.extend((t, pending) for t in took)
        self._pump(loop)
        await pending.done
        return pending.end

    def _pump(self, loop: asyncio.AbstractEventLoop) -> None:
        """Client queue: start waiting requests on the free slots, now."""
        while self._idle and self._waiting:
            self._idle -= 1
            took, pending = self._waiting.popleft()
            end = loop.time() + took
            pending.end = max(pending.end, end)
            loop.call_at(end, self._finish, loop, pending)

    def _finish(self, loop: asyncio.AbstractEventLoop, pending: _Pending) -> None:
        """Client queue: one request is answered; its slot takes the next waiting one."""
        self._idle += 1
        pending.left -= 1
        if not pending.left:
            pending.done.set_result(None)
        self._pump(loop)

    def close(self) -> None:
        """Stop the backend's loop thread, if one was started."""
        if self._backend is not None:
            self._backend.close()

    def lower_bound(self) -> float:
        """max(total judge time / slots, the longest chain of one prompt's rounds)."""
        chain = max((sum(ts) for ts in self.rounds.values()), default=0.0)
        return max(self.busy_s / self.slots, chain)


class _Pending:
    """A batch in the client queue: requests not yet answered, the future its call waits on, its last due end."""

    __slots__ = ("left", "done", "end")

    def __init__(self, left: int, done: asyncio.Future[None]) -> None:
        """``left`` requests to go."""
        self.left, self.done, self.end = left, done, 0.0


def make_items(prompts: int, n: int, seed: int = 0) -> list[Item]:
    """Prompts with ``n`` candidates of random quality (the simulator reads it)."""
    rng = random.Random(seed)
    return [Item(id=k, line=k + 1, prompt=f"q{k}", texts=[f"q{k} answer {i}" for i in range(n)],
                 fields=[{"quality": rng.random()} for _ in range(n)]) for k in range(prompts)]  # fmt: skip


@dataclass(frozen=True)
class Setting:
    """One benchmark setting: prompts, candidates, slots, latency (median, log-sd) and the engine's window."""

    prompts: int
    n: int
    slots: int
    median_ms: float
    sigma: float
    window: int | None = None

    def describe(self) -> str:
        """The setting in one short line."""
        window = f", window {self.window}" if self.window else ""
        return (f"{self.prompts} prompts x N={self.n} knockout, {self.slots} slots, lognormal median "
                f"{self.median_ms:g} ms sigma {self.sigma:g}{window}")  # fmt: skip


@dataclass(frozen=True)
class Timing:
    """One mode's run: makespan, lower bound, judge calls, coordinator CPU and the answers' pickup lag."""

    mode: str
    makespan: float
    bound: float
    judgments: int
    calls: int
    cpu_s: float
    lag_ms: float

    @property
    def ratio(self) -> float:
        """Makespan over the lower bound."""
        return self.makespan / self.bound


def timed(setting: Setting, items: list[Item], queue: str | None) -> Timing:
    """Run a knockout over every prompt on a fresh fleet, pipelined against ``queue`` or (None) in lockstep;
    ``queue="shared"``: the client queue, with the engine run on the backend's own loop (no thread hop)."""
    judge = FleetJudge(
        setting.slots, setting.median_ms / 1000.0, setting.sigma, "server" if queue in (None, "server") else "client"
    )
    engine = Engine(judge, Tournament("knockout"))
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        if queue == "shared":
            run = judge.backend().run(engine.arun(items, setting.window))
        else:
            run = asyncio.run(engine.arun(items, setting.window)) if queue else engine.run(items, setting.window)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        judge.close()
    lag = 1000 * statistics.fmean(judge.lags) if judge.lags else 0.0
    return Timing(f"pipelined/{queue}" if queue else "lockstep", wall, judge.lower_bound(), run.stats.judgments,
                  run.stats.backend_calls, cpu, lag)  # fmt: skip


def measure(setting: Setting, queues: Sequence[str], repeats: int) -> list[Timing]:
    """Lockstep, then pipelined against each queue, on the same prompts and latencies; each mode's fastest of
    ``repeats`` runs (the modes interleaved, so other work on the machine hits them alike)."""
    items = make_items(setting.prompts, setting.n)
    modes: list[str | None] = [None, *queues]
    runs = [[timed(setting, items, mode) for mode in modes] for _ in range(repeats)]
    return [min((r[k] for r in runs), key=lambda t: t.makespan) for k in range(len(modes))]


SWEEP = (  # several fleets and latency spreads, not only the best: prompts per slot decides who wins
    Setting(256, 16, 64, 100, 0.8),  # 4 prompts a slot, ~470 judgments/s (a real fleet's rate, 20x faster)
    Setting(512, 16, 128, 100, 1.0),  # the same with heavier tails
    Setting(128, 16, 64, 100, 0.8),  # 2 prompts a slot: the chains bound the run
    Setting(1000, 16, 64, 20, 0.8),  # 16 prompts a slot, ~2,300 judgments/s
    Setting(2048, 16, 512, 50, 0.8),  # a large fleet, ~7,400 judgments/s: the coordinator's CPU is the limit
)
QUEUES = {"both": ("server", "client"), "all": ("server", "client", "shared")}


def main() -> None:
    """Run both modes per setting; print makespans, their ratios to the lower bound, and the coordinator's share."""
    ap = Parser(prog="python -m experiments.bench_pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--prompts", type=positive, default=1000, help="prompts in the run (default: 1000)")
    ap.add_argument("--n", type=at_least_two, default=16, help="candidates per prompt (knockout), >= 2")
    ap.add_argument("--slots", type=positive, default=64, help="judgments in flight at once (the fleet's size)")
    ap.add_argument("--median-ms", type=positive_float, default=20.0, help="median judgment latency")
    ap.add_argument("--sigma", type=positive_float, default=0.8, help="log-sd of the lognormal latency")
    ap.add_argument("--window", type=positive, default=None, help="prompts held at once (default: all)")
    ap.add_argument("--queue", choices=["server", "client", "shared", *QUEUES], default="both",
                    help="who holds the slots when pipelined (see above)")  # fmt: skip
    ap.add_argument("--sweep", action="store_true", help="run the built-in settings instead of one")
    ap.add_argument("--repeats", type=positive, default=1, help="runs per mode; the fastest is kept")
    args = ap.parse_args()
    if args.sweep and (pointless := given(sys.argv[1:], "--prompts", "--n", "--slots", "--median-ms", "--sigma")):
        ap.error(f"{pointless[0]} has no effect with --sweep (it runs the built-in settings)")
    queues = QUEUES.get(args.queue, (args.queue,))
    if args.sweep:
        settings = [Setting(s.prompts, s.n, s.slots, s.median_ms, s.sigma, args.window) for s in SWEEP]
    else:
        settings = [Setting(args.prompts, args.n, args.slots, args.median_ms, args.sigma, args.window)]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other work skews makespans)")
    results = []
    for setting in settings:
        timings = measure(setting, queues, args.repeats)
        results.append(timings)
        print(setting.describe())
        print(f"{'mode':<18}{'judgments':>10}{'calls':>7}{'makespan s':>12}{'bound s':>9}{'ratio':>7}{'cpu s':>7}"
              f"{'lag ms':>8}")  # fmt: skip
        for t in timings:
            print(f"{t.mode:<18}{t.judgments:>10}{t.calls:>7}{t.makespan:>12.2f}{t.bound:>9.2f}{t.ratio:>7.2f}"
                  f"{t.cpu_s:>7.2f}{t.lag_ms:>8.2f}")  # fmt: skip
    if len(results) > 1:
        print("side by side (makespan / lower bound):")
        print(f"  {'lockstep':>8}" + "".join(f"{'pipelined/' + q:>18}" for q in queues) + "   setting")
        for setting, timings in zip(settings, results):
            print(f"  {timings[0].ratio:8.2f}" + "".join(f"{t.ratio:18.2f}" for t in timings[1:])
                  + f"   {setting.describe()}")  # fmt: skip
    goal = [ts for ts in results if ts[0].ratio >= 1.5]
    met = sum(max(t.ratio for t in ts[1:]) <= 1.15 for ts in goal)
    if goal:
        print(f"goal (pipelined <= 1.15·LB, every queue) met in {met} of {len(goal)} settings where lockstep >= 1.5·LB")
    else:  # the goal is about settings where lockstep waits on its slowest judgment
        print("goal (pipelined <= 1.15·LB where lockstep >= 1.5·LB): no setting here has lockstep >= 1.5·LB")
    worst = max(results, key=lambda ts: max(t.ratio for t in ts[1:]))
    pipe = max(worst[1:], key=lambda t: t.ratio)
    print(f"pipeline: lockstep={worst[0].ratio:.2f}·LB pipelined={pipe.ratio:.2f}·LB")


if __name__ == "__main__":
    main()
