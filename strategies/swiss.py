"""Swiss system: a set number of rounds, each pairing candidates with equal (or close) scores, no rematches.

The chess Swiss system (FIDE Handbook C.04): every round, players with the same score meet, nobody meets the same
opponent twice, and after R rounds the standings are by points. Pairing is a matching problem: we take a maximum-
weight matching (Edmonds 1965, "Paths, trees, and flowers"; ``networkx.max_weight_matching``) on the graph of pairs
not yet played, with weight −(score difference)² (shifted to stay positive) and maximum cardinality, so as many
candidates as possible play and the score groups stay together. The graph first holds only pairs at most 4 places
apart in the standings (far cheaper for large n); when that cannot pair everyone, the window doubles until it can (or
holds every unplayed pair).
Equal standings are ordered by a seeded shuffle, and the graph is built in that order, so the first round is a random
pairing. With an odd number of candidates the lowest-ranked one that had no bye yet sits out and
gets a point (one bye each at most; when everyone had one, the lowest-ranked sits out again).

Points: a match outcome P(i beats j) adds p to i and 1 − p to j (a bye adds 1); pairing weights use them.
Standings (what orders the next pairing and the final ranking): by default (``standings="bt"``) Bradley–Terry MAP
log-strengths (prior precision 1) over every game so far; with ``standings="points"``, points, then the Buchholz
tie-break (the sum of the opponents' points), then input index: ``scores = points + buchholz / (rounds · n + 1)``,
which keeps the points first. A round needs the previous round's results, so rounds are the sequential steps; each
is one batch of ⌊n/2⌋ matches.

Budget. ``budget`` counts matches (= judgments with one vote each) and is never exceeded: the number of rounds is
``rounds``, cut to ⌊budget / ⌊n/2⌋⌋ when a budget is given (with only a budget, that many rounds; with neither,
⌈log2 n⌉ + 2), and to n − 1 (after that every pair has met). A budget under one round is an error: zero rounds would
rank by input order alone.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from strategies.base import Match, check_probability, rank_by_scores
from strategies.bradley_terry import bt_laplace

_WINDOW = 4  # pair within this many places in the standings first: the matching is then much cheaper


class Swiss:
    """Seeded Swiss-system tournament over ``n`` candidates."""

    def __init__(
        self, n: int, seed: int = 0, rounds: int | None = None, budget: int | None = None, standings: str = "bt"
    ) -> None:
        """Fix the number of rounds from ``rounds`` and ``budget`` (matches); ``seed`` breaks pairing ties."""
        if n < 1:
            raise ValueError(f"need at least one candidate, got n={n}")
        if standings not in ("points", "bt"):
            raise ValueError(f"unknown standings {standings!r}; choose points or bt")
        self.n, self.standings = n, standings
        per_round = n // 2
        if rounds is not None and rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        if budget is not None and budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        if budget is not None and budget < self.min_budget(n):
            raise ValueError(f"swiss needs a budget of at least one round, n // 2 = {per_round} matches, got {budget}")
        want = (n - 1).bit_length() + 2 if rounds is None and budget is None else rounds
        if budget is not None and per_round:
            want = budget // per_round if want is None else min(want, budget // per_round)
        want = 0 if want is None else int(want)
        self.rounds = min(want, n - 1)
        self.round = 0
        self._rng = np.random.default_rng(seed)
        self._points = np.zeros(n)
        self._byes = np.zeros(n, dtype=int)
        self._played: set[tuple[int, int]] = set()
        self._opponents: list[list[int]] = [[] for _ in range(n)]
        self._matches: list[Match] = []
        self._p: dict[int, float] = {}
        self._waiting = 0  # matches of the current round not received yet
        self._stuck = False  # no pair left unplayed among the candidates

    @staticmethod
    def min_budget(n: int) -> int:
        """The fewest matches worth a run: one round (fewer would rank by input order alone)."""
        return n // 2

    def _pair_round(self) -> list[Match]:
        """Pair the next round by score, without rematches."""
        shuffle = self._rng.permutation(self.n)
        order = [int(c) for c in np.lexsort((shuffle, -self.scores()))]  # by score, equal scores shuffled
        sitting: list[int] = []
        if self.n % 2:
            fresh = [c for c in reversed(order) if self._byes[c] == 0]
            bye = fresh[0] if fresh else order[-1]
            sitting.append(bye)
            self._byes[bye] += 1
            self._points[bye] += 1.0
        players = [c for c in order if c not in sitting]
        window = _WINDOW
        pairs = self._matching(players, window)
        while 2 * len(pairs) < len(players) - 1 and window < len(players):  # too narrow for a full pairing: widen
            window *= 2
            pairs = self._matching(players, window)
        out = []
        for x, y in pairs:
            m = Match(id=len(self._matches), i=x, j=y)
            self._matches.append(m)
            self._played.add((x, y))
            out.append(m)
        return out

    def _matching(self, players: list[int], window: int) -> list[tuple[int, int]]:
        """Max-cardinality, max-weight pairing of ``players`` (in standings order) among pairs ``window`` apart."""
        spread = (self.rounds + 1) ** 2
        g = nx.Graph()
        g.add_nodes_from(players)
        for a, x in enumerate(players):
            for y in players[a + 1 : a + 1 + window]:
                if (min(x, y), max(x, y)) not in self._played:
                    diff = self._points[x] - self._points[y]
                    # Positive integer weights (the blossom algorithm is exact and faster on them, and few distinct
                    # values keep it fast): max cardinality comes first, then closeness in points (to 1/16 point²).
                    g.add_edge(x, y, weight=round(16 * (spread + 1 - diff * diff)))
        return sorted(tuple(sorted(e)) for e in nx.max_weight_matching(g, maxcardinality=True))

    def propose(self) -> list[Match]:
        """Return the next round's matches once the previous round is complete (then nothing until it is)."""
        if self._waiting or self._stuck or self.round >= self.rounds:
            return []
        out = self._pair_round()
        self.round += 1
        self._waiting = len(out)
        self._stuck = not out
        return out

    def receive(self, match_id: int, p_i: float) -> None:
        """Record P(i beats j) for a match of the current round."""
        p = check_probability(p_i)
        if not 0 <= match_id < len(self._matches):
            raise ValueError(f"unknown match id {match_id}")
        if match_id in self._p:
            raise ValueError(f"match {match_id} was already received")
        m = self._matches[match_id]
        self._p[match_id] = p
        self._points[m.i] += p
        self._points[m.j] += 1.0 - p
        self._opponents[m.i].append(m.j)
        self._opponents[m.j].append(m.i)
        self._waiting -= 1

    def done(self) -> bool:
        """True once every round is played (or no unplayed pair is left)."""
        return not self._waiting and (self._stuck or self.round >= self.rounds)

    def scores(self) -> np.ndarray:
        """Points, with the Buchholz sum as a tie-break below one point (or BT log-strengths with standings="bt")."""
        if self.standings == "bt" and self._p:
            ids = sorted(self._p)
            i = np.array([self._matches[k].i for k in ids])
            j = np.array([self._matches[k].j for k in ids])
            return bt_laplace(self.n, i, j, np.array([self._p[k] for k in ids]), prior=1.0)[0]
        buchholz = np.array([self._points[o].sum() if o else 0.0 for o in self._opponents])
        return self._points + buchholz / (max(self.rounds, 1) * self.n + 1)

    def ranking(self) -> list[int]:
        """Candidates best first by points, Buchholz and input index."""
        return rank_by_scores(self.scores())

    def budget(self) -> int:
        """Upper bound on matches: ⌊n/2⌋ per round."""
        return self.rounds * (self.n // 2)
