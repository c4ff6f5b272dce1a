"""Position bias: Bradley–Terry with an order effect, and its conditional estimate from pairs judged both ways.

A judge that prefers the answer it reads first follows the order-effect model of Davidson & Beaver 1977 ("On
extending the Bradley–Terry model to incorporate within-pair order effects", Biometrics 33(4)): the candidate shown
first (a) beats the one shown second (b) with probability σ(s_a − s_b + γ). γ is the bias in logits (0: none; 0.4:
a 60/40 coin between equals goes to the first shown).

``bt_order_fit`` fits s and γ together (MAP, Gaussian priors, Newton's method) from one tournament's votes.

``OrderCounts`` estimates γ across a whole run without the strengths: for two votes of the same pair in opposite
orders, P(first shown won both) / P(second shown won both) = σ(d + γ)σ(γ − d) / (σ(−d − γ)σ(d − γ)) = e^(2γ) whatever
the gap d, so, conditioned on the pairs where one position won both votes, the count of "first won both" is binomial
with log-odds 2γ (the conditional likelihood of a matched-pairs design, as McNemar's test). Two counters per run,
summed over prompts, give γ̂ = ½·log(n_first / n_second) and its Wald interval; soft votes count fractionally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

Z95 = 1.959964


class OrderFit(NamedTuple):
    """Strengths (mean 0), the order effect γ (logits in favour of the first shown), γ's standard error and the
    strengths' Laplace covariance."""

    s: np.ndarray
    gamma: float
    gamma_se: float
    cov: np.ndarray


def bt_order_fit(
    n: int, a: np.ndarray, b: np.ndarray, p_a: np.ndarray, prior: float = 0.3, gamma_prior: float = 1.0
) -> OrderFit:
    """MAP strengths and order effect from votes: ``p_a[t]`` = P(``a[t]``, shown first, beat ``b[t]``).

    Priors: N(0, 1/``prior``) on each strength, N(0, 1/``gamma_prior``) on γ (the default sd 1 lets a few dozen
    votes move γ; with no pair seen both ways γ is known only through the strengths and stays near 0). Newton's
    method on the n + 1 parameters (strictly convex), to 1e-10; γ's standard error is the Laplace one.
    """
    import numpy as np  # here, not at the top: the engine imports ``OrderCounts`` on every run, --help included
    from scipy.special import expit

    a, b, y = np.asarray(a, dtype=int), np.asarray(b, dtype=int), np.asarray(p_a, dtype=float)
    if not a.shape == b.shape == y.shape or a.ndim != 1:
        raise ValueError("a, b and p_a must be 1-D arrays of the same length")
    if prior <= 0 or gamma_prior <= 0:
        raise ValueError("priors must be > 0")
    rows = np.arange(a.size)
    x = np.zeros((a.size, n + 1))
    np.add.at(x, (rows, a), 1.0)
    np.add.at(x, (rows, b), -1.0)
    x[:, n] = 1.0
    precision = np.full(n + 1, float(prior))
    precision[n] = gamma_prior
    theta = np.zeros(n + 1)
    hess = np.diag(precision)
    for _ in range(100):
        p = expit(x @ theta)
        grad = x.T @ (p - y) + precision * theta
        hess = (x.T * (p * (1.0 - p))) @ x + np.diag(precision)
        step = np.linalg.solve(hess, grad)
        scale = min(1.0, 1.0 / max(1e-12, float(np.abs(step).max())))  # damped: no logit moves by more than ~2
        theta -= scale * step
        if np.abs(step).max() < 1e-10:
            break
    cov = np.linalg.inv(hess)
    s = theta[:n]
    return OrderFit(s - s.mean(), float(theta[n]), float(math.sqrt(max(cov[n, n], 0.0))), cov[:n, :n])


@dataclass
class OrderCounts:
    """Run-wide evidence on position bias from pairs judged in both orders (see the module doc).

    ``first``/``second``: (soft) counts of vote pairs in which the candidate shown first / second won both;
    ``pairs``: vote pairs in opposite orders seen; ``votes`` and ``first_wins``: every valid vote and the (soft)
    count won by the first shown (a raw share, for the record).
    """

    first: float = 0.0
    second: float = 0.0
    pairs: int = 0
    votes: int = 0
    first_wins: float = 0.0

    def add(self, other: OrderCounts) -> None:
        """Add another tournament's counts (in place)."""
        self.first += other.first
        self.second += other.second
        self.pairs += other.pairs
        self.votes += other.votes
        self.first_wins += other.first_wins

    def add_pair(self, p: float, q: float) -> None:
        """Add two votes of one pair in opposite orders: P(first shown won) of each (``votes`` not included)."""
        self.first += p * q
        self.second += (1.0 - p) * (1.0 - q)
        self.pairs += 1

    def add_vote(self, p: float) -> None:
        """Add one valid vote: P(the first shown won)."""
        self.votes += 1
        self.first_wins += p

    def estimate(self) -> dict[str, float | int | list[float] | None]:
        """γ̂ (logits) with its 95 % Wald interval, or None when no pair was judged both ways with a clear result;
        with 0.5 added to both counts when one is 0 (Haldane), so one-sided evidence gives a finite bound."""
        out: dict[str, float | int | list[float] | None] = {
            "logit": None, "ci95": None, "pairs": self.pairs, "votes": self.votes,
            "first_share": round(self.first_wins / self.votes, 4) if self.votes else None,
        }  # fmt: skip
        if self.first + self.second < 1.0:
            return out
        f, g = (self.first, self.second) if min(self.first, self.second) > 0 else (self.first + 0.5, self.second + 0.5)
        gamma = 0.5 * math.log(f / g)
        se = 0.5 * math.sqrt(1.0 / f + 1.0 / g)
        out["logit"] = round(gamma, 4)
        out["ci95"] = [round(gamma - Z95 * se, 4), round(gamma + Z95 * se, 4)]
        return out
