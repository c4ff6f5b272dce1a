"""Knockout with sequentially voted matches and a judgment budget spread over the rounds.

A knockout (``strategies.knockout``) loses the best candidate to one unlucky verdict, and its close matches are late:
the best candidate meets ever stronger opponents. Here every bracket match is a sequential test, in the spirit of
Wald's SPRT (Wald 1945, "Sequential Tests of Statistical Hypotheses") and of the confidence-based dueling of Yue &
Joachims 2011 ("Beat the Mean Bandit"): it gets a cap of judgments and stops as soon as the majority of that cap is
decided (or, with ``lead=d``, once one side leads by d), so lopsided matches cost one or two judgments and close
ones get the rest. Each judgment is proposed as its own ``Match`` of the same pair; the voting layer numbers them
and alternates the positions, which cancels a judge's position bias.

Budget. ``budget`` counts judgments (= proposed matches) for the whole tournament and is never exceeded; it must be
at least n − 1 (one judgment per bracket match). Rounds are played one after another. When round r starts, one
judgment is reserved for each match of the later rounds, and of what is left round r gets the share w_r / Σ_{s≥r} w_s
with w_r = growth^(r−1). With the default ``growth = 0.5`` every round's share is split over half as many matches as
the round before, so each match gets about the same share; what early lopsided matches leave unused moves on to the
later, closer matches (at N=16 in ``experiments.bench_strategies``, 0.5 and 0.3 tie and beat 0.7 and 1 by 1-3 points).
A round's matches get equal odd caps (an odd cap cannot end in a tie); what a round leaves unused passes on to the
next ones, and the final gets everything left.

Batching. Each ``propose()`` returns, for every open match, the fewest judgments that could decide it (never one
that could turn out useless), so a round's matches are judged side by side and a match needs few sequential steps.
The bracket, the tie coins and the full ranking are those of ``Knockout`` (same seed), fed the vote share of each
match as its outcome.
"""

from __future__ import annotations

import math

from strategies.base import Match, Wrapper, check_probability
from strategies.knockout import Knockout
from strategies.voting import votes_to_decide


class AdaptiveKnockout(Wrapper):
    """Seeded knockout whose matches are voted until decided, within ``budget`` judgments in total."""

    def __init__(
        self, n: int, seed: int = 0, budget: int | None = None, lead: int | None = None, growth: float = 0.5
    ) -> None:
        """Draw the bracket; ``budget`` defaults to 3(n − 1) judgments; ``lead`` stops a match once one side leads."""
        self.inner: Knockout = Knockout(n, seed=seed)
        self.n = n
        self.cap = 3 * (n - 1) if budget is None else int(budget)
        if self.cap < self.min_budget(n):
            raise ValueError(f"adaptive-knockout needs a budget of at least n - 1 = {n - 1} judgments, got {self.cap}")
        if lead is not None and lead < 1:
            raise ValueError(f"lead must be >= 1, got {lead}")
        if growth <= 0:
            raise ValueError(f"growth must be > 0, got {growth}")
        self.lead, self.growth = lead, growth
        rounds = [self.inner.round_of(m) for m in range(n - 1)]
        self._per_round = [rounds.count(r) for r in range(self.inner.rounds + 1)]  # index 0 unused
        self.round = 0  # the round being played (0 before the first propose)
        self.spent = 0
        self._queued: dict[int, list[Match]] = {}  # round -> bracket matches proposed by the bracket, not started
        self._cap: dict[int, int] = {}  # bracket match id -> judgment cap
        self._wins: dict[int, list[float]] = {}  # bracket match id -> [wins of i, wins of j]
        self._votes: dict[int, int] = {}  # bracket match id -> judgments issued
        self._out: dict[int, int] = {}  # bracket match id -> judgments not yet received
        self._open: dict[int, Match] = {}  # bracket matches being voted
        self._judgment: dict[int, int] = {}  # judgment (proposed match) id -> bracket match id
        self._got: set[int] = set()  # judgment ids received

    def _start_round(self) -> None:
        """Give the next round's matches their caps (see the module doc)."""
        self.round += 1
        r, last = self.round, self.inner.rounds
        later = sum(self._per_round[r + 1 :])
        weights = [self.growth ** (s - 1) for s in range(r, last + 1)]
        pool = (self.cap - self.spent - later) * weights[0] / sum(weights)
        cap = max(1, math.floor(pool / self._per_round[r]))
        cap -= 1 - cap % 2  # odd
        for m in self._queued.pop(r):
            self._cap[m.id], self._wins[m.id], self._votes[m.id], self._out[m.id] = cap, [0.0, 0.0], 0, 0
            self._open[m.id] = m

    def _need(self, bracket_id: int) -> int:
        """The fewest more judgments that could decide a bracket match (0 when it is decided)."""
        wi, wj = self._wins[bracket_id]
        lead = abs(wi - wj)
        need = votes_to_decide(lead, self._cap[bracket_id] - self._votes[bracket_id])
        if self.lead is None or need == 0:
            return need
        return 0 if lead >= self.lead else min(need, math.ceil(self.lead - lead))

    def propose(self) -> list[Match]:
        """Return the next judgments of every open match of the current round whose earlier ones are all back."""
        for m in self.inner.propose():
            self._queued.setdefault(self.inner.round_of(m.id), []).append(m)
        nxt = self.round + 1
        if not self._open and nxt <= self.inner.rounds and len(self._queued.get(nxt, ())) == self._per_round[nxt]:
            self._start_round()
        out = []
        for bracket_id, m in self._open.items():
            if self._out[bracket_id]:
                continue
            for _ in range(self._need(bracket_id)):
                jid = len(self._judgment)
                self._judgment[jid] = bracket_id
                out.append(Match(id=jid, i=m.i, j=m.j))
                self._votes[bracket_id] += 1
                self._out[bracket_id] += 1
                self.spent += 1
        return out

    def receive(self, match_id: int, p_i: float) -> None:
        """Record one judgment; a bracket match that is decided (or out of judgments) is passed to the bracket."""
        p = check_probability(p_i)
        bracket_id = self._judgment.get(match_id)
        if bracket_id is None or match_id in self._got:
            raise ValueError(f"unknown or already received match id {match_id}")
        self._got.add(match_id)
        self._wins[bracket_id][0] += p
        self._wins[bracket_id][1] += 1.0 - p
        self._out[bracket_id] -= 1
        if self._out[bracket_id] == 0 and self._need(bracket_id) == 0:
            wi, wj = self._wins[bracket_id]
            del self._open[bracket_id]
            self.inner.receive(bracket_id, wi / (wi + wj) if wi + wj else 0.5)

    @staticmethod
    def min_budget(n: int) -> int:
        """The fewest judgments: one per bracket match."""
        return n - 1

    def budget(self) -> int:
        """The judgment budget: never exceeded."""
        return self.cap if self.n > 1 else 0
