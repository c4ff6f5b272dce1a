"""Online Elo ratings (Elo 1978, "The Rating of Chessplayers, Past and Present").

Elo is a single sequential pass, so the result depends on the order of the games; callers that want a result
independent of the order outcomes arrived in must fix that order themselves (``RoundRobin`` uses a seeded
permutation). Bradley–Terry (``strategies.bradley_terry``) is the order-independent alternative.

The default ``k = 32`` is the standard chess value. FastChat and evalica use ``k = 4`` because they replay many
thousands of battles; a tournament on one prompt has only N(N-1)/2 games, and with ``k = 4`` the ratings would barely
move from the initial value.
"""

from __future__ import annotations

import numpy as np

from strategies.bradley_terry import as_matches
from strategies.registry import ELO_K


def elo_ratings(n: int, i: np.ndarray, j: np.ndarray, p: np.ndarray, k: float = ELO_K, initial: float = 1000.0,
                scale: float = 400.0, base: float = 10.0) -> np.ndarray:  # fmt: skip
    """Apply one Elo update per game, in the given order; ``p[t]`` is the (soft) score of ``i[t]`` against ``j[t]``."""
    i, j, p = as_matches(i, j, p)
    ratings = np.full(n, float(initial))
    for a, b, s in zip(i.tolist(), j.tolist(), p.tolist(), strict=True):
        expected = 1.0 / (1.0 + base ** ((ratings[b] - ratings[a]) / scale))
        delta = k * (s - expected)
        ratings[a] += delta
        ratings[b] -= delta
    return ratings
