"""voting@k: judge every match k times with positions balanced, then aggregate.

RRM reports voting@k (e.g. voting@16 on RewardBench, Guo et al. 2025, arXiv:2505.14674). Judges prefer a position,
so half of the votes show the pair in each order (⌊k/2⌋ each way; the odd vote's order is a seeded coin). Invalid
votes abstain. Hard votes are decided by majority (an exact split is a tie, 0.5); when any vote is soft (a
probability from log-probabilities) the outcome is the mean. A match whose votes are all invalid is a tie (0.5),
and is counted in ``all_invalid``.

Rematches. A strategy may propose the same pair again (best-arm identification and the adaptive knockout do: each of
their matches is one judgment). A judgment is cached under its vote index, so a rematch must not reuse one: the
votes of a pair are numbered across all its matches, and from the second match on their order alternates (vote t of
a pair shows the lower index first when ``t`` is even and the pair's seeded coin is heads, or ``t`` is odd and it is
tails), so repeated single votes cancel a position bias. ``AdaptiveVoting`` alternates from a pair's first vote.
A strategy that never repeats a pair (round robin, knockout) gets exactly the votes it got before.

``AdaptiveVoting`` (below) stops a match's votes as soon as the majority of ``k`` is decided.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from strategies.base import Match, Strategy, Wrapper, check_probability, seeded_uniforms
from strategies.order_effect import OrderCounts


def votes_to_decide(lead: float, left: int) -> int:
    """The fewest more votes that could decide a majority led by ``lead`` with ``left`` votes to go (0: decided)."""
    if lead > left or left == 0:
        return 0
    return min(left, math.floor((left - lead) / 2) + 1)


class Vote(NamedTuple):
    """One judgment: candidate ``a`` shown first (position A), ``b`` second; vote ``vote`` of match ``match``.

    A named tuple, immutable as a frozen dataclass is and built several times faster (one per judgment)."""

    id: int
    a: int
    b: int
    vote: int
    match: int


def aggregate(votes: list[float | None], mode: str = "auto") -> tuple[float, bool]:
    """Combine per-vote P(first candidate wins) into one outcome; returns (outcome, all_invalid)."""
    if len(votes) == 1 and mode == "auto":  # one vote (the usual case): its own outcome, by either rule below
        return (0.5, True) if votes[0] is None else (votes[0], False)
    valid = [v for v in votes if v is not None]
    if not valid:
        return 0.5, True
    hard = all(v in (0.0, 1.0) for v in valid)
    if mode == "mean" or (mode == "auto" and not hard):
        # fsum is exactly rounded, so the mean does not depend on the order the votes arrived in.
        return math.fsum(valid) / len(valid), False
    if mode not in ("auto", "majority"):
        raise ValueError(f"unknown aggregate mode {mode!r}")
    lead = sum(1 if v > 0.5 else -1 if v < 0.5 else 0 for v in valid)  # wins minus losses; a 0.5 vote is neither
    return (1.0 if lead > 0 else 0.0 if lead < 0 else 0.5), False


class Voting(Wrapper):
    """Wrap any strategy so each of its matches becomes ``k`` position-balanced votes."""

    def __init__(self, inner: Strategy, k: int = 1, seed: int = 0, mode: str = "auto") -> None:
        """Wrap ``inner``; ``seed`` decides the order of the odd vote of each match."""
        if k < 1:
            raise ValueError(f"votes must be >= 1, got {k}")
        self.inner, self.k, self.mode = inner, k, mode
        self.n = inner.n
        self.seed = seed
        self._votes: list[Vote] = []  # by id
        self._matches: dict[int, Match] = {}
        self._pending: dict[int, list[float | None]] = {}
        self._received: set[int] = set()
        self._pair_votes: dict[tuple[int, int], int] = {}  # votes issued so far per unordered pair
        self.invalid = 0
        self.all_invalid = 0
        # Position bias (``order_counts``): each valid vote is matched with the pair's oldest unmatched vote in the
        # other order; ``_unmatched`` holds, per unordered pair, the order of its waiting votes and their P(A).
        self.orders = OrderCounts()
        self._unmatched: dict[tuple[int, int], tuple[bool, list[float]]] = {}

    def _coin(self, i: int, j: int) -> bool:
        """The pair's seeded coin: True shows the lower index first (by pair, not call order, so modes agree)."""
        return seeded_uniforms(f"{self.seed},{min(i, j)},{max(i, j)}")[0] < 0.5

    def _issue(self, m: Match, count: int, block: bool = False) -> list[Vote]:
        """Create ``count`` more votes for match ``m``, numbered and ordered per pair (see the module doc)."""
        i, j = m.i, m.j
        pair = (i, j) if i < j else (j, i)
        start = self._pair_votes.get(pair, 0)
        self._pair_votes[pair] = start + count
        if block and start == 0:  # a pair's first k votes: half each way, the odd one by the coin
            half = self.k // 2
            forward = [True] * half + [False] * half
            if self.k % 2:
                forward.append(self._coin(i, j) == (i < j))
            shows = [(i, j) if fwd else (j, i) for fwd in forward]
        else:
            heads, flipped = self._coin(i, j), pair[::-1]
            shows = [pair if (t % 2 == 0) == heads else flipped for t in range(start, start + count)]
        votes, out = self._votes, []
        for t, (a, b) in enumerate(shows, start):
            vote = Vote(len(votes), a, b, t, m.id)
            votes.append(vote)
            out.append(vote)
        return out

    def propose(self) -> list[Vote]:
        """Expand the inner strategy's ready matches into votes."""
        out = []
        for m in self.inner.propose():
            self._matches[m.id] = m
            self._pending[m.id] = []
            out += self._issue(m, self.k, block=True)
        return out

    def _record(self, vote_id: int, p_a: float | None) -> tuple[Match, list[float | None]]:
        """Store one vote as P(the match's ``i`` wins) (None: invalid); return its match and the votes so far."""
        if not 0 <= vote_id < len(self._votes) or vote_id in self._received:
            raise ValueError(f"unknown or already received vote id {vote_id}")
        vote = self._votes[vote_id]
        m = self._matches[vote.match]
        if p_a is None:
            self.invalid += 1
            p_i = None
        else:
            p_a = check_probability(p_a)
            p_i = p_a if vote.a == m.i else 1.0 - p_a
            self._count_order(vote.a, vote.b, p_a)
        self._received.add(vote_id)
        got = self._pending[m.id]
        got.append(p_i)
        return m, got

    def receive(self, vote_id: int, p_a: float | None) -> None:
        """Record P(candidate shown as A wins) for a vote, or None when the judgment was invalid."""
        m, got = self._record(vote_id, p_a)
        if len(got) == self.k:
            outcome, none_valid = aggregate(got, self.mode)
            self.all_invalid += none_valid
            del self._pending[m.id]
            self.inner.receive(m.id, outcome)

    def _count_order(self, a: int, b: int, p_a: float) -> None:
        """Add one valid vote to the position-bias counts: O(1), one dict lookup (every judgment passes here)."""
        forward, pair = a < b, (a, b) if a < b else (b, a)
        waiting = self._unmatched.get(pair)
        if waiting is None:
            self._unmatched[pair] = (forward, [p_a])
        elif waiting[0] == forward:
            waiting[1].append(p_a)
        else:
            q = waiting[1].pop(0)
            if not waiting[1]:
                del self._unmatched[pair]
            self.orders.add_pair(p_a, q)
        self.orders.add_vote(p_a)

    def order_counts(self) -> OrderCounts:
        """This tournament's evidence on position bias (``strategies.order_effect``): its pairs' valid votes in
        one order matched with those in the other, in the order they were received."""
        return self.orders

    def budget(self) -> int:
        """Number of judgments: the inner budget times k."""
        return self.inner.budget() * self.k


