"""Top-1 accuracy per judge call: every strategy against round-robin ELO/BT and knockout@k, with a simulated judge.

    python -m experiments.bench_strategies [--trials 2000] [--seed 0] [--workers 2]

Drives the per-prompt tournaments exactly as the engine builds them (``strategies.registry.make_tournament``: votes,
positions, budgets), with a simulated judge whose coin flips are drawn with numpy per batch. Two scenarios:

(a) N candidates of equally spaced quality; the judge picks the better of two adjacent candidates with 75 %
    (Bradley–Terry: logit gap ln 3 per step), with a position bias of 0.3 (a logit added in favour of the candidate
    shown first); the best candidate is the target.
(b) N/4 of the N candidates are correct and interchangeable, the rest wrong; the judge prefers the correct one in a
    correct-vs-wrong pair 80 % of the time and flips a fair coin on same-class pairs; any correct pick is a hit.

Roles are shuffled over the input indices in every trial (a strategy's index tie-breaks cannot help). Columns: top-1
accuracy with its 95 % Wilson interval, mean and max judge calls (judgments, votes included), mean sequential rounds
(the lockstep steps: ``propose()`` calls that returned work). The last line gives, at N=16, the best top-1 among the
configurations whose calls never exceeded 2(N−1) = 30 and 4(N−1) = 60.
"""

from __future__ import annotations

import argparse
import math
import time
import zlib
from multiprocessing import Pool

import numpy as np

from experiments.args import non_negative, positive, sizes
from strategies.bradley_terry import bt_laplace
from strategies.registry import make_tournament
from strategies.round_robin import RoundRobin

LOG3 = math.log(3.0)


def configs(n: int) -> list[tuple[str, dict]]:
    """The configurations benchmarked at ``n`` candidates: baselines first."""
    b2, b4 = 2 * (n - 1), 4 * (n - 1)
    out: list[tuple[str, dict]] = [
        ("round-robin elo", {"name": "round-robin", "rating": "elo"}),
        ("round-robin bt", {"name": "round-robin", "rating": "bt"}),
    ]
    out += [(f"knockout k={k}", {"name": "knockout", "votes": k}) for k in (1, 3, 5, 9)]
    out += [
        (f"knockout adaptive-votes k={k}", {"name": "knockout", "votes": k, "adaptive_votes": True}) for k in (3, 5, 9)
    ]
    for b in (b2, b4):
        out += [
            (f"swiss budget={b}", {"name": "swiss", "budget": b}),
            (f"lucb budget={b}", {"name": "lucb", "budget": b}),
            (f"adaptive-knockout budget={b}", {"name": "adaptive-knockout", "budget": b}),
        ]
    return out


