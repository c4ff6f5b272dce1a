"""Engine: batching across prompts, counts, caching, determinism — with the simulated judge."""

import asyncio
import math

import pytest

from tourney.cache import Cache
from tourney.engine import Engine
from tourney.io import Item
from tourney.simulated import SimulatedJudge
from tourney.tournament import Tournament


def make_items(p, n, seed=0):
    """P prompts with N responses each; quality = index, so the last response is best."""
    return [
        Item(id=f"p{k}", line=k + 1, prompt=f"question {k}", texts=[f"answer {k}.{i}" for i in range(n)],
             fields=[{"quality": float(i)} for i in range(n)])
        for k in range(p)
    ]  # fmt: skip


class CountingJudge(SimulatedJudge):
    """The simulator, counting the calls and batch sizes it receives."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []

    def judge(self, requests):
        self.calls.append(len(requests))
        return super().judge(requests)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13])
def test_knockout_costs_one_call_per_round_across_prompts(n):
    judge = CountingJudge()
    items = make_items(50, n)
    stats = Engine(judge, Tournament("knockout")).run(items).stats
    assert len(judge.calls) == math.ceil(math.log2(n))
    assert sum(judge.calls) == 50 * (n - 1) == stats.judgments
    assert stats.backend_calls == len(judge.calls) == stats.steps


def test_round_robin_is_one_call_and_votes_multiply():
    judge = CountingJudge()
    items = make_items(20, 6)
    Engine(judge, Tournament("round-robin", votes=3)).run(items)
    assert judge.calls == [20 * 15 * 3]
    assert Tournament("round-robin", votes=3).plan(items) == 20 * 15 * 3


def test_mixed_sizes_take_ceil_log2_of_the_largest():
    judge = CountingJudge()
    items = make_items(10, 3) + [Item(id="big", line=99, prompt="q", texts=[str(i) for i in range(17)],
                                      fields=[{"quality": float(i)} for i in range(17)])]  # fmt: skip
    Engine(judge, Tournament("knockout")).run(items)
    assert len(judge.calls) == 5


def test_one_response_needs_no_judgment():
    judge = CountingJudge()
    run = Engine(judge).run(make_items(1, 1))
    [res] = run.results
    assert res.ranking == [0] and judge.calls == [] and run.stats.judgments == 0


def test_sharp_judge_finds_the_best():
    results = Engine(SimulatedJudge(tau=0.01), Tournament("knockout")).run(make_items(30, 7)).results
    assert all(r.ranking[0] == 6 for r in results)
    results = Engine(SimulatedJudge(tau=0.01), Tournament("round-robin", rating="bt")).run(make_items(5, 6)).results
    assert all(r.ranking == [5, 4, 3, 2, 1, 0] for r in results)


def test_invalid_votes_are_counted_and_all_invalid_matches_are_ties():
    run = Engine(SimulatedJudge(invalid_rate=1.0), Tournament("round-robin")).run(make_items(3, 4))
    assert run.stats.invalid == run.stats.judgments == 18
    assert run.stats.ties == 18
    assert all(len(set(r.scores)) == 1 for r in run.results)  # every match a tie: everyone equal


def test_same_seed_same_result_and_pipelined_equals_lockstep():
    items = make_items(12, 9)
    t = Tournament("knockout", votes=3, seed=7)
    a = Engine(SimulatedJudge(tau=2.0, position_bias=0.5), t).run(items).results
    b = Engine(SimulatedJudge(tau=2.0, position_bias=0.5), t).run(items).results
    c = asyncio.run(Engine(SimulatedJudge(tau=2.0, position_bias=0.5), t).arun(items)).results
    assert [r.scores for r in a] == [r.scores for r in b] == [r.scores for r in c]
    d = Engine(SimulatedJudge(tau=2.0, position_bias=0.5), Tournament("knockout", votes=3, seed=8)).run(items).results
    assert [r.ranking for r in a] != [r.ranking for r in d]


def test_records_keep_the_order_shown(tmp_path):
    engine = Engine(SimulatedJudge(), Tournament("round-robin", votes=2), keep_records=True)
    [res] = engine.run(make_items(1, 3)).results
    shown = sorted((r.a, r.b) for r in res.records)
    assert shown == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]  # votes=2: each order once


def test_cache_rerun_makes_no_backend_call(tmp_path):
    items = make_items(8, 5)
    cache = Cache(tmp_path / "c.sqlite")
    rr = Tournament("round-robin")
    r1 = Engine(CountingJudge(), rr, cache=cache).run(items)
    judge = CountingJudge()
    r2 = Engine(judge, rr, cache=cache).run(items)
    assert judge.calls == [] and r2.stats.backend_calls == 0 and r2.stats.cached == 80
    assert [r.scores for r in r1.results] == [r.scores for r in r2.results]
    other = Engine(CountingJudge(tau=3.0), rr, cache=cache).run(items)  # other settings: other keys
    assert other.stats.cached == 0 and other.stats.backend_calls == 1


def test_duplicate_requests_in_a_batch_are_judged_once():
    judge = CountingJudge()
    items = [Item(id="d", line=1, prompt="q", texts=["same", "same", "same"], fields=[{"quality": 0.0}] * 3)]
    Engine(judge, Tournament("round-robin", votes=2)).run(items)
    assert judge.calls == [2]  # (same, same) vote 0 and vote 1


def test_a_run_raises_the_gc_thresholds_and_restores_them_and_a_callers_freeze():
    import gc

    from tourney.engine import GC_THRESHOLDS, fewer_collections

    # A vLLM engine of the session may have frozen objects already (then a run must leave them frozen); the frozen
    # count itself falls whenever a frozen object dies, so only "frozen or not" is compared.
    before, frozen_before = gc.get_threshold(), gc.get_freeze_count() > 0
    seen = []

    class Watching(SimulatedJudge):
        def judge(self, requests):
            seen.append((gc.get_threshold(), gc.get_freeze_count() > 0))
            return super().judge(requests)

    Engine(Watching(), Tournament("knockout")).run(make_items(3, 4))
    assert seen and all(s == (GC_THRESHOLDS, True) for s in seen)
    assert gc.get_threshold() == before and (gc.get_freeze_count() > 0) == frozen_before
    gc.freeze()  # a caller's own freeze outlives a run
    try:
        with fewer_collections():
            pass
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == before
    finally:
        if not frozen_before:
            gc.unfreeze()
