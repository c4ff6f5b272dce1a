"""Top-1 accuracy of every strategy over a suite of simulated judges, at budgets 2(N−1) and 4(N−1), with regrets.

    python -m experiments.bench_strategies [--trials 1000] [--seed 0] [--workers 2] [--sizes 8,16,32,64]
        [--scenarios a,b,...] [--strategies lucb,knockout,...] [--default lucb] [--out DIR]

Drives the per-prompt tournaments exactly as the engine builds them (``strategies.registry.make_tournament``: votes,
positions, budgets): ``propose()`` gives votes (``.a`` shown first, ``.b`` second) and each gets ``receive(id, P(A
wins))``, or ``None`` for an invalid verdict. Round robin alone is driven bare, for speed (``round_robin_trial``).

The judge. Candidate c has a strength s_c (a logit); a vote showing a first and b second sees the logit
s_a − s_b + e_ab + β, with β the position bias (toward the first shown) and e_ab = −e_ba a per-pair error drawn once
per trial from N(0, τ²): the judge is consistently wrong about some pairs, in both orders and every vote, so votes
cannot cancel it (and its preferences need not be transitive). A hard verdict is a coin with P(A) = σ(logit); a soft
one is P(A) = σ(logit + ε), ε ~ N(0, soft²) drawn per vote (a forced verdict's probability: the judge's own, noisy);
a noiseless judge gives the better candidate 1. Each verdict is invalid (an abstention) with the scenario's rate.

Scenarios (``SCENARIOS``, one line each; (a) and (b) are those the adaptive strategies were tuned on):

    a           equally spaced qualities, ln 3 logit per step (75 % on adjacent pairs), bias 0.3
    b           N/4 correct and interchangeable, 80 % on correct-vs-wrong, a coin on same-class pairs
    gauss       Gaussian qualities (sd 1.5 logit), bias 0.3
    gauss-pair  Gaussian qualities, per-pair error τ = 1, bias 0.6, 5 % invalid (issue 20's first judge)
    dupes       1 best, N/4 − 1 near-copies (60 % best vs copy), the rest clearly worse (best 90 %, copy 86 %)
    few-right   max(2, N/8) correct, 75 % on correct-vs-wrong, bias 0.6
    a-bias      (a) with position bias 0.6
    a-invalid   (a) with 20 % invalid verdicts
    soft        Gaussian qualities, bias 0.3, soft verdicts (logit noise sd 1.5)
    noiseless   equally spaced qualities, the better candidate always wins

Common random numbers: the world of trial t (strengths, which candidates are good, per-pair errors, the strategy's
seed) depends only on (seed, scenario, N, t), so every configuration faces the same candidates; the judge's coins too
are keyed by the trial, the pair as shown and the pair's vote index (``coins``), so two configurations that ask the
same question get the same verdict. With independent coins, two runs of one algorithm differed by up to 0.03 at 1,000
trials, as much as the regrets measured. Roles are shuffled over the input indices every trial (index tie-breaks
cannot help). A hit: the top-ranked candidate is good (the strongest one; any correct one in b and few-right).

Configurations: every budgeted strategy of the registry (``budgeted()``) at budgets 2(N−1) and 4(N−1); knockout@1
and @3; knockout with adaptive votes @3, @5, @7 (capped at a budget when the cap can bind); round robin Elo and BT
(N(N−1)/2 calls). Each has a cost, the most judge calls it can spend; it runs at budget B when its cost ≤ B.

Regret: at budget B a strategy is its configuration of largest cost ≤ B (``lucb budget=60`` at 60, ``knockout k=1``
at both); best(B) is the highest top-1 among them, and each one's regret is best(B) − its top-1. The summary gives
each strategy's worst regret over the scenarios; the last line is the ``--default`` strategy's, at N=16.

Ceiling: the top-1 of the same judge with unlimited votes per match, both orders. Then a pair is decided by the sign
of s_i − s_j + e_ij (bias and verdict noise cancel: σ(d + β) + σ(d − β) > 1 exactly when d > 0, also averaged over
the soft noise), and the pick is a Copeland winner over all pairs (most pairs won, a tie worth half; ties among
winners split evenly). It is 1 without per-pair errors; it is a reference, not a bound.

Columns: top-1 with its 95 % Wilson interval, mean and max judge calls (votes included), mean sequential rounds
(``propose()`` calls that returned work), regret at 2(N−1) and 4(N−1) ("-": over that budget).

Time. A trial costs 2-5x more at N=32 and 64 (lucb's fits, Swiss's matchings, round robin's 2,016 pairs), so over
N=16 the cells get fewer trials, 16/N of ``--trials`` (1,000 → 500 at 32, 250 at 64; ``--same-trials`` keeps them
all). Measured on 1 worker of a shared 2-core machine: N=16 alone, 1,000 trials, 326 s; N = 8, 32, 64 at 64 trials
(64 / 32 / 16 per cell), 62 s; so the default run is about 22 min on 1 worker, 11 min on 2 (the full default run
took 27 min of CPU on 1 worker, 44 min of wall time beside other jobs at a load of up to 20; with ``--same-trials``
roughly 50 min on 1, estimated). One BLAS thread per process (set below): with OpenBLAS's thread pool, lucb at N=32
ran 100x slower on a busy machine.
"""

