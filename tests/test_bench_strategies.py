"""experiments.bench_strategies: the scenarios' judges, budgets, determinism, the ceiling and the regrets."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy.special import expit

from experiments import bench_strategies as bs
from strategies.registry import budgeted


def sc(name: str) -> bs.Scenario:
    return bs.BY_NAME[name]


def all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(n, k=1)
    return i.astype(int), j.astype(int)


# --- the suite ----------------------------------------------------------------------------------------------------


def test_suite_is_named_one_line_each_with_a_and_b():
    names = [s.name for s in bs.SCENARIOS]
    assert len(names) == len(set(names)) and 8 <= len(names) <= 12
    assert {"a", "b", "noiseless"} <= set(names)
    for s in bs.SCENARIOS:
        assert "\n" not in s.line() and s.line().startswith(f"{s.name}: ")


def test_a_and_b_are_the_tuned_scenarios():
    w = bs.world(sc("a"), 16, 0, 0)
    ranks = np.argsort(np.argsort(w.s))  # role per input index, 0 = worst
    assert sorted(np.round(np.diff(np.sort(w.s)), 12)) == [round(np.log(3), 12)] * 15
    p = bs.judge_p(sc("a"), w, np.array([0]), np.array([1]))[0]
    assert p == pytest.approx(expit((ranks[0] - ranks[1]) * np.log(3) + 0.3))
    w = bs.world(sc("b"), 16, 0, 0)
    assert w.good.sum() == 4 and w.err is None
    a, b = all_pairs(16)
    p = bs.judge_p(sc("b"), w, a, b)
    same = w.good[a] == w.good[b]
    assert np.allclose(p[same], 0.5) and np.allclose(p[~same], np.where(w.good[a], 0.8, 0.2)[~same])


def test_worlds_are_common_random_numbers():
    one, two = bs.world(sc("gauss-pair"), 16, 3, 7), bs.world(sc("gauss-pair"), 16, 3, 7)
    assert np.array_equal(one.s, two.s) and np.array_equal(one.err, two.err) and one.seed == two.seed
    other = bs.world(sc("gauss-pair"), 16, 3, 8)
    assert not np.array_equal(one.s, other.s)
    shuffled = [int(np.argmax(bs.world(sc("a"), 16, 0, t).s)) for t in range(40)]
    assert len(set(shuffled)) > 5  # the best is not always the same input index


# --- the judges behave as stated ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["b", "dupes", "noiseless"])
def test_no_position_bias_is_symmetric(name):
    w = bs.world(sc(name), 16, 0, 1)
    a, b = all_pairs(16)
    assert np.allclose(bs.judge_p(sc(name), w, a, b) + bs.judge_p(sc(name), w, b, a), 1.0)


@pytest.mark.parametrize("name, bias", [("a", 0.3), ("a-bias", 0.6), ("gauss-pair", 0.6), ("few-right", 0.6)])
def test_position_bias_favours_the_first_shown(name, bias):
    w = bs.world(sc(name), 16, 0, 1)
    a, b = all_pairs(16)
    forward, backward = bs.judge_logit(sc(name), w, a, b), bs.judge_logit(sc(name), w, b, a)
    assert np.allclose(forward + backward, 2 * bias)


@pytest.mark.parametrize("name", [s.name for s in bs.SCENARIOS])
def test_invalid_share_is_the_rate(name):
    s = sc(name)
    w = bs.world(s, 16, 0, 2)
    a, b = all_pairs(16)
    got = [v for t in range(200) for v in bs.verdicts(s, w, a, b, np.full(a.size, t))]
    share = sum(v is None for v in got) / len(got)
    assert share == pytest.approx(s.invalid, abs=4 * np.sqrt(max(s.invalid, 1e-3) / len(got)))
    if s.invalid:
        assert share > 0


def test_hard_verdicts_follow_the_judge():
    s = sc("a")
    w = bs.world(s, 16, 0, 0)
    a, b = np.repeat(np.arange(4), 5000), np.repeat(np.arange(4, 8), 5000)
    v = np.array(bs.verdicts(s, w, a, b, np.tile(np.arange(5000), 4)))  # vote indices: fresh coins
    assert set(v.tolist()) <= {0.0, 1.0}
    for k in range(4):
        want = bs.judge_p(s, w, np.array([k]), np.array([k + 4]))[0]
        assert v[k * 5000 : (k + 1) * 5000].mean() == pytest.approx(want, abs=0.025)


def test_per_pair_error_is_consistent_and_breaks_transitivity():
    s = sc("gauss-pair")
    w = bs.world(s, 16, 0, 0)
    assert w.err is not None and np.allclose(w.err, -w.err.T) and w.err[np.triu_indices(16, 1)].std() > 0.5
    a, b = np.array([0, 0, 0, 3]), np.array([1, 1, 1, 5])
    p = bs.judge_p(s, w, a, b)
    assert p[0] == p[1] == p[2]  # every vote of the pair sees the same error: votes cannot cancel it
    assert np.allclose(bs.judge_logit(s, w, a, b) - (w.s[a] - w.s[b] + s.bias), w.err[a, b])
    # Over a few worlds the infinite-vote majority has a cycle somewhere (the ceiling then is below 1).
    assert bs.ceiling(s, 16, 0, 50) < 0.95


def test_soft_verdicts_are_probabilities_around_the_judge():
    s = sc("soft")
    w = bs.world(s, 16, 0, 0)
    a, b = np.full(20000, 0), np.full(20000, 1)
    v = np.array(bs.verdicts(s, w, a, b, np.arange(20000)))
    assert ((v > 0) & (v < 1)).all() and np.unique(v).size > 1000
    logit = bs.judge_logit(s, w, a[:1], b[:1])[0]
    assert np.median(np.log(v / (1 - v))) == pytest.approx(logit, abs=0.05)  # σ(logit + N(0, 1.5²))


def test_noiseless_judge_is_always_right():
    s = sc("noiseless")
    w = bs.world(s, 8, 0, 0)
    a, b = all_pairs(8)
    v = np.array(bs.verdicts(s, w, a, b, np.zeros(a.size, dtype=int)))
    assert np.array_equal(v, (w.s[a] > w.s[b]).astype(float))


def test_the_judges_coins_are_common_to_all_strategies():
    s = sc("a-invalid")
    w = bs.world(s, 16, 0, 3)
    a, b = all_pairs(16)
    first, again = (
        bs.verdicts(s, w, a, b, np.zeros(a.size, dtype=int)),
        bs.verdicts(s, w, a, b, np.zeros(a.size, dtype=int)),
    )
    assert first == again  # the same question (pair, order, vote index) gets the same answer
    assert first != bs.verdicts(s, w, a, b, np.ones(a.size, dtype=int))  # the next vote of a pair is a fresh coin
    # Two configurations that play the same algorithm score the same, trial by trial.
    same = [bs.Config("lucb", "lucb", {"budget": 30}, 30), bs.Config("lucb again", "lucb", {"budget": 30}, 30)]
    hits = [bs.trials(s, 16, c, 20, 0)[0] for c in same]
    assert np.array_equal(*hits)


def test_ceiling():
    assert bs.ceiling(sc("noiseless"), 16, 0, 20) == 1.0
    assert bs.ceiling(sc("b"), 16, 0, 20) == 1.0  # correct ones tie among themselves, all good
    assert bs.ceiling(sc("dupes"), 16, 0, 20) == 1.0


# --- configurations, budgets, determinism -------------------------------------------------------------------------


def test_configs_cover_the_registry_and_fit_their_budgets():
    for n in (8, 16, 32, 64):
        cfgs = bs.configs(n)
        labels = [c.label for c in cfgs]
        assert len(labels) == len(set(labels))
        for name in budgeted():  # a strategy registered later appears by itself
            assert {f"{name} budget={2 * (n - 1)}", f"{name} budget={4 * (n - 1)}"} <= set(labels)
        assert {"round-robin elo", "round-robin bt", "knockout k=1", "knockout k=3"} <= set(labels)
        for c in cfgs:
            assert c.options.get("budget", c.cost) == c.cost
    assert {c.name for c in bs.configs(16, {"lucb"})} == {"lucb"}


def fast_configs(n: int) -> list[bs.Config]:
    """At N=16: every configuration but the slow ones (round robin and swiss at 4(N−1))."""
    return [c for c in bs.configs(n) if n == 8 or not (c.name == "round-robin" or c.label == "swiss budget=60")]


@pytest.mark.parametrize("name", [s.name for s in bs.SCENARIOS])
def test_budgets_never_exceeded(name):
    for n, count in ((8, 4), (16, 2)):
        for cfg in fast_configs(n):
            hits, calls, rounds = bs.trials(sc(name), n, cfg, count, seed=5)
            assert calls.max() <= cfg.cost, cfg.label
            assert (rounds >= 1).all()
            if cfg.name == "knockout" and "adaptive_votes" not in cfg.options:
                assert (calls == cfg.cost).all()


def test_a_budget_overrun_is_caught():
    cfg = next(c for c in bs.configs(8) if c.label == "lucb budget=14")
    with pytest.raises(AssertionError, match="exceeded its budget"):
        bs.play(sc("a"), 8, cfg._replace(cost=10), bs.world(sc("a"), 8, 0, 0), np.random.default_rng(0))


@pytest.mark.parametrize("label", ["lucb budget=30", "adaptive-knockout budget=30", "round-robin bt", "knockout k=1"])
def test_determinism(label):
    cfg = next(c for c in bs.configs(16) if c.label == label)
    one = bs.trials(sc("gauss-pair"), 16, cfg, 12, seed=1)
    two = bs.trials(sc("gauss-pair"), 16, cfg, 12, seed=1)
    other = bs.trials(sc("gauss-pair"), 16, cfg, 12, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(one, two))
    assert not all(np.array_equal(x, y) for x, y in zip(one, other))
    cell = bs.run_cell(("soft", 16, cfg, 6, 4)), bs.run_cell(("soft", 16, cfg, 6, 4))
    assert {k: v for k, v in cell[0].items() if k != "seconds"} == {k: v for k, v in cell[1].items() if k != "seconds"}


@pytest.mark.parametrize("n", [8, 16])
def test_noiseless_judge_finds_the_best(n):
    for cfg in bs.configs(n):
        if cfg.name == "swiss" and cfg.cost < (n // 2) * (n - 1).bit_length():
            continue  # fewer Swiss rounds than log2 N cannot leave one candidate unbeaten
        if cfg.name == "round-robin" and n > 8:
            continue
        hits, _, _ = bs.trials(sc("noiseless"), n, cfg, 6, seed=0)
        assert hits.all(), cfg.label


# --- regrets and the last line ------------------------------------------------------------------------------------


def row(scenario, label, cost, acc, n=16):
    return {"scenario": scenario, "n": n, "label": label, "key": label.split(" budget=")[0], "cost": cost, "acc": acc}


def test_regrets_and_the_default_line():
    rows = [
        row("a", "round-robin bt", 120, 0.99),  # over both budgets: never the best
        row("a", "knockout k=1", 15, 0.70),
        row("a", "lucb budget=30", 30, 0.90),
        row("a", "lucb budget=60", 60, 0.97),
        row("a", "adaptive-knockout budget=30", 30, 0.88),
        row("a", "adaptive-knockout budget=60", 60, 0.98),
        row("b", "knockout k=1", 15, 0.80),
        row("b", "lucb budget=30", 30, 0.95),
        row("b", "lucb budget=60", 60, 0.96),
        row("b", "adaptive-knockout budget=30", 30, 0.96),
        row("b", "adaptive-knockout budget=60", 60, 0.99),
    ]
    bs.add_regrets(rows)
    by = {(r["scenario"], r["label"]): r for r in rows}
    assert "regret@30" not in by[("a", "round-robin bt")] and "regret@60" not in by[("a", "round-robin bt")]
    assert by[("a", "knockout k=1")]["regret@30"] == pytest.approx(0.20)
    assert by[("a", "knockout k=1")]["regret@60"] == pytest.approx(0.28)
    assert "regret@60" not in by[("a", "lucb budget=30")]  # at 60, lucb is its budget=60 configuration
    assert by[("a", "lucb budget=60")]["regret@60"] == pytest.approx(0.01)
    worst = bs.worst_regrets(rows, 16)
    assert worst["lucb"][30] == (pytest.approx(0.01), "b") and worst["lucb"][60] == (pytest.approx(0.03), "b")
    assert bs.default_line(rows, "lucb") == (
        "N=16 default: worst_regret@30=0.010 worst_regret@60=0.030 a@30=0.900 a@60=0.970 b@30=0.950 b@60=0.960"
    )
    assert "n/a" in bs.default_line(rows, "swiss")


def test_trials_at():
    assert [bs.trials_at(1000, n) for n in (8, 16, 32, 64)] == [1000, 1000, 500, 250]
    assert bs.trials_at(1000, 64, same=True) == 1000 and bs.trials_at(3, 64) == 1


def run_main(monkeypatch, capsys, out, *extra):
    argv = ["bench_strategies", "--trials", "3", "--sizes", "16", "--scenarios", "a,b,gauss-pair", "--workers", "1"]
    monkeypatch.setattr("sys.argv", [*argv, "--strategies", "knockout", "--out", str(out), *extra])
    bs.main()
    return capsys.readouterr().out


def test_main_writes_the_same_bytes_and_ends_with_the_default_line(tmp_path, monkeypatch, capsys):
    printed = run_main(monkeypatch, capsys, tmp_path / "one")
    run_main(monkeypatch, capsys, tmp_path / "two")
    for name in ("results.jsonl", "results.md"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    last = printed.rstrip("\n").splitlines()[-1]
    assert re.fullmatch(
        r"N=16 default: worst_regret@30=\d\.\d{3} worst_regret@60=\d\.\d{3} a@30=\d\.\d{3} a@60=\d\.\d{3}"
        r" b@30=\d\.\d{3} b@60=\d\.\d{3}",
        last,
    )
    assert (tmp_path / "one" / "results.md").read_text().rstrip("\n").endswith(last)
    rows = [json.loads(line) for line in (tmp_path / "one" / "results.jsonl").read_text().splitlines()]
    assert {r["key"] for r in rows} >= {"lucb", "knockout k=1"} and "swiss" not in {r["key"] for r in rows}
    assert all("seconds" not in r and r["trials"] == 3 for r in rows)
    run_main(monkeypatch, capsys, tmp_path / "three", "--seed", "9")
    assert (tmp_path / "three" / "results.jsonl").read_bytes() != (tmp_path / "one" / "results.jsonl").read_bytes()
