"""Single-elimination (knockout) bracket: n − 1 matches in ⌈log2 n⌉ rounds.

The knockout tournament of RRM (Guo et al. 2025, arXiv:2505.14674) and of Chen et al. 2024, "A Simple and Provable
Scaling Law for the Test-Time Compute of LLMs": the winner of each match advances and the last one standing is the
answer.

Bracket. Candidates are shuffled with ``default_rng(seed)`` into 2^R slots, R = ⌈log2 n⌉. When n is not a power of
two, 2^R − n candidates get a bye into round 2 and round 1 has n − 2^(R−1) matches; the round-1 matches are spread
over the bracket in bit-reversed order so both halves get as even a share of byes as possible.

Pipelining. A match is proposed as soon as both of its participants are known, without waiting for the rest of its
round, so an engine can keep its judge busy. Match ids are fixed by bracket position (round by round, top to bottom),
never by arrival order.

Outcomes. p_i > 0.5 sends ``i`` on, p_i < 0.5 sends ``j``. An exact tie (0.5) is settled by a coin drawn for that
match at construction, so the bracket does not depend on the order in which outcomes arrive.

Full ranking. The champion is first, then the others by the round they fell in (later is better). Within a round,
a closer loss is better: higher probability achieved in the lost match (``1 − p_i`` for a losing ``j``), then lower
input index. Equivalently ``scores[c] = round lost + probability achieved in that match`` (a value in [0, 0.5]) and
the champion scores R + 1, so ``ranking() == rank_by_scores(scores())``. Before ``done()``, candidates not yet
eliminated score R + 1 too.
"""

from __future__ import annotations

import functools

import numpy as np

from strategies.base import Match, check_probability, rank_by_scores

_EMPTY = -2  # a bye slot
_UNKNOWN = -1  # a match not decided yet


def _bit_reverse(k: int, bits: int) -> int:
    """Reverse the lowest ``bits`` bits of ``k``."""
    return int(format(k, f"0{bits}b")[::-1], 2) if bits else 0


@functools.cache
def _spread(bits: int) -> tuple[int, ...]:
    """The 2^bits round-1 pair positions in bit-reversed order (where the matches go first); the same per size."""
    return tuple(sorted(range(1 << bits), key=lambda k: _bit_reverse(k, bits)))


class Knockout:
    """Seeded single-elimination bracket over ``n`` candidates."""

    def __init__(self, n: int, seed: int = 0) -> None:
        """Draw the bracket and one tie-break coin per match from ``default_rng(seed)``."""
        if n < 1:
            raise ValueError(f"need at least one candidate, got n={n}")
        self.n = n
        self.rounds = (n - 1).bit_length()  # ⌈log2 n⌉
        rng = np.random.default_rng(seed)
        shuffled = rng.permutation(n).tolist()
        self._coins: list[bool] = (rng.random(n - 1) < 0.5).tolist()  # True: a tied match goes to i
        pairs = (1 << self.rounds) // 2
        leaves = [_EMPTY] * (1 << self.rounds)
        if self.rounds == 0:
            leaves[0] = shuffled[0]
        else:
            leaves[0 : 2 * pairs : 2] = shuffled[:pairs]
            for c, k in zip(shuffled[pairs:], _spread(self.rounds - 1)[: n - pairs], strict=True):
                leaves[2 * k + 1] = c
        # _who[r][k]: who holds node k of round r (round 0 = the slots), _UNKNOWN until its match is decided.
        self._who: list[list[int]] = [leaves]
        self._slot: list[tuple[int, int]] = []  # match id -> (round, position)
        for r in range(1, self.rounds + 1):
            below, level = self._who[-1], []
            for k in range(len(below) // 2):
                left, right = below[2 * k], below[2 * k + 1]
                if right == _EMPTY:  # a bye: only round 1 has empty slots, and never two in one pair
                    level.append(left)
                else:
                    self._slot.append((r, k))
                    level.append(_UNKNOWN)
            self._who.append(level)
        # Plain lists, not arrays: a bracket is small and touched one match at a time.
        self._unproposed = list(range(n - 1))  # match ids not proposed yet, ascending
        self._proposed = [False] * (n - 1)
        self._received = [False] * (n - 1)
        self._left = n - 1  # matches not received yet
        self._lost_round = [0] * n
        self._lost_p = [0.0] * n

    def _players(self, match_id: int) -> tuple[int, int]:
        """The two node holders feeding a match (``_UNKNOWN`` while undecided)."""
        r, k = self._slot[match_id]
        return self._who[r - 1][2 * k], self._who[r - 1][2 * k + 1]

    def propose(self) -> list[Match]:
        """Return the not-yet-proposed matches whose two participants are both known."""
        out, waiting = [], []
        for m in self._unproposed:
            a, b = self._players(m)
            if a >= 0 and b >= 0:
                self._proposed[m] = True
                out.append(Match(id=m, i=a, j=b))
            else:
                waiting.append(m)
        self._unproposed = waiting
        return out

    def receive(self, match_id: int, p_i: float) -> None:
        """Record P(i beats j) for a proposed match and advance its winner."""
        p = check_probability(p_i)
        if not 0 <= match_id < self.n - 1 or not self._proposed[match_id]:
            raise ValueError(f"unknown match id {match_id}")
        if self._received[match_id]:
            raise ValueError(f"match {match_id} was already received")
        self._received[match_id] = True
        self._left -= 1
        a, b = self._players(match_id)
        i_wins = p > 0.5 or (p == 0.5 and self._coins[match_id])
        winner, loser, achieved = (a, b, 1.0 - p) if i_wins else (b, a, p)
        r, k = self._slot[match_id]
        self._who[r][k] = winner
        self._lost_round[loser] = r
        self._lost_p[loser] = achieved

    def done(self) -> bool:
        """True once all n − 1 matches are received."""
        return self._left == 0

    def scores(self) -> np.ndarray:
        """Round lost + probability achieved in that match; R + 1 for the champion (and anyone not yet out)."""
        lost, achieved = np.array(self._lost_round), np.array(self._lost_p)
        return np.where(lost > 0, lost + achieved, self.rounds + 1.0)

    def ranking(self) -> list[int]:
        """Champion first, then by round lost, closeness of the loss, and input index."""
        return rank_by_scores(self.scores())

    def budget(self) -> int:
        """n − 1."""
        return self.n - 1

    def round_of(self, match_id: int) -> int:
        """The bracket round (1..R) of a match."""
        return self._slot[match_id][0]
