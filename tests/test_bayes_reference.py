"""The scenario-(b) Bayes reference (experiments.bayes_reference): its posterior is the benchmark judge's own, and it
finds the correct candidates."""

from __future__ import annotations

import itertools

import numpy as np

from experiments.bayes_reference import SCENARIO, Posterior, trial
from experiments.bench_strategies import World, judge_p


def test_the_posterior_is_bayes_rule_on_the_benchmark_judge() -> None:
    """Every hypothesis's weight after some verdicts is its likelihood under ``judge_p`` (the judge the benchmark
    simulates, with that subset correct), normalised: the reference reasons about the judge it is scored on."""
    n = 8
    verdicts = [(0, 1, True), (2, 3, False), (0, 2, True), (1, 3, True), (0, 1, True), (4, 5, False)]
    post = Posterior(n)
    for i, j, won in verdicts:
        post.update(i, j, won)
    like = []
    for subset in itertools.combinations(range(n), n // 4):
        good = np.isin(np.arange(n), subset)
        w = World(good * SCENARIO.step, good, None, 0)
        p = [float(judge_p(SCENARIO, w, np.array([i]), np.array([j]))[0]) for i, j, _ in verdicts]
        like.append(np.prod([q if won else 1 - q for q, (_, _, won) in zip(p, verdicts)]))
    assert np.allclose(post.w, np.array(like) / sum(like))
    assert np.isclose(post.marginals().sum(), n // 4)


def test_the_reference_finds_a_correct_candidate_and_knows_how_sure_it_is() -> None:
    runs = [trial(8, 0, t, 28) for t in range(40)]  # N = 8, budget 4 (N − 1)
    hits, sure = np.mean([h for h, _ in runs]), np.mean([p for _, p in runs])
    assert hits >= 0.9 and sure >= 0.9 and abs(hits - sure) < 0.1
