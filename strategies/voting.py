"""voting@k: judge every match k times with positions balanced, then aggregate.

RRM reports voting@k (e.g. voting@16 on RewardBench, Guo et al. 2025, arXiv:2505.14674). Judges prefer a position,
so half of the votes show the pair in each order (⌊k/2⌋ each way; the odd vote's order is a seeded coin). Invalid
votes abstain. Hard votes are decided by majority (an exact split is a tie, 0.5); when any vote is soft (a
probability from log-probabilities) the outcome is the mean. A match whose votes are all invalid is a tie (0.5),
and is counted in ``all_invalid``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.base import Match, Strategy, check_probability


@dataclass(frozen=True)
class Vote:
    """One judgment: candidate ``a`` shown first (position A), ``b`` second; vote ``vote`` of match ``match``."""

    id: int
    a: int
    b: int
    vote: int
    match: int


def aggregate(votes: list[float | None], mode: str = "auto") -> tuple[float, bool]:
    """Combine per-vote P(first candidate wins) into one outcome; returns (outcome, all_invalid)."""
    valid = [v for v in votes if v is not None]
    if not valid:
        return 0.5, True
    hard = all(v in (0.0, 1.0) for v in valid)
    mean = float(np.mean(valid))
    if mode == "mean" or (mode == "auto" and not hard):
        return mean, False
    if mode not in ("auto", "majority"):
        raise ValueError(f"unknown aggregate mode {mode!r}")
    rounded = np.mean([1.0 if v > 0.5 else 0.0 if v < 0.5 else 0.5 for v in valid])
    return (1.0 if rounded > 0.5 else 0.0 if rounded < 0.5 else 0.5), False


class Voting:
    """Wrap any strategy so each of its matches becomes ``k`` position-balanced votes."""

    def __init__(self, inner: Strategy, k: int = 1, seed: int = 0, mode: str = "auto") -> None:
        """Wrap ``inner``; ``seed`` decides the order of the odd vote of each match."""
        if k < 1:
            raise ValueError(f"votes must be >= 1, got {k}")
        self.inner, self.k, self.mode = inner, k, mode
        self.n = inner.n
        self.seed = seed
        self._votes: dict[int, Vote] = {}
        self._matches: dict[int, Match] = {}
        self._pending: dict[int, list[float | None]] = {}
        self._received: set[int] = set()
        self.invalid = 0
        self.all_invalid = 0

    def propose(self) -> list[Vote]:
        """Expand the inner strategy's ready matches into votes."""
        out = []
        for m in self.inner.propose():
            self._matches[m.id] = m
            self._pending[m.id] = []
            forward = [True] * (self.k // 2) + [False] * (self.k // 2)
            if self.k % 2:
                # Seeded by the pair, not by call order, so pipelined runs draw the same coins as lockstep ones.
                coin = np.random.default_rng([self.seed, min(m.i, m.j), max(m.i, m.j)]).random()
                forward.append(bool(coin < 0.5) == (m.i < m.j))
            for v, fwd in enumerate(forward):
                a, b = (m.i, m.j) if fwd else (m.j, m.i)
                vote = Vote(id=len(self._votes), a=a, b=b, vote=v, match=m.id)
                self._votes[vote.id] = vote
                out.append(vote)
        return out

    def receive(self, vote_id: int, p_a: float | None) -> None:
        """Record P(candidate shown as A wins) for a vote, or None when the judgment was invalid."""
        if vote_id not in self._votes or vote_id in self._received:
            raise ValueError(f"unknown or already received vote id {vote_id}")
        vote = self._votes[vote_id]
        m = self._matches[vote.match]
        if p_a is None:
            self.invalid += 1
            p_i = None
        else:
            p_a = check_probability(p_a)
            p_i = p_a if vote.a == m.i else 1.0 - p_a
        self._received.add(vote_id)
        got = self._pending[m.id]
        got.append(p_i)
        if len(got) == self.k:
            outcome, none_valid = aggregate(got, self.mode)
            self.all_invalid += none_valid
            del self._pending[m.id]
            self.inner.receive(m.id, outcome)

    def done(self) -> bool:
        """True when the inner strategy is done."""
        return self.inner.done()

    def scores(self) -> np.ndarray:
        """Scores of the inner strategy."""
        return self.inner.scores()

    def ranking(self) -> list[int]:
        """Ranking of the inner strategy."""
        return self.inner.ranking()

    def budget(self) -> int:
        """Number of judgments: the inner budget times k."""
        return self.inner.budget() * self.k