class AdaptiveVoting(Voting):
    """Voting@k that stops a match's votes once its majority is decided, within an optional judgment budget.

    A match first gets the fewest votes that could decide it (⌊k/2⌋ + 1), then, while the k-vote majority is still
    open, the fewest more that could close it; so a lopsided match costs ⌊k/2⌋ + 1 judgments and only close ones
    get more. For hard votes the outcome is exactly the full k-vote majority (the votes never cast could not change
    it); soft votes count as fractional wins and the outcome is their mean. Votes alternate positions.

    ``budget`` caps the judgments of the whole tournament, never exceeded: ⌊k/2⌋ + 1 judgments stay reserved for
    every match the inner strategy may still propose (its ``budget()``), and a match that cannot get the votes it
    needs is settled on the votes it has (a tie, 0.5, when it has none valid).
    """

    def __init__(
        self, inner: Strategy, k: int = 3, seed: int = 0, mode: str = "auto", budget: int | None = None
    ) -> None:
        """Wrap ``inner``; ``budget`` (judgments, None for no cap) must cover ⌊k/2⌋ + 1 per inner match."""
        super().__init__(inner, k=k, seed=seed, mode=mode)
        if budget is not None and budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        self.cap = budget
        self.first = k // 2 + 1
        self.spent = 0  # judgments issued
        self._issued: dict[int, int] = {}  # match id -> votes issued
        self._waiting: dict[int, None] = {}  # matches whose received votes leave the majority open (ordered)
        self._started = 0

    def _lead_and_left(self, match_id: int) -> tuple[float, int]:
        """Return |wins(i) − wins(j)| over the valid votes so far and the votes left before k."""
        got = [v for v in self._pending[match_id] if v is not None]
        lead = abs(sum(2.0 * v - 1.0 for v in got))
        return lead, self.k - self._issued[match_id]

    def _need(self, match_id: int) -> int:
        """The fewest more votes that could decide the match (0 when decided or out of votes)."""
        return votes_to_decide(*self._lead_and_left(match_id))

    def _affordable(self) -> int:
        """Judgments that may be issued now without eating into the reserve of matches not yet proposed."""
        if self.cap is None:
            return self.k
        unstarted = max(0, self.inner.budget() - self._started)
        return max(0, self.cap - self.spent - self.first * unstarted)

    def _settle(self, match_id: int) -> None:
        """Aggregate the votes a match got and tell the inner strategy."""
        self._waiting.pop(match_id, None)
        outcome, none_valid = aggregate(self._pending.pop(match_id), self.mode)
        self.all_invalid += none_valid
        self.inner.receive(match_id, outcome)

    def propose(self) -> list[Vote]:
        """Issue votes for new matches and for open matches whose previous votes are all back."""
        out: list[Vote] = []
        while True:
            for m in self.inner.propose():
                self._matches[m.id] = m
                self._pending[m.id] = []
                self._issued[m.id] = 0
                self._waiting[m.id] = None
                self._started += 1
            settled = False
            for match_id in list(self._waiting):
                grant = min(self._need(match_id), self._affordable())
                if grant == 0:
                    self._settle(match_id)  # decided, or out of budget: may unlock new inner matches
                    settled = True
                    continue
                del self._waiting[match_id]
                self._issued[match_id] += grant
                self.spent += grant
                out += self._issue(self._matches[match_id], grant)
            if not settled:
                return out

    def receive(self, vote_id: int, p_a: float | None) -> None:
        """Record one vote; once a match's outstanding votes are back, settle it or queue it for more."""
        m, got = self._record(vote_id, p_a)
        if len(got) == self._issued[m.id]:
            if self._need(m.id) == 0:
                self._settle(m.id)
            else:
                self._waiting[m.id] = None

    def budget(self) -> int:
        """Upper bound on judgments: k per inner match, or the cap when it is lower."""
        bound = self.inner.budget() * self.k
        return bound if self.cap is None else min(bound, self.cap)