from __future__ import annotations

import os

# One BLAS thread: its thread pool makes the small per-round fits 100x slower on a busy machine (measured at N=32).
# Set before numpy is imported; a caller's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import math
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing import Pool
from typing import Any, NamedTuple

import numpy as np
from scipy.special import expit, ndtri

from experiments.args import Parser, non_negative, out_dir, positive, sizes
from strategies.base import seeded_uniforms
from strategies.bradley_terry import bt_laplace
from strategies.registry import BUDGETED_DEFAULT, STRATEGIES, budgeted, make_tournament
from strategies.round_robin import RoundRobin

LOG3 = math.log(3.0)


@dataclass(frozen=True)
class Scenario:
    """A simulated judge and its candidates (see the module doc for the judge's model)."""

    name: str
    about: str  # one line
    quality: str  # "spaced" (step per rank), "gauss" (sd step), "classes" (good: +step), "dupes"
    step: float = LOG3  # logit per rank, Gaussian sd, or the correct-vs-wrong gap
    good: str = "quarter"  # "classes": how many are correct: "quarter" (N/4) or "eighth" (max(2, N/8))
    bias: float = 0.0  # position bias: logit added for the candidate shown first
    pair_sd: float = 0.0  # sd τ of the per-pair consistent logit error
    invalid: float = 0.0  # share of invalid verdicts
    soft: float | None = None  # sd of the logit noise of soft verdicts; None: hard 0/1 verdicts
    exact: bool = False  # noiseless: the stronger candidate always wins

    def line(self) -> str:
        """The scenario in one line."""
        return f"{self.name}: {self.about}"


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("a", "equally spaced qualities, ln 3 logit per step (75 % on adjacent pairs), bias 0.3", "spaced",
             bias=0.3),
    Scenario("b", "N/4 correct and interchangeable, 80 % on correct-vs-wrong, a coin on same-class", "classes",
             step=math.log(4.0)),
    Scenario("gauss", "Gaussian qualities (sd 1.5 logit), bias 0.3", "gauss", step=1.5, bias=0.3),
    Scenario("gauss-pair", "Gaussian qualities (sd 1.5), per-pair error sd 1 logit, bias 0.6, 5 % invalid", "gauss",
             step=1.5, bias=0.6, pair_sd=1.0, invalid=0.05),
    Scenario("dupes", "1 best, N/4-1 near-copies (best 60 % vs copy), the rest worse (best 90 %, copies 86 %)",
             "dupes"),
    Scenario("few-right", "max(2, N/8) correct, 75 % on correct-vs-wrong, a coin on same-class, bias 0.6", "classes",
             good="eighth", bias=0.6),
    Scenario("a-bias", "(a) with position bias 0.6", "spaced", bias=0.6),
    Scenario("a-invalid", "(a) with 20 % invalid verdicts", "spaced", bias=0.3, invalid=0.2),
    Scenario("soft", "Gaussian qualities (sd 1.5), bias 0.3, soft verdicts P(A) = σ(logit + N(0, 1.5²))", "gauss",
             step=1.5, bias=0.3, soft=1.5),
    Scenario("noiseless", "equally spaced qualities, the stronger candidate always wins", "spaced", exact=True),
)  # fmt: skip
BY_NAME = {sc.name: sc for sc in SCENARIOS}