def judge_p(scenario: str, role: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P(the candidate shown first wins), vectorised over a batch of votes."""
    ra, rb = role[a], role[b]
    if scenario == "a":  # role = quality rank; logit ln 3 per step, +0.3 for position A
        return 1.0 / (1.0 + np.exp(-((ra - rb) * LOG3 + 0.3)))
    return np.where(ra == rb, 0.5, np.where(ra > rb, 0.8, 0.2))  # role = 1 correct, 0 wrong


def run_cell(args: tuple[str, int, str, dict, int, int]) -> dict:
    """Run ``trials`` tournaments of one configuration and return its measurements."""
    scenario, n, label, cfg, trials, seed = args
    rng = np.random.default_rng([seed, zlib.crc32(f"{scenario}|{n}|{label}".encode())])
    cfg = dict(cfg)
    name = cfg.pop("name")
    hits = np.zeros(trials, dtype=bool)
    calls = np.zeros(trials, dtype=int)
    rounds = np.zeros(trials, dtype=int)
    start = time.perf_counter()
    for t in range(trials):
        if scenario == "a":
            role = rng.permutation(n).astype(float)
        else:
            role = np.zeros(n)
            role[rng.permutation(n)[: n // 4]] = 1.0
        if name == "round-robin":
            hits[t], calls[t], rounds[t] = round_robin_trial(scenario, n, cfg["rating"], role, rng)
            continue
        tour = make_tournament(name, n, seed=int(rng.integers(2**31)), **cfg)
        while True:
            votes = tour.propose()
            if not votes:
                break
            rounds[t] += 1
            calls[t] += len(votes)
            a = np.fromiter((v.a for v in votes), dtype=int, count=len(votes))
            b = np.fromiter((v.b for v in votes), dtype=int, count=len(votes))
            wins = rng.random(len(votes)) < judge_p(scenario, role, a, b)
            for v, w in zip(votes, wins.tolist()):
                tour.receive(v.id, 1.0 if w else 0.0)
        assert tour.done(), f"{label} stalled"
        assert calls[t] <= tour.budget(), f"{label} exceeded its budget"
        top = tour.ranking()[0]
        hits[t] = role[top] == role.max()
    return {
        "scenario": scenario, "n": n, "label": label, "acc": hits.mean(), "ci": wilson(int(hits.sum()), trials),
        "calls": calls.mean(), "max_calls": int(calls.max()), "rounds": rounds.mean(),
        "seconds": time.perf_counter() - start,
    }  # fmt: skip


def round_robin_trial(scenario: str, n: int, rating: str, role: np.ndarray, rng: np.random.Generator) -> tuple:
    """One round robin, driven bare for speed: one vote per pair, shown in a random order (what ``Voting(k=1)`` does
    with a random seed). The BT ranking is ``bt_laplace``: ``bt_fit``'s objective, solved by Newton (300× faster)."""
    rr = RoundRobin(n, rating="elo", seed=int(rng.integers(2**31)))
    matches = rr.propose()
    i = np.array([m.i for m in matches], dtype=int)
    j = np.array([m.j for m in matches], dtype=int)
    flip = rng.random(i.size) < 0.5
    a, b = np.where(flip, j, i), np.where(flip, i, j)
    a_wins = rng.random(i.size) < judge_p(scenario, role, a, b)
    p_i = np.where(a_wins != flip, 1.0, 0.0)  # i won when it was shown first and A won, or second and B won
    for m, p in zip(matches, p_i.tolist()):
        rr.receive(m.id, p)
    scores = rr.scores() if rating == "elo" else bt_laplace(n, i, j, p_i, rr.bt_prior)[0]
    top = int(np.argmax(scores))  # first of the best, as rank_by_scores
    return role[top] == role.max(), i.size, 1


def wilson(k: int, m: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval for k successes in m trials."""
    p = k / m
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z * math.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / (1 + z * z / m)
    return max(0.0, centre - half), min(1.0, centre + half)


def main() -> None:
    """Run every cell and print the tables and the summary line."""
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_strategies", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=positive, default=2000, help="tournaments per cell (default: 2000)")
    parser.add_argument("--seed", type=non_negative, default=0, help="seed of every cell's generator (default: 0)")
    parser.add_argument("--workers", type=positive, default=2, help="processes (default: 2)")
    parser.add_argument("--sizes", type=sizes, default="8,16,32", help="numbers of candidates N (default: 8,16,32)")
    args = parser.parse_args()
    cells = [
        (scenario, n, label, cfg, args.trials, args.seed)
        for scenario in ("a", "b")
        for n in args.sizes
        for label, cfg in configs(n)
    ]
    # Slowest cells first, so the pool's two workers end together.
    cells.sort(key=lambda c: -c[1] * (c[2].startswith(("round-robin", "swiss")) + 1))
    start = time.perf_counter()
    with Pool(args.workers) as pool:
        rows = pool.map(run_cell, cells, chunksize=1)
    index = {(r["scenario"], r["n"], r["label"]): r for r in rows}
    for scenario in ("a", "b"):
        for n in args.sizes:
            print(f"\nscenario={scenario} N={n} trials={args.trials}")
            print(f"{'strategy':34} {'top1':>6} {'95% CI':>15} {'calls':>7} {'max':>5} {'rounds':>7}")
            for label, _ in configs(n):
                r = index[(scenario, n, label)]
                lo, hi = r["ci"]
                print(f"{label:34} {r['acc']:6.3f} [{lo:.3f}, {hi:.3f}] {r['calls']:7.1f} {r['max_calls']:5d} "
                      f"{r['rounds']:7.1f}")  # fmt: skip
    print(f"\n(wall {time.perf_counter() - start:.0f} s on {args.workers} workers)")
    if 16 not in args.sizes:
        return
    parts = ["N=16"]
    for scenario in ("a", "b"):
        parts.append(f"scenario={scenario}")
        for cap in (30, 60):
            within = [r for r in rows if r["scenario"] == scenario and r["n"] == 16 and r["max_calls"] <= cap]
            best = max(within, key=lambda r: r["acc"], default=None)
            parts.append(f"top1@{cap}={best['acc']:.3f}" if best else f"top1@{cap}=n/a")
            if best:
                print(f"best within {cap} calls, scenario {scenario}: {best['label']}")
    print(" ".join(parts))


if __name__ == "__main__":
    main()
