"""Bradley–Terry strengths from (soft) pairwise outcomes.

The model (Bradley & Terry 1952, "Rank Analysis of Incomplete Block Designs") says candidate ``i`` beats ``j`` with
probability σ(s_i − s_j), where ``s`` are log-strengths. We maximise the likelihood of soft outcomes (a tie counts
as 0.5) with a Gaussian prior of precision ``prior`` on ``s``, i.e. a MAP estimate as in choix's ``opt_pairwise``.
The unregularised MLE exists only when the comparison graph is connected and no group of candidates wins every
game against the rest (Hunter 2004, "MM algorithms for generalized Bradley–Terry models", Ann. Statist. 32(1));
the prior keeps an unbeaten candidate and a disconnected graph finite.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit


def as_matches(i: np.ndarray, j: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate three parallel arrays and return them as int, int, float."""
    i, j, p = np.asarray(i, dtype=int), np.asarray(j, dtype=int), np.asarray(p, dtype=float)
    if not i.shape == j.shape == p.shape or i.ndim != 1:
        raise ValueError("i, j and p must be 1-D arrays of the same length")
    return i, j, p


def neg_log_posterior(s: np.ndarray, i: np.ndarray, j: np.ndarray, p: np.ndarray, prior: float) -> float:
    """The objective every fit here minimises: −log-likelihood of the soft outcomes plus the Gaussian prior on ``s``."""
    d = s[i] - s[j]
    # -log σ(d) = logaddexp(0, -d) stays finite for large |d|.
    return float(np.sum(p * np.logaddexp(0.0, -d) + (1.0 - p) * np.logaddexp(0.0, d)) + 0.5 * prior * s @ s)


def gradient(s: np.ndarray, i: np.ndarray, j: np.ndarray, p: np.ndarray, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """The gradient of ``neg_log_posterior`` and σ(s_i − s_j) per match (from which the Hessian's weights come)."""
    q = expit(s[i] - s[j])
    r = q - p
    n = s.size
    return np.bincount(i, weights=r, minlength=n) - np.bincount(j, weights=r, minlength=n) + prior * s, q


NEWTON_MAX_N = 256  # Newton solves an n×n system per step: exact and fast for small n; L-BFGS beyond


def bt_fit(n: int, i: np.ndarray, j: np.ndarray, p: np.ndarray, prior: float = 0.1) -> np.ndarray:
    """Return MAP log-strengths (natural log units, mean 0) for outcomes ``p[t]`` = P(``i[t]`` beats ``j[t]``).

    With a prior and up to ``NEWTON_MAX_N`` candidates the optimum is found by Newton's method to machine precision,
    so the result does not depend on an optimizer's stopping rule (or on scipy's version); otherwise by L-BFGS.
    """
    i, j, p = as_matches(i, j, p)
    if n <= 1 or i.size == 0:
        return np.zeros(n)
    # A canonical match order makes the floating-point sums, hence the result, exactly order-independent.
    order = np.lexsort((p, j, i))
    i, j, p = i[order], j[order], p[order]
    if prior > 0 and n <= NEWTON_MAX_N:
        s = _newton(n, i, j, p, prior, np.zeros(n))
    else:
        from scipy.optimize import minimize

        def loss_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
            return neg_log_posterior(x, i, j, p, prior), gradient(x, i, j, p, prior)[0]

        opts = {"gtol": 1e-10, "ftol": 1e-15}
        s = minimize(loss_and_grad, np.zeros(n), jac=True, method="L-BFGS-B", options=opts).x
    # The likelihood only sees differences; with prior == 0 the mean is otherwise arbitrary.
    return s - s.mean()


def _newton(n: int, i: np.ndarray, j: np.ndarray, p: np.ndarray, prior: float, s: np.ndarray) -> np.ndarray:
    """Minimise ``neg_log_posterior`` from ``s`` by Newton steps with a backtracking line search (strictly convex
    when ``prior`` > 0, so it converges quadratically)."""
    current = neg_log_posterior(s, i, j, p, prior)
    for _ in range(100):
        grad, d = gradient(s, i, j, p, prior)
        if np.max(np.abs(grad), initial=0.0) < 1e-10:
            break
        step = np.linalg.solve(_hessian(n, i, j, d * (1.0 - d), prior), grad)
        t = 1.0
        while t > 1e-6:
            trial = neg_log_posterior(s - t * step, i, j, p, prior)
            if trial <= current - 1e-4 * t * float(grad @ step):
                break
            t *= 0.5
        s, current = s - t * step, trial
    return s


def _hessian(n: int, i: np.ndarray, j: np.ndarray, w: np.ndarray, prior: float) -> np.ndarray:
    """Hessian of the negative log-posterior: the weighted Laplacian of the comparison graph plus the prior."""
    h = prior * np.eye(n)
    np.add.at(h, (i, i), w)
    np.add.at(h, (j, j), w)
    np.add.at(h, (i, j), -w)
    np.add.at(h, (j, i), -w)
    return h


def bt_laplace(
    n: int, i: np.ndarray, j: np.ndarray, p: np.ndarray, prior: float, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``bt_fit`` MAP by Newton's method from ``start``, and its Laplace covariance; needs ``prior`` > 0.

    The same objective as ``bt_fit``, solved with Newton steps and a backtracking line search (the posterior is
    strictly convex when ``prior`` > 0), a few hundred times faster for small n; the covariance is the inverse
    Hessian at the optimum, the usual Laplace approximation of the posterior.
    """
    i, j, p = as_matches(i, j, p)
    if prior <= 0:
        raise ValueError(f"prior must be > 0, got {prior}")

    s = _newton(n, i, j, p, prior, np.zeros(n) if start is None else np.array(start, dtype=float))
    d = expit(s[i] - s[j])
    return s, np.linalg.inv(_hessian(n, i, j, d * (1.0 - d), prior))


def bt_bootstrap(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    p: np.ndarray,
    rounds: int = 200,
    seed: int = 0,
    level: float = 0.95,
    prior: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (lower, upper) percentile bootstrap bounds on ``bt_fit`` from resampling matches with replacement."""
    i, j, p = as_matches(i, j, p)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    rng = np.random.default_rng(seed)
    m = i.size
    fits = np.empty((rounds, n))
    for r in range(rounds):
        idx = rng.integers(0, m, size=m) if m else np.zeros(0, dtype=int)
        fits[r] = bt_fit(n, i[idx], j[idx], p[idx], prior=prior)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(fits, [tail, 1.0 - tail], axis=0)
    return lo, hi
