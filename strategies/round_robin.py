"""Round robin (a "league"): every unordered pair is judged once, then rated with Elo or Bradley–Terry.

This is the exhaustive baseline of RRM (Guo et al. 2025, arXiv:2505.14674) and the league of Chen et al. 2024
("A Simple and Provable Scaling Law for the Test-Time Compute of LLMs"): N(N-1)/2 matches, all proposed at once,
so an engine can judge them in one batch. Elo depends on game order, so the games are replayed in a permutation of
match ids fixed by ``seed``; the ratings never depend on the order the outcomes arrived in.
"""

from __future__ import annotations

import numpy as np

from strategies.base import Match, check_probability, rank_by_scores
from strategies.bradley_terry import bt_bootstrap, bt_fit
from strategies.elo import elo_ratings
from strategies.registry import ELO_K, RATINGS


class RoundRobin:
    """All-pairs tournament over ``n`` candidates, rated with ``"elo"`` or ``"bt"`` (Bradley–Terry)."""

    def __init__(self, n: int, rating: str = "elo", seed: int = 0, elo_k: float = ELO_K, bt_prior: float = 0.1) -> None:
        """Prepare the N(N-1)/2 matches; ``seed`` fixes the order Elo replays them in."""
        if n < 1:
            raise ValueError(f"need at least one candidate, got n={n}")
        if rating not in RATINGS:
            raise ValueError(f"unknown rating {rating!r}; choose one of {', '.join(RATINGS)}")
        self.n, self.rating, self.seed, self.elo_k, self.bt_prior = n, rating, seed, elo_k, bt_prior
        self._i, self._j = (a.astype(int) for a in np.triu_indices(n, k=1))
        self._p = np.full(self._i.size, np.nan)
        self._order = np.random.default_rng(seed).permutation(self._i.size)
        self._proposed = False

    def propose(self) -> list[Match]:
        """Return every pair (i < j) on the first call, in lexicographic order with ids 0..M-1; then nothing."""
        if self._proposed:
            return []
        self._proposed = True
        return [Match(id=k, i=int(a), j=int(b)) for k, (a, b) in enumerate(zip(self._i, self._j, strict=True))]

    def receive(self, match_id: int, p_i: float) -> None:
        """Record P(i beats j) for a proposed match; unknown or repeated ids raise ``ValueError``."""
        p = check_probability(p_i)
        if not self._proposed or not 0 <= match_id < self._p.size:
            raise ValueError(f"unknown match id {match_id}")
        if not np.isnan(self._p[match_id]):
            raise ValueError(f"match {match_id} was already received")
        self._p[match_id] = p

    def done(self) -> bool:
        """True once every pair has an outcome."""
        return not np.isnan(self._p).any()

    def scores(self) -> np.ndarray:
        """Elo ratings or BT log-strengths from the outcomes received so far."""
        order = self._order[~np.isnan(self._p[self._order])]
        i, j, p = self._i[order], self._j[order], self._p[order]
        if self.rating == "elo":
            return elo_ratings(self.n, i, j, p, k=self.elo_k)
        return bt_fit(self.n, i, j, p, prior=self.bt_prior)

    def ranking(self) -> list[int]:
        """Candidates best first by ``scores`` (ties by lower index)."""
        return rank_by_scores(self.scores())

    def budget(self) -> int:
        """N(N-1)/2."""
        return self.n * (self.n - 1) // 2

    def intervals(self, rounds: int = 200, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap (lower, upper) bounds on the BT scores; only for ``rating="bt"``."""
        if self.rating != "bt":
            raise ValueError("intervals need rating='bt' (Elo is order-dependent, so it has no bootstrap here)")
        got = ~np.isnan(self._p)
        i, j, p = self._i[got], self._j[got], self._p[got]
        return bt_bootstrap(self.n, i, j, p, rounds=rounds, seed=self.seed, level=level, prior=self.bt_prior)
