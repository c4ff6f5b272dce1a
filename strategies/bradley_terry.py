"""Bradley–Terry strengths from (soft) pairwise outcomes.

The model (Bradley & Terry 1952, "Rank Analysis of Incomplete Block Designs") says candidate ``i`` beats ``j`` with
probability σ(s_i − s_j), where ``s`` are log-strengths. We maximise the likelihood of soft outcomes (a tie counts
as 0.5) with a Gaussian prior of precision ``prior`` on ``s``, i.e. a MAP estimate as in choix's ``opt_pairwise``.
The unregularised MLE exists only when the comparison graph is connected and no group of candidates wins every
game against the rest (Hunter 2004, "MM algorithms for generalized Bradley–Terry models", Ann. Statist. 32(1));
the prior keeps an unbeaten candidate and a disconnected graph finite.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.linalg.lapack import dposv, dpotrs
from scipy.special import expit


def as_matches(i: np.ndarray, j: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate three parallel arrays and return them as int, int, float."""
    i, j, p = np.asarray(i, dtype=int), np.asarray(j, dtype=int), np.asarray(p, dtype=float)
    if not i.shape == j.shape == p.shape or i.ndim != 1:
        raise ValueError("i, j and p must be 1-D arrays of the same length")
    return i, j, p


def pair_wins(n: int, i: np.ndarray, j: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The n×n matrix of (soft) wins: ``W[a, b]`` sums P(a beats b) over the matches of a and b, in match order.

    The likelihood depends on the matches only through it, so every fit works on this small dense matrix instead of
    per-match arrays (a rematch adds to a cell; n² cells, however many matches).
    """
    wins = np.bincount(i * n + j, weights=p, minlength=n * n) + np.bincount(j * n + i, weights=1.0 - p, minlength=n * n)
    return wins.reshape(n, n)


def neg_log_posterior(s: np.ndarray, wins: np.ndarray, prior: float) -> float:
    """The objective every fit here minimises: −log-likelihood of the soft wins plus the Gaussian prior on ``s``.

    ``wins`` from ``pair_wins``: each win of a over b costs −log σ(s_a − s_b) = logaddexp(0, s_b − s_a), which stays
    finite for large gaps.
    """
    return float(np.add.reduce(wins * np.logaddexp(0.0, s - s[:, None]), None) + 0.5 * prior * (s @ s))


def gradient_hessian(s: np.ndarray, wins: np.ndarray, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """The gradient and Hessian of ``neg_log_posterior`` at ``s``.

    With ``lose[a, b]`` = σ(s_b − s_a), the chance a loses to b: the gradient is Σ_b wins[b, a]·lose[b, a] −
    wins[a, b]·lose[a, b] (plus prior·s), and the Hessian the comparison graph's Laplacian weighted by
    (wins + winsᵀ)·σ'(s_a − s_b), plus prior·I.
    """
    return _gradient_hessian(s, *_totals(wins), prior)


def _totals(wins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's losses and the games per pair (wins + winsᵀ), a candidate against itself left out (it tells
    nothing): all the Newton steps need of the wins."""
    games = wins + wins.T
    games.ravel()[:: games.shape[0] + 1] = 0.0
    return np.add.reduce(wins, 0) - np.diagonal(wins), games


def _gradient_hessian(
    s: np.ndarray, losses: np.ndarray, games: np.ndarray, prior: float
) -> tuple[np.ndarray, np.ndarray]:
    """``gradient_hessian`` from ``_totals(wins)``: ten numpy calls on n×n arrays, the cost of a Newton step.

    Off the diagonal winsᵀ·loseᵀ − wins·lose = winsᵀ − games·lose (loseᵀ = 1 − lose), so the gradient is a's
    losses minus its expected losses Σ_b games·lose (plus prior·s), and games·lose·loseᵀ = games·lose − games·lose².
    """
    lose = expit(s - s[:, None])
    expected = games * lose  # expected losses of a to b
    grad = losses - np.add.reduce(expected, 1) + prior * s
    weight = expected - expected * lose  # zero diagonal, so the Laplacian's diagonal is just the row sums
    hess = -weight
    hess.ravel()[:: s.size + 1] = np.add.reduce(weight, 1) + prior
    return grad, hess


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
    wins = pair_wins(n, i[order], j[order], p[order])
    if prior > 0 and n <= NEWTON_MAX_N:
        s = _newton(wins, prior, np.zeros(n))[0]
    else:
        from scipy.optimize import minimize

        def loss_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
            return neg_log_posterior(x, wins, prior), gradient_hessian(x, wins, prior)[0]

        opts = {"gtol": 1e-10, "ftol": 1e-15}
        s = minimize(loss_and_grad, np.zeros(n), jac=True, method="L-BFGS-B", options=opts).x
    # The likelihood only sees differences; with prior == 0 the mean is otherwise arbitrary.
    return s - s.mean()


def _newton(wins: np.ndarray, prior: float, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Minimise ``neg_log_posterior`` from ``s`` by Newton's method (strictly convex when ``prior`` > 0, so it
    converges quadratically); return the optimum, the Hessian of the last step (within 1e-8 of the optimum) and its
    Cholesky factor (None if it was not numerically positive definite).

    A step that moves no score by more than 1/3 is taken whole: no pair's difference then moves by more than 2/3,
    σ' (so the Hessian) by a factor of more than e^(2/3) < 2, so the step lowers the objective by at least
    (1 − e^(2/3)/2)·gᵀH⁻¹g > 0.02·gᵀH⁻¹g (Armijo's condition holds) and the objective need not be evaluated; warm
    starts take only such steps. A longer step backtracks. It stops after a step under 1e-8: the next would be
    ~1e-16, convergence being quadratic.
    """
    losses, games = _totals(wins)
    current = None
    for _ in range(100):
        grad, hess = _gradient_hessian(s, losses, games, prior)
        chol, step, info = dposv(hess, grad)  # Cholesky: the Hessian is positive definite; 3× cheaper than solve()
        if info:  # not numerically positive definite (a tiny prior): LU instead
            chol, step = None, np.linalg.solve(hess, grad)
        size = np.abs(step).max()
        if size <= 1 / 3:
            s, current = s - step, None
            if size < 1e-8:
                break
            continue
        if current is None:
            current = neg_log_posterior(s, wins, prior)
        slope, t = float(grad @ step), 1.0
        while t > 1e-6:
            trial = neg_log_posterior(s - t * step, wins, prior)
            if trial <= current - 1e-4 * t * slope:
                break
            t *= 0.5
        s, current = s - t * step, trial
    return s, hess, chol


def bt_laplace(
    n: int, i: np.ndarray, j: np.ndarray, p: np.ndarray, prior: float, start: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``bt_fit`` MAP by Newton's method from ``start``, and its Laplace covariance; needs ``prior`` > 0.

    The same objective and solver as ``bt_fit`` (matches summed in the order given, not sorted: callers pass a fixed
    order). See ``laplace_fit``.
    """
    i, j, p = as_matches(i, j, p)
    return laplace_fit(pair_wins(n, i, j, p), prior, start)


def laplace_fit(wins: np.ndarray, prior: float, start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``bt_laplace`` from the matrix of wins (``pair_wins``), for callers that keep it up to date match by match.

    A warm ``start`` near the optimum (the previous fit, before a few more matches) saves most Newton steps. The
    covariance is the inverse Hessian at the optimum (at the last Newton iterate, within 1e-8 of it), the usual
    Laplace approximation of the posterior.
    """
    if prior <= 0:
        raise ValueError(f"prior must be > 0, got {prior}")
    n = wins.shape[0]
    if n == 0:
        return np.zeros(0), np.zeros((0, 0))
    s, hess, chol = _newton(wins, prior, np.zeros(n) if start is None else np.array(start, dtype=float))
    return s, np.linalg.inv(hess) if chol is None else dpotrs(chol, _eye(n))[0]


@functools.cache
def _eye(n: int) -> np.ndarray:
    """The n×n identity, read-only (shared)."""
    eye = np.eye(n)
    eye.flags.writeable = False
    return eye


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
