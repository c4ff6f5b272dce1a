"""The ask/tell protocol every strategy implements.

A strategy never calls a judge. The engine asks it for the matches it can run now (``propose``), judges them
however it likes (batched, cached, on many machines) and tells it the outcomes (``receive``). This is the shape of
optuna's ask/tell interface, applied to pairwise tournaments.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Match:
    """One comparison between candidates ``i`` and ``j`` (input indices); ``id`` is unique within a strategy."""

    id: int
    i: int
    j: int


@runtime_checkable
class Strategy(Protocol):
    """A tournament over ``n`` candidates driven from outside (ask/tell)."""

    n: int

    def propose(self) -> list[Match]:
        """Return the matches that can be judged now and were not proposed before (may be empty while waiting)."""
        ...

    def receive(self, match_id: int, p_i: float) -> None:
        """Record the outcome of a proposed match: the probability in [0, 1] that candidate ``i`` beats ``j``."""
        ...

    def done(self) -> bool:
        """True once every match the strategy needs has been received."""
        ...

    def scores(self) -> np.ndarray:
        """Return one float per candidate, in input order; higher is better."""
        ...

    def ranking(self) -> list[int]:
        """Return candidate indices, best first (consistent with ``scores``, ties broken by lower index)."""
        ...

    def budget(self) -> int:
        """Return the total number of matches this strategy will propose (an upper bound for adaptive ones)."""
        ...


class Wrapper:
    """A strategy that plays another one (``inner``): it is done, scores and ranks as the inner strategy does."""

    inner: Strategy

    def done(self) -> bool:
        """True when the inner strategy is done."""
        return self.inner.done()

    def scores(self) -> np.ndarray:
        """The inner strategy's scores."""
        return self.inner.scores()

    def ranking(self) -> list[int]:
        """The inner strategy's ranking."""
        return self.inner.ranking()


def rank_by_scores(scores: np.ndarray) -> list[int]:
    """Order indices by descending score; equal scores keep input order (stable), so the result is deterministic.

    Scores are compared at 9 decimals: two candidates an optimizer could not tell apart (a tie up to its rounding
    noise, which differs between library versions) are tied, and keep input order.
    """
    return [int(k) for k in np.argsort(-np.round(np.asarray(scores, dtype=float), 9), kind="stable")]


def check_probability(p: float) -> float:
    """Validate an outcome probability and return it as a float."""
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"outcome must be a probability in [0, 1], got {p}")
    return p


def seeded_uniforms(key: str, count: int = 1) -> list[float]:
    """``count`` (1 to 8) independent uniforms in [0, 1) fixed by ``key`` (e.g. ``f"{seed},{i},{j}"``) and ``count``.

    A hash (BLAKE2b, its digest size ``8 * count``), not a generator: ~1 µs where building a numpy generator per draw
    costs ~20 µs. Each uniform is the top 53 bits of one 8-byte word of the digest.
    """
    words = _WORDS[count].unpack(hashlib.blake2b(key.encode(), digest_size=8 * count).digest())
    return [(w >> 11) * 2.0**-53 for w in words]


_WORDS = [struct.Struct(f">{k}Q") for k in range(9)]  # big-endian unsigned 64-bit words, by count