class World(NamedTuple):
    """One trial's candidates, over input indices."""

    s: np.ndarray  # strengths (logits)
    good: np.ndarray  # bool: ranking this one first is a hit
    err: np.ndarray | None  # per-pair error, err[i, j] = −err[j, i] (None: no error)
    seed: int  # the strategy's seed


def strengths(sc: Scenario, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Strengths and hits by role (before the shuffle over input indices)."""
    if sc.quality == "spaced":
        s = np.arange(n) * sc.step
        return s, s == s.max()
    if sc.quality == "gauss":
        s = rng.normal(0.0, sc.step, n)
        return s, s == s.max()
    if sc.quality == "classes":
        correct = n // 4 if sc.good == "quarter" else max(2, n // 8)
        good = np.arange(n) < max(1, correct)
        return good * sc.step, good
    if sc.quality == "dupes":  # the best, its copies at −ln 1.5 (60 %), the rest at −ln 9 (90 %; copies 86 %)
        copies = max(1, n // 4 - 1)
        s = np.full(n, -math.log(9.0))
        s[0], s[1 : 1 + copies] = 0.0, -math.log(1.5)
        return s, np.arange(n) == 0
    raise ValueError(f"unknown quality model {sc.quality!r}")


def world(sc: Scenario, n: int, seed: int, t: int) -> World:
    """Trial ``t``'s world: a function of (seed, scenario, N, t) alone (common random numbers)."""
    rng = np.random.default_rng([seed, zlib.crc32(sc.name.encode()), n, t])
    s, good = strengths(sc, n, rng)
    role = rng.permutation(n)  # input index k plays role role[k]
    err = None
    if sc.pair_sd > 0:
        err = np.zeros((n, n))
        err[np.triu_indices(n, k=1)] = rng.normal(0.0, sc.pair_sd, n * (n - 1) // 2)
        err -= err.T
    return World(s[role], good[role], err, int(rng.integers(2**31)))


def judge_logit(sc: Scenario, w: World, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The judge's logit for "the first shown (a) wins", vectorised over votes."""
    logit = w.s[a] - w.s[b] + sc.bias
    return logit if w.err is None else logit + w.err[a, b]


def judge_p(sc: Scenario, w: World, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(the first shown wins) of one hard vote (before invalid verdicts)."""
    logit = judge_logit(sc, w, a, b)
    if sc.exact:
        return np.where(logit > 0, 1.0, np.where(logit < 0, 0.0, 0.5))
    return expit(logit)


def coins(w: World, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Three uniforms per vote (the verdict's coin, its invalidity, its soft noise), fixed by the trial, the pair as
    shown and the pair's vote index: common random numbers for the judge too. Two strategies that ask the same
    question get the same answer, so equal algorithms score equal and the regret between two strategies is not
    buried in coin noise (independent coins put ±0.03 between two runs of one algorithm at 1,000 trials)."""
    keys = (f"{w.seed}|{x}|{y}|{k}" for x, y, k in zip(a.tolist(), b.tolist(), t.tolist()))
    return np.array([seeded_uniforms(key, 3) for key in keys]).reshape(-1, 3)


def verdicts(sc: Scenario, w: World, a: np.ndarray, b: np.ndarray, t: np.ndarray) -> list[float | None]:
    """One verdict per vote (``t``: the pair's vote index): P(A) as the engine would receive it (1/0, soft, or None
    when invalid)."""
    u = coins(w, a, b, t)
    if sc.soft is not None:
        p = expit(judge_logit(sc, w, a, b) + sc.soft * ndtri(np.clip(u[:, 2], 1e-12, 1.0 - 1e-12)))
    else:
        p = (u[:, 0] < judge_p(sc, w, a, b)).astype(float)
    out: list[float | None] = p.tolist()
    if sc.invalid > 0:
        for k in np.flatnonzero(u[:, 1] < sc.invalid).tolist():
            out[k] = None
    return out


def ceiling(sc: Scenario, n: int, seed: int, trials: int) -> float:
    """Top-1 with unlimited votes per match in both orders: Copeland over the pairs' signs (see the module doc)."""
    hits = 0.0
    for t in range(trials):
        w = world(sc, n, seed, t)
        d = w.s[:, None] - w.s[None, :] + (0.0 if w.err is None else w.err)
        copeland = (d > 0).sum(1) + 0.5 * ((d == 0).sum(1) - 1)  # the diagonal is no tie
        top = copeland == copeland.max()
        hits += w.good[top].mean()
    return hits / trials


class Config(NamedTuple):
    """One benchmarked configuration: ``make_tournament(name, n, **options)``; ``cost`` = the most calls it spends."""

    label: str
    name: str
    options: dict[str, Any]
    cost: int

    @property
    def key(self) -> str:
        """The strategy it plays, whatever its budget (the label without ``budget=``)."""
        return self.label.split(" budget=")[0]


def configs(n: int, names: Iterable[str] | None = None) -> list[Config]:
    """The configurations at ``n`` candidates (baselines first), those of registry strategies ``names`` (None: all)."""
    b2, b4 = 2 * (n - 1), 4 * (n - 1)
    out = [Config(f"round-robin {r}", "round-robin", {"rating": r}, n * (n - 1) // 2) for r in ("elo", "bt")]
    out += [Config(f"knockout k={k}", "knockout", {"votes": k}, k * (n - 1)) for k in (1, 3)]
    for k in (3, 5, 7):
        if k * (n - 1) <= b4:
            out.append(Config(f"knockout adaptive-votes k={k}", "knockout", {"votes": k, "adaptive_votes": True},
                              k * (n - 1)))  # fmt: skip
        for b in (b2, b4):  # a cap that binds and still leaves ⌊k/2⌋ + 1 votes per match
            if (k // 2 + 1) * (n - 1) <= b < k * (n - 1):
                options = {"votes": k, "adaptive_votes": True, "budget": b}
                out.append(Config(f"knockout adaptive-votes k={k} budget={b}", "knockout", options, b))
    for name in budgeted():
        least = getattr(STRATEGIES[name], "min_budget", lambda n: 0)(n)
        out += [Config(f"{name} budget={b}", name, {"budget": b}, b) for b in (b2, b4) if b >= least]
    return [c for c in out if names is None or c.name in names]


def play(sc: Scenario, n: int, cfg: Config, w: World, rng: np.random.Generator) -> tuple[int, int, int]:
    """One tournament as the engine drives it; returns (top-ranked candidate, judge calls, rounds)."""
    if cfg.name == "round-robin":
        return round_robin_trial(sc, n, cfg.options["rating"], w, rng)
    tour = make_tournament(cfg.name, n, seed=w.seed, **cfg.options)
    calls = rounds = 0
    while votes := tour.propose():
        rounds += 1
        calls += len(votes)
        a = np.fromiter((v.a for v in votes), dtype=int, count=len(votes))
        b = np.fromiter((v.b for v in votes), dtype=int, count=len(votes))
        t = np.fromiter((v.vote for v in votes), dtype=int, count=len(votes))
        for v, p in zip(votes, verdicts(sc, w, a, b, t)):
            tour.receive(v.id, p)
    assert tour.done(), f"{cfg.label} stalled"
    assert calls <= min(tour.budget(), cfg.cost), f"{cfg.label} exceeded its budget: {calls} calls"
    return tour.ranking()[0], calls, rounds


def round_robin_trial(sc: Scenario, n: int, rating: str, w: World, rng: np.random.Generator) -> tuple[int, int, int]:
    """One round robin, driven bare for speed, as ``Voting(k=1)`` would: one vote per pair in a random order, an
    invalid vote a tie (0.5), a soft one its P. The BT ranking is ``bt_laplace``: ``bt_fit``'s objective, solved by
    Newton (300× faster)."""
    rr = RoundRobin(n, rating="elo", seed=w.seed)
    matches = rr.propose()
    i = np.array([m.i for m in matches], dtype=int)
    j = np.array([m.j for m in matches], dtype=int)
    flip = rng.random(i.size) < 0.5
    a, b = np.where(flip, j, i), np.where(flip, i, j)
    p_a = np.array([0.5 if p is None else p for p in verdicts(sc, w, a, b, np.zeros(i.size, dtype=int))])
    p_i = np.where(flip, 1.0 - p_a, p_a)  # j was shown first when flipped
    for m, p in zip(matches, p_i.tolist()):
        rr.receive(m.id, p)
    scores = rr.scores() if rating == "elo" else bt_laplace(n, i, j, p_i, rr.bt_prior)[0]
    return int(np.argmax(np.round(scores, 9))), i.size, 1  # first of the best, as rank_by_scores


def trials(sc: Scenario, n: int, cfg: Config, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` trials of one configuration: per trial (hit, calls, rounds)."""
    rng = np.random.default_rng([seed, zlib.crc32(f"{sc.name}|{n}|{cfg.label}".encode())])  # round robin's orders
    out = np.zeros((3, count), dtype=int)
    for t in range(count):
        w = world(sc, n, seed, t)
        top, out[1, t], out[2, t] = play(sc, n, cfg, w, rng)
        out[0, t] = w.good[top]
    return out[0].astype(bool), out[1], out[2]


def run_cell(args: tuple[str, int, Config, int, int]) -> dict[str, Any]:
    """Run ``count`` tournaments of one configuration in one scenario and return its measurements."""
    name, n, cfg, count, seed = args
    start = time.perf_counter()
    hits, calls, rounds = trials(BY_NAME[name], n, cfg, count, seed)
    return {
        "scenario": name, "n": n, "label": cfg.label, "key": cfg.key, "cost": cfg.cost, "trials": count,
        "acc": float(hits.mean()), "ci": wilson(int(hits.sum()), count), "calls": float(calls.mean()),
        "max_calls": int(calls.max()), "rounds": float(rounds.mean()), "seconds": time.perf_counter() - start,
    }  # fmt: skip


def wilson(k: int, m: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval for k successes in m trials."""
    p = k / m
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / (1 + z * z / m)
    return max(0.0, centre - half), min(1.0, centre + half)


def at_budget(rows: list[dict[str, Any]], budget: int) -> dict[str, dict[str, Any]]:
    """The strategies at ``budget`` among one scenario's rows: per key, the row of largest cost within it."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["cost"] <= budget and (r["key"] not in out or r["cost"] > out[r["key"]]["cost"]):
            out[r["key"]] = r
    return out


def add_regrets(rows: list[dict[str, Any]]) -> None:
    """Set ``regret@B`` on the rows of each (scenario, N) for B = 2(N−1) and 4(N−1) (absent: over budget)."""
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["scenario"], r["n"]), []).append(r)
    for (_, n), group in cells.items():
        for b in (2 * (n - 1), 4 * (n - 1)):
            chosen = at_budget(group, b)
            best = max((r["acc"] for r in chosen.values()), default=0.0)
            for r in chosen.values():
                r[f"regret@{b}"] = best - r["acc"]


def worst_regrets(rows: list[dict[str, Any]], n: int) -> dict[str, dict[int, tuple[float, str]]]:
    """Per strategy key at ``n``: budget -> (worst regret over the scenarios, the scenario where it is)."""
    out: dict[str, dict[int, tuple[float, str]]] = {}
    for r in rows:
        if r["n"] != n:
            continue
        for b in (2 * (n - 1), 4 * (n - 1)):
            regret = r.get(f"regret@{b}")
            if regret is not None and regret > out.setdefault(r["key"], {}).get(b, (-1.0, ""))[0]:
                out[r["key"]][b] = (regret, r["scenario"])
    return out


def default_line(rows: list[dict[str, Any]], default: str) -> str:
    """``N=16 default: worst_regret@30=… worst_regret@60=… a@30=… a@60=… b@30=… b@60=…`` (n/a when not run)."""
    worst = worst_regrets(rows, 16).get(default, {})
    parts = ["N=16 default:"]
    parts += [f"worst_regret@{b}=" + (f"{worst[b][0]:.3f}" if b in worst else "n/a") for b in (30, 60)]
    for name in ("a", "b"):
        for b in (30, 60):
            acc = [r["acc"] for r in rows if (r["scenario"], r["n"], r["label"]) == (name, 16, f"{default} budget={b}")]
            parts.append(f"{name}@{b}=" + (f"{acc[0]:.3f}" if acc else "n/a"))
    return " ".join(parts)


def cell_table(rows: list[dict[str, Any]], sc: Scenario, n: int, ceil: float, md: bool) -> list[str]:
    """One scenario's table at ``n``: text (``md`` False) or markdown."""
    b2, b4 = 2 * (n - 1), 4 * (n - 1)
    head = f"scenario={sc.name} N={n} trials={rows[0]['trials']} ceiling={ceil:.3f}  ({sc.about})"
    lines = [f"\n### {head}\n" if md else f"\n{head}"]
    cols = ["strategy", "top1", "95% CI", "calls", "max", "rounds", f"regret@{b2}", f"regret@{b4}"]
    if md:
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    else:
        lines.append(f"{cols[0]:38} {cols[1]:>6} {cols[2]:>15} {cols[3]:>7} {cols[4]:>5} {cols[5]:>7} "
                     f"{cols[6]:>10} {cols[7]:>10}")  # fmt: skip
    for r in rows:
        lo, hi = r["ci"]
        regrets = [f"{r[f'regret@{b}']:.3f}" if f"regret@{b}" in r else "-" for b in (b2, b4)]
        fields = [r["label"], f"{r['acc']:.3f}", f"[{lo:.3f}, {hi:.3f}]", f"{r['calls']:.1f}", str(r["max_calls"]),
                  f"{r['rounds']:.1f}", *regrets]  # fmt: skip
        if md:
            lines.append("| " + " | ".join(fields) + " |")
        else:
            lines.append(f"{fields[0]:38} {fields[1]:>6} {fields[2]:>15} {fields[3]:>7} {fields[4]:>5} {fields[5]:>7} "
                         f"{fields[6]:>10} {fields[7]:>10}")  # fmt: skip
    return lines


def summary_table(rows: list[dict[str, Any]], n: int, md: bool) -> list[str]:
    """Each strategy's worst regret over the scenarios at ``n``, at both budgets (and where it is)."""
    b2, b4 = 2 * (n - 1), 4 * (n - 1)
    worst = worst_regrets(rows, n)
    head = f"worst regret over {len({r['scenario'] for r in rows})} scenarios, N={n}"
    lines = [f"\n### {head}\n" if md else f"\n{head}"]
    if md:
        lines += [f"| strategy | worst@{b2} | where | worst@{b4} | where |", "|---|---|---|---|---|"]
    else:
        lines.append(f"{'strategy':34} {f'worst@{b2}':>10} {'where':>11} {f'worst@{b4}':>10} {'where':>11}")
    for key, by_budget in worst.items():
        cells = []
        for b in (b2, b4):
            regret, where = by_budget.get(b, (math.nan, "-"))
            cells += ["-" if math.isnan(regret) else f"{regret:.3f}", where]
        if md:
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
        else:
            lines.append(f"{key:34} {cells[0]:>10} {cells[1]:>11} {cells[2]:>10} {cells[3]:>11}")
    return lines


def trials_at(trials: int, n: int, same: bool = False) -> int:
    """Trials per cell at ``n``: ``trials`` up to N=16, then fewer in proportion (500 at 32, 250 at 64 for 1000), so
    the large sizes, whose trials cost 2-5x more, do not dominate the run; ``same`` keeps ``trials`` everywhere."""
    return trials if same or n <= 16 else max(1, trials * 16 // n)


def names_list(text: str) -> list[str]:
    """Comma-separated names, at least one, each once."""
    out = [part.strip() for part in text.split(",") if part.strip()]
    if not out or len(set(out)) < len(out):
        raise argparse.ArgumentTypeError(f"expected comma-separated names, each once, got {text!r}")
    return out


def main() -> None:
    """Run every cell and print the tables, the worst regrets and the default's line."""
    parser = Parser(prog="python -m experiments.bench_strategies", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=positive, default=1000, help="tournaments per cell (default: 1000)")
    parser.add_argument("--seed", type=non_negative, default=0, help="seed of the worlds and coins (default: 0)")
    parser.add_argument("--workers", type=positive, default=2, help="processes (default: 2)")
    parser.add_argument("--sizes", type=sizes, default="8,16,32,64", help="numbers of candidates (default: 8,16,32,64)")
    parser.add_argument("--scenarios", type=names_list, default=None, help="comma-separated scenarios (default: all)")
    parser.add_argument(
        "--strategies",
        type=names_list,
        default=None,
        help="comma-separated registry names to run (default: all; the default strategy always runs)",
    )
    parser.add_argument("--same-trials", action="store_true", help="--trials at every N (default: fewer over N=16)")
    parser.add_argument(
        "--default",
        default=BUDGETED_DEFAULT,
        help=f"the strategy of the last line (default: {BUDGETED_DEFAULT}, the CLI's with --budget)",
    )
    parser.add_argument("--out", type=out_dir, default=None, help="also write results.jsonl and results.md in DIR")
    args = parser.parse_args()
    if args.default not in budgeted():
        parser.error(f"--default must be a budgeted strategy: {', '.join(budgeted())}")
    unknown = set(args.scenarios or ()) - set(BY_NAME)
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; choose from {', '.join(BY_NAME)}")
    unknown = set(args.strategies or ()) - set(STRATEGIES)
    if unknown:
        parser.error(f"unknown strategy(ies) {', '.join(sorted(unknown))}; choose from {', '.join(STRATEGIES)}")
    scenarios = [sc for sc in SCENARIOS if args.scenarios is None or sc.name in args.scenarios]
    names = None if args.strategies is None else {*args.strategies, args.default}
    grid = [(sc, n, cfg) for sc in scenarios for n in args.sizes for cfg in configs(n, names)]
    cells = [(sc.name, n, cfg, trials_at(args.trials, n, args.same_trials), args.seed) for sc, n, cfg in grid]
    # Slowest cells first (roughly: calls × N), so the pool's workers end together.
    cells.sort(key=lambda c: -c[2].cost * c[1] * (4 if c[2].name in ("swiss", "lucb") else 1))
    start = time.perf_counter()
    if args.workers == 1:
        rows = [run_cell(c) for c in cells]
    else:
        with Pool(args.workers) as pool:
            rows = pool.map(run_cell, cells, chunksize=1)
    wall = time.perf_counter() - start
    order = {(sc.name, n, cfg.label): k for k, (sc, n, cfg) in enumerate(grid)}
    rows.sort(key=lambda r: order[(r["scenario"], r["n"], r["label"])])
    add_regrets(rows)
    text: list[str] = []
    md = [f"# bench_strategies: seed={args.seed} trials={args.trials} default={args.default}\n", "Scenarios:\n"]
    md += [f"- {sc.line()}" for sc in scenarios]
    for sc in scenarios:
        for n in args.sizes:
            group = [r for r in rows if (r["scenario"], r["n"]) == (sc.name, n)]
            ceil = ceiling(sc, n, args.seed, trials_at(args.trials, n, args.same_trials))
            for r in group:
                r["ceiling"] = ceil
            text += cell_table(group, sc, n, ceil, md=False)
            md += cell_table(group, sc, n, ceil, md=True)
    for n in args.sizes:
        text += summary_table(rows, n, md=False)
        md += summary_table(rows, n, md=True)
    last = default_line(rows, args.default)
    print("\n".join(text))
    print(f"\n(wall {wall:.0f} s, {sum(r['seconds'] for r in rows):.0f} s of cells, on {args.workers} workers)")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "results.jsonl", "w") as f:
            for r in rows:  # no timings: the same seed writes the same bytes
                f.write(json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) + "\n")
        (args.out / "results.md").write_text("\n".join([*md, "", last, ""]))
    print(last)


if __name__ == "__main__":
    main()
