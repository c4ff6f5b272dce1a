"""Streaming: prompts read lazily, at most a window held, results in input order; any window, same results."""

import asyncio

import pytest

from tests.test_engine import CountingJudge, make_items
from tourney.engine import Engine
from tourney.errors import BackendError
from tourney.simulated import SimulatedJudge
from tourney.tournament import Tournament

STRATEGIES = ["knockout", "round-robin", "lucb", "adaptive-knockout", "swiss"]


def outcome(run):
    """What a run's output is made of: ids, scores, rankings and every judgment as recorded."""
    return [(r.item.id, r.scores, r.ranking, [(x.a, x.b, x.vote, x.p_a) for x in r.records]) for r in run.results]


def tournament(strategy):
    budget = 40 if strategy in ("lucb", "adaptive-knockout", "swiss") else None
    return Tournament(strategy, votes=3 if strategy == "knockout" else 1, budget=budget, seed=5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_any_window_and_mode_give_the_same_results(strategy):
    # Mixed sizes, so prompts finish out of input order and wait for the ones before them.
    items = [it for k in range(12) for it in make_items(1, 2 + (k * 5) % 11, seed=k)]
    for k, it in enumerate(items):
        it.id, it.line = f"q{k}", k + 1
    def run(window, pipelined):
        engine = Engine(SimulatedJudge(tau=1.0, invalid_rate=0.1), tournament(strategy), keep_records=True)
        return asyncio.run(engine.arun(iter(items), window)) if pipelined else engine.run(iter(items), window)

    whole = run(None, False)
    assert [r.item.id for r in whole.results] == [it.id for it in items]
    for window in (1, 2, 5, 100):
        for pipelined in (False, True):
            got = run(window, pipelined)
            assert outcome(got) == outcome(whole), (window, pipelined)
            assert got.stats.judgments == whole.stats.judgments


def test_lockstep_never_holds_more_than_the_window_and_reads_lazily():
    read = []

    def items():
        for it in make_items(500, 5):
            read.append(it.id)
            yield it

    engine = Engine(CountingJudge(), Tournament("knockout"))
    stream = engine.stream(items(), window=20)
    first = next(iter(stream))
    assert first.item.id == "p0" and len(read) == 20  # nothing read past the window before the first result
    rest = list(stream)
    assert len(rest) == 499 and stream.peak == 20 and stream.stats.prompts == 500


def test_pipelined_never_holds_more_than_the_window():
    async def go():
        stream = Engine(SimulatedJudge(tau=1.0), Tournament("round-robin")).stream(iter(make_items(300, 4)), 7)
        ids = [r.item.id async for r in stream]
        return ids, stream.peak

    ids, peak = asyncio.run(go())
    assert ids == [f"p{k}" for k in range(300)] and peak == 7


def test_lockstep_batches_every_ready_vote_of_the_window():
    judge = CountingJudge()
    Engine(judge, Tournament("round-robin")).run(make_items(100, 4), window=25)
    assert judge.calls == [25 * 6] * 4  # one call per window of round robins


class FailingJudge(SimulatedJudge):
    """Fails on the request for one prompt (its prompt text), as a backend would."""

    def __init__(self, bad):
        super().__init__(tau=1.0)
        self.bad = bad

    async def ajudge(self, requests):
        await asyncio.sleep(0.001 if requests[0].prompt != self.bad else 0)
        if any(r.prompt == self.bad for r in requests):
            raise BackendError("server said no")
        return self.judge(requests)


def test_pipelined_failure_ends_the_run_at_once_and_leaves_no_task():
    async def go():
        stream = Engine(FailingJudge("question 40"), Tournament("knockout")).stream(iter(make_items(60, 8)), 50)
        got = []
        with pytest.raises(BackendError, match="server said no"):
            async for res in stream:
                got.append(res.item.id)
        await asyncio.sleep(0)
        return got, [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    got, left = asyncio.run(go())
    assert len(got) < 40 and left == []  # failed before the head reached prompt 40; every task cancelled


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window"):
        Engine(SimulatedJudge(), Tournament()).stream([], 0)
