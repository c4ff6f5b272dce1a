"""Best-arm identification on Bradley–Terry scores: a knockout, then LUCB-style duels of the leader and its challengers.

LUCB (Kalyanakrishnan et al. 2012, "PAC Subset Selection in Stochastic Multi-armed Bandits") samples, each round,
the empirical leader and the arm whose upper confidence bound is highest, and stops when the leader's lower bound
clears every other upper bound. Pairwise feedback has no per-arm rewards, so, as in dueling bandits (Yue & Joachims
2011; Szörényi et al. 2015, "Online Rank Elicitation for Plackett–Luce"), the arms' values are Bradley–Terry
log-strengths fitted to every outcome so far (MAP with a Gaussian prior of precision ``prior``, ``laplace_fit``),
and the uncertainty of a gap s_h − s_c is its Laplace standard error (from the inverse Hessian). The default prior
0.3 (sd 1.8) is loose enough for graded candidates that span many logits: a tighter one shrinks every opponent
toward the mean, so a pile of wins over weak candidates outweighs a won duel (on the same final judgments at N=16,
60 judgments, before the warm-up was voted, top-1 0.980 with prior 3, 0.984 with 1, 0.988 with 0.3 in scenario (a);
0.972 / 0.972 / 0.971 in (b)).

Warm-up: a knockout. The duels need a leader worth testing and every candidate in the comparison graph. A seeded
single-elimination bracket (``strategies.knockout``, one judgment per match, n − 1 matches in ⌈log2 n⌉ rounds) gives
both at the lowest price: every candidate plays, the strong ones play each other, and a best candidate that lost one
unlucky match keeps a score that its challengers must still beat. With a budget under n − 1 the bracket is cut short.
(In ``experiments.bench_strategies``, scenario (a), this warm-up with the duels below took top-1 at N=16 from 0.862
to 0.908 at 30 judgments and from 0.974 to 0.988 at 60, and at N=32 from 0.83 to 0.95 at 62, against a warm-up of one
random pairing and duels spread one match per challenger.)

Votes on the warm-up. The late matches of the bracket are where the strong candidates meet, and the close ones: one
upset in a semifinal or the final hands the duels a wrong leader to overturn first, and when two interchangeable
correct answers meet, their duels split and eat the budget that should check the rest. So, from the final back,
the bracket's rounds are best of ``votes`` (3: two agreeing judgments decide, a split gets a third; a sequential
majority as in ``strategies.adaptive_knockout``) while the extra judgments they can take, votes − 1 per match, fit
in ``share`` (2/3) of the budget beyond one judgment per match. At 2(n − 1) that is the last ⌊(n − 1)/3⌋ matches at
most (the semifinals and the final at N=16), at 4(n − 1) every round; the duels get the rest. In
``experiments.bench_strategies`` at N=16 (1,000 trials, seeds 0 / 1) this took top-1 at 30 judgments from
0.952 / 0.948 to 0.968 / 0.954 with four correct answers (``b``) and from 0.670 / 0.674 to 0.686 / 0.689 with two
(``few-right``), at 60 from 0.985 / 0.986 to 0.990 / 0.993 (``b``) and from 0.829 / 0.815 to 0.851 / 0.852
(``few-right``), and the sequential rounds from 12 to 10.5 and from 27 to 19; graded candidates keep 0.916 / 0.925
at 30 (``a``, was 0.914 / 0.929) and lose a little at 60, where fewer duels are left (``a``: 0.983 / 0.994, was
0.993 / 0.992; ``soft``: 0.820 / 0.820, was 0.832 / 0.834). Voting the quarterfinals too at 30, or only the final,
did worse (``a``: 0.882 and 0.905 against 0.912, 400 trials).

Duels. Each round fits the scores, takes the leader h (highest score, lower index on ties) and its challengers:
every c with (s_h − s_c) / se(s_h − s_c) < ``z`` (not yet separated), and proposes ``batch`` matches (default
max(2, ⌊n/8⌋)). Each of them goes to the challenger that is least separated *counting the matches already chosen
this round*: choosing h–c shrinks the covariance by that match's Fisher information σ'(s_h − s_c) (a rank-one
Sherman–Morrison update), so a close rival gets several matches of a round and a far one none, in the proportions
best-arm identification wants (about 1/gap²), instead of one each. A rematch is fine: the voting layer gives it a
fresh vote index and alternates the positions.

Spread. Two candidates the judge rates equal (two correct answers, or two wrong ones that both reached the final)
are never separated, so "least separated" alone gives such a pair every duel that is left while a better candidate
that lost one unlucky early match is never asked again. Each earlier match of a pair therefore adds 1/``spread``
standard error to its distance (default 24: after 24 duels a rival counts one standard error further away). In
``experiments.bench_strategies`` at N=16 and 60 judgments (seed 0, 1,000 trials; a warm-up of single judgments) this
took top-1 from 0.730 to 0.809 with two correct answers among 16 (``few-right``), from 0.967 to 0.985 with four
(``b``), and from 0.985 to 0.990 on graded candidates (``a``); 12 spread exploration too thin for near-copies of the
best (``dupes``: 0.56 vs 0.59).

Stopping. ``done()`` once no challenger is left (the top is separated) or the budget is spent. ``budget`` counts
matches (judgments with one vote) and is never exceeded; the default is 3(n − 1).

Where it falls short (``experiments.bench_strategies``, N=16, 30 judgments, scenario ``a``, seed 0): after the
warm-up the leader is the best candidate in 778 of 1,000 trials; the duels recover 142 of the other 222 and lose 4.
In the 80 misses the best fell to a single vote in round 1 (24) or the quarterfinals (34), or in a voted semifinal
(17) or final (5), and the typical trial spends most duels on two adjacent candidates (75 / 25) while the best, one
loss behind, gets none. Every rule tried that moves duels from such a pair to the lone loser lost as much elsewhere
(top-1 in ``a`` / ``b`` at 30, seeds 0 / 1; this module: 0.916 / 0.925, 0.968 / 0.954): challenger by upper bound
s_c + β·se (β = 1: 0.886 / 0.912, 0.967 / 0.959); a bonus for pairs not yet played (0.25 se: 0.903 / 0.919, 0.965 /
0.960); value P(c ahead) × the share of se one duel removes (0.906 / 0.919, 0.961 / 0.947); top-two Thompson
sampling on the Laplace posterior (0.908 / 0.919, 0.965 / 0.951); a one-step lookahead on P(right pick) (0.821 /
0.844, 0.937 / 0.920); every second match between the two least separated challengers instead (0.897 / 0.906,
0.964 / 0.960); picking by P(best) under the posterior instead of the MAP (0.918 / 0.927, 0.960 / 0.949);
spread 12 or 48, prior 1 or 0.1, batch 4, the final best of 5, every warm-up round voted (``share`` 1: 0.887 /
0.906, 0.964 / 0.971): none better on both. The loss is early: with an oracle that lets the best win every
round-1 match it meets, top-1 in ``a`` (seed 0) is 0.940, and round 1 and the quarterfinals, 0.971. Voting the
quarterfinals too trades one scenario for the other (over seeds 0-5: ``a`` 0.896, ``b`` 0.962, against 0.917 and
0.956), and rematches of the leader with its round-1 and quarterfinal victims lose in both (0.906 / 0.921, 0.953 /
0.954).

Over seeds 0-5 (``--seed S --sizes 16 --scenarios a,b``) this module averages 0.917 in ``a`` and 0.956 in ``b`` at
30 judgments (per seed 0.907-0.930 and 0.945-0.968); one-judgment rounds of duels (``batch`` 1: each duel chosen
after the last is back) average 0.921 and 0.959, but take 1.5-1.7x the sequential rounds (16.0 against 10.5 at 30,
33.6 against 19.6 at 60, ``a``), which a run over few prompts waits for; kept at 2. With it, an empirical-Bayes
prior (the precision of largest Laplace evidence from 0.1-1 at every fit) takes ``b`` to 0.961 and ``a`` to 0.915: a
knockout's outcomes say nothing about how spread the candidates are (a tree has no upsets to see), so the evidence
favours a tight prior in both. More warm-ups and picks on the same six seeds (``a`` / ``b`` at 30) land on the same
line, more of one scenario for less of the other: the quarterfinal losers' own knockout beside the semifinals (a
repechage, 3 judgments) 0.905 / 0.959, the round-1 losers' 0.855 / 0.931; one or two Swiss rounds instead of the
bracket 0.913 / 0.956, 0.890 / 0.944; the final pick on a looser or a tighter prior than the duels' (0.1: 0.920 /
0.952; 1: 0.911 / 0.958) or on the prior of largest evidence (0.905 / 0.957).

Why nothing moves both: at 30 judgments this module is where a policy that *knows* the scenario gets. In ``b`` the
exact posterior over the correct candidates with KG* pair choice (``experiments.bayes_reference``) has top-1 0.962
at seeds 0 and 1, and this module's own judgments scored by that posterior are worth 0.962 / 0.961 (its pick is
within 0.002 of the posterior's); in ``a`` a particle posterior over rank assignments after the bracket reached
0.915 / 0.931 (expected 0.924 / 0.928). The reference plays as this module does: ~95 % of its calls involve the
leader, and its best-vs-second pair is asked ~5 times.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import expit

from strategies.base import Match, check_probability, rank_by_scores
from strategies.bradley_terry import laplace_fit
from strategies.knockout import Knockout
from strategies.voting import votes_to_decide


class LUCB:
    """A knockout, then leader-versus-challengers duels on Bradley–Terry scores until the top is separated."""

    def __init__(
        self,
        n: int,
        seed: int = 0,
        budget: int | None = None,
        z: float = 3.0,
        batch: int | None = None,
        prior: float = 0.3,
        spread: float = 24.0,
        votes: int = 3,
        share: float = 2 / 3,
    ) -> None:
        """Prepare a run over ``n`` candidates; ``budget`` caps matches, ``z`` is the separation in standard errors;
        the warm-up's last rounds are best of ``votes`` while that can take at most ``share`` of the spare budget."""
        if n < 1:
            raise ValueError(f"need at least one candidate, got n={n}")
        if budget is not None and budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        if prior <= 0:
            raise ValueError(f"prior must be > 0, got {prior}")
        if spread <= 0:
            raise ValueError(f"spread must be > 0, got {spread}")
        if votes < 1 or votes % 2 == 0:
            raise ValueError(f"votes must be odd and >= 1, got {votes}")
        self.n, self.z, self.prior, self.spread = n, z, prior, spread
        self.cap = 3 * (n - 1) if budget is None else int(budget)
        self.batch = max(2, n // 8) if batch is None else max(1, int(batch))
        self.bracket = Knockout(n, seed=seed)
        self._round_votes = self._warm_up_votes(votes, share)  # by bracket round (index 0 unused)
        self._bracket_id: dict[int, int] = {}  # our match id -> bracket match id, for the warm-up judgments
        self._open: dict[int, tuple[Match, list[int]]] = {}  # bracket match id -> (it, our ids of its judgments)
        self._i: list[int] = []
        self._j: list[int] = []
        self._p: list[float] = []
        self._got: set[int] = set()
        self._separated = n <= 1
        self._fit: tuple[np.ndarray, np.ndarray, int, np.ndarray] | None = None  # scores, cov, leader, gaps
        self._last: np.ndarray | None = None  # the scores that chose the last duels: the next fit starts there
        # Soft wins of the matches 0.._folded-1 (``pair_wins``, summed in match order), folded in as they complete.
        self._wins = np.zeros((n, n))
        self._folded = 0
        self._played = np.zeros((n, n), dtype=np.int64)  # matches proposed per pair, kept as they are added

    def _warm_up_votes(self, votes: int, share: float) -> list[int]:
        """Judgments per bracket match, by round: ``votes`` for the last rounds, from the final back, while the extra
        judgments they can take fit in ``share`` of the budget over one per match; 1 for the others."""
        rounds = self.bracket.rounds
        per_round = [0] * (rounds + 1)
        for m in range(self.n - 1):
            per_round[self.bracket.round_of(m)] += 1
        out, spare, extra = [1] * (rounds + 1), share * (self.cap - (self.n - 1)), 0
        for r in range(rounds, 0, -1):
            extra += (votes - 1) * per_round[r]
            if extra > spare + 1e-9:  # 2/3 of 3(n − 1) is 2(n − 1), whatever the rounding
                break
            out[r] = votes
        return out

    def _outstanding(self) -> int:
        """Matches proposed but not received."""
        return len(self._i) - len(self._got)

    def _warming_up(self) -> bool:
        """True while the knockout warm-up has matches to play within the budget."""
        return not self.bracket.done() and len(self._i) < self.cap

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
        """BT scores and covariance from the received outcomes, the leader and the gaps to it (``_gaps``), cached
        until the next outcome."""
        if self._fit is None:
            while self._folded in self._got:  # fold in the received matches that extend the prefix, in match order
                k = self._folded
                self._wins[self._i[k], self._j[k]] += self._p[k]
                self._wins[self._j[k], self._i[k]] += 1.0 - self._p[k]
                self._folded += 1
            wins = self._wins
            if len(self._got) > self._folded:  # some outcome is back before an earlier one (mid-round): add it aside
                wins = wins.copy()
                for k in sorted(self._got):
                    if k >= self._folded:
                        wins[self._i[k], self._j[k]] += self._p[k]
                        wins[self._j[k], self._i[k]] += 1.0 - self._p[k]
            # Warm-started from the fit that chose the last duels: the optimum is unique, so only the number of steps
            # changes (and the last bits, so the start never depends on when else someone asked for scores).
            s, cov = laplace_fit(wins, self.prior, start=self._last)
            h = self._leader(s)
            self._fit = s, cov, h, self._gaps(s, cov, h)
        return self._fit

    def challengers(self) -> tuple[int, list[int]]:
        """Return the leader and the candidates not yet separated from it, least separated first."""
        h, gap = self._fitted()[2:]
        return h, [c for c in np.argsort(gap, kind="stable").tolist() if c != h and gap[c] < self.z]

    @staticmethod
    def _leader(s: np.ndarray) -> int:
        """The highest score, the lower index among ties (``rank_by_scores(s)[0]``: argmax takes the first)."""
        return int(np.argmax(np.round(s, 9)))

    @staticmethod
    def _gaps(s: np.ndarray, cov: np.ndarray, h: int) -> np.ndarray:
        """Each candidate's gap to the leader ``h`` in standard errors (+inf for ``h`` itself), at 9 decimals: rivals
        with the same record are tied exactly (lower index first), not by the solver's rounding noise."""
        se = np.sqrt(np.maximum(cov[h, h] + np.diagonal(cov) - 2.0 * cov[h], 1e-12))
        gap = ((s[h] - s) / se).round(9)
        gap[h] = np.inf
        return gap

    def _opponents(self, h: int) -> np.ndarray:
        """How many matches so far each candidate played against ``h``."""
        return self._played[h].copy()

    def _add(self, i: int, j: int) -> Match:
        """Register a new match."""
        m = Match(id=len(self._i), i=i, j=j)
        self._i.append(i)
        self._j.append(j)
        self._played[i, j] += 1
        self._played[j, i] += 1
        self._p.append(float("nan"))
        return m

    def _duels(self, count: int) -> list[Match]:
        """``count`` matches of the leader, each against the challenger least separated given the ones before, its
        distance raised by 1/``spread`` standard error for every earlier match of the pair (see the module doc)."""
        s, cov, h, gap = self._fitted()  # the scores and the leader do not move within a round, only the covariance
        self._last = s
        played = self._opponents(h)
        out: list[Match] = []
        while len(out) < count:
            key = np.where(gap < self.z, gap + played / self.spread, np.inf).round(9)
            c = int(np.argmin(key))  # first of the least separated: lower index on ties
            if not key[c] < np.inf:
                break
            out.append(self._add(h, c))
            played[c] += 1
            if len(out) == count:
                break  # the covariance after the last match of the round is not needed
            # What this match will tell: its Fisher information shrinks the covariance along e_h − e_c.
            w = float(expit(s[h] - s[c]))
            w *= 1.0 - w
            u = cov[:, h] - cov[:, c]
            cov = cov - np.outer(u, u) * (w / (1.0 + w * (u[h] - u[c])))
            gap = self._gaps(s, cov, h)
        return out

    def propose(self) -> list[Match]:
        """Return the next round: the bracket's ready matches first, then the leader against its challengers."""
        left = self.cap - len(self._i)
        if self._warming_up():
            for m in self.bracket.propose():
                self._open[m.id] = m, []
            out = []
            for bracket_id, (m, mine) in self._open.items():
                if any(k not in self._got for k in mine):
                    continue  # its judgments so far are not all back
                for _ in range(min(self._need(bracket_id), self.cap - len(self._i))):
                    match = self._add(m.i, m.j)
                    self._bracket_id[match.id] = bracket_id
                    mine.append(match.id)
                    out.append(match)
            return out
        if self._outstanding() or self._separated or left <= 0:
            return []
        out = self._duels(min(self.batch, left))
        self._separated = not out
        return out

    def receive(self, match_id: int, p_i: float) -> None:
        """Record P(i beats j) for a proposed match."""
        p = check_probability(p_i)
        if not 0 <= match_id < len(self._i) or match_id in self._got:
            raise ValueError(f"unknown or already received match id {match_id}")
        self._p[match_id] = p
        self._got.add(match_id)
        self._fit = None
        bracket_id = self._bracket_id.get(match_id)
        if bracket_id is not None and all(k in self._got for k in self._open[bracket_id][1]):
            if self._need(bracket_id) == 0:
                mine = self._open.pop(bracket_id)[1]
                self.bracket.receive(bracket_id, math.fsum(self._p[k] for k in mine) / len(mine))

    def _need(self, bracket_id: int) -> int:
        """The fewest more judgments that could decide a warm-up match (0: decided), its outcomes all back."""
        mine = self._open[bracket_id][1]
        lead = math.fsum(2.0 * self._p[k] - 1.0 for k in mine)  # wins of i minus wins of j
        return votes_to_decide(abs(lead), self._round_votes[self.bracket.round_of(bracket_id)] - len(mine))

    def done(self) -> bool:
        """True once the top is separated or the budget is spent, with every outcome back."""
        if self._outstanding() or self._warming_up():
            return False
        if self._separated or len(self._i) >= self.cap:
            return True
        if not (self._fitted()[3] < self.z).any():  # no challenger left
            self._separated = True
        return self._separated

    def scores(self) -> np.ndarray:
        """Bradley–Terry MAP log-strengths from the outcomes so far."""
        return self._fitted()[0].copy()

    def ranking(self) -> list[int]:
        """Candidates best first by score (ties by lower index)."""
        return rank_by_scores(self.scores())

    def budget(self) -> int:
        """The match budget: never exceeded."""
        return self.cap if self.n > 1 else 0
