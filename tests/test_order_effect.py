"""Position bias: the order-effect Bradley–Terry fit and the run-wide conditional estimate recover a planted bias
within their intervals, and --summary reports it as ``position_bias``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from clirun import tourney

from strategies.order_effect import Z95, OrderCounts, bt_order_fit
from strategies.registry import make_tournament


def planted_votes(gamma: float, seed: int, n: int = 8, reps: int = 4) -> tuple[np.ndarray, ...]:
    """Every pair of ``n`` graded candidates judged ``reps`` times each way by a judge with order effect ``gamma``."""
    rng = np.random.default_rng(seed)
    s = np.linspace(-1.5, 1.5, n)
    i, j = np.triu_indices(n, 1)
    a, b = np.concatenate([i, j] * reps), np.concatenate([j, i] * reps)
    won = (rng.random(a.size) < 1.0 / (1.0 + np.exp(-(s[a] - s[b] + gamma)))).astype(float)
    return s, a, b, won


@pytest.mark.parametrize("gamma", [0.0, 0.4, -0.6])
def test_the_order_effect_fit_recovers_a_planted_bias(gamma):
    covered = 0
    for seed in range(20):
        s, a, b, won = planted_votes(gamma, seed)
        fit = bt_order_fit(s.size, a, b, won)
        covered += abs(fit.gamma - gamma) <= Z95 * fit.gamma_se
        assert np.corrcoef(fit.s, s)[0, 1] > 0.8  # the strengths are found too
    assert covered >= 17  # a 95 % interval: 19 of 20 expected


def test_a_strong_bias_is_measured_precisely():
    s, a, b, won = planted_votes(1.0, 0, reps=8)  # 448 votes
    fit = bt_order_fit(s.size, a, b, won)
    assert abs(fit.gamma - 1.0) < Z95 * fit.gamma_se and fit.gamma_se < 0.2


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_the_conditional_estimate_covers_a_planted_bias(gamma):
    covered = 0
    for seed in range(20):
        _, a, b, won = planted_votes(gamma, seed, reps=2)
        m = a.size // 4  # blocks of m pairs: shown one way, the other way, one way, the other way
        counts = OrderCounts()
        for k in range(m):
            for first, second in ((won[k], won[m + k]), (won[2 * m + k], won[3 * m + k])):
                counts.add_pair(first, second)
        est = counts.estimate()
        lo, hi = est["ci95"]
        covered += lo <= gamma <= hi
    assert covered >= 17


def test_no_pair_judged_both_ways_gives_no_estimate():
    counts = OrderCounts()
    for p in (1.0, 0.0):  # two votes shown the same way: no pair to match
        counts.add_vote(p)
    est = counts.estimate()
    assert est["logit"] is None and est["pairs"] == 0 and est["votes"] == 2 and est["first_share"] == 0.5


def test_voting_counts_the_orders_of_a_pairs_votes():
    tour = make_tournament("round-robin", 4, votes=2, seed=3)
    votes = tour.propose()
    for v in votes:  # the first shown always wins
        tour.receive(v.id, 1.0)
    counts = tour.order_counts()
    assert (counts.pairs, counts.first, counts.second, counts.votes) == (6, 6.0, 0.0, 12)
    assert counts.estimate()["logit"] == round(0.5 * math.log(6.5 / 0.5), 4)


def write_rows(path: Path, prompts: int = 120, n: int = 6) -> Path:
    """Prompts whose responses carry a 'quality' for the simulated judge."""
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        for k in range(prompts):
            quality = rng.normal(0.0, 1.0, n).round(3).tolist()
            responses = [{"text": f"r{i}", "quality": q} for i, q in enumerate(quality)]
            f.write(json.dumps({"id": k, "prompt": f"q{k}", "responses": responses}) + "\n")
    return path


@pytest.mark.parametrize("bias", [0.0, 0.5])
def test_summary_reports_the_judges_position_bias(bias, tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl")
    summary = tmp_path / "s.json"
    run = tourney("rank", rows, "-o", tmp_path / "o.jsonl", "--judge", "simulated", "--sim-position-bias", bias,
                  "--votes", "2", "--no-cache", "--summary", summary)  # fmt: skip
    assert run.returncode == 0, run.stderr
    est = json.loads(summary.read_text())["position_bias"]
    assert est["pairs"] == 120 * 15 and est["votes"] == 120 * 30
    lo, hi = est["ci95"]
    assert lo <= bias <= hi and (lo > 0) == (bias > 0)
