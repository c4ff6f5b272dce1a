"""Pure tournament algorithms: they propose matches and receive outcomes, and never call a model.

One module per family; add a strategy by writing one module and one line in ``STRATEGIES``.
"""

from strategies.adaptive_knockout import AdaptiveKnockout
from strategies.base import Match, Strategy, rank_by_scores
from strategies.bradley_terry import bt_bootstrap, bt_fit
from strategies.elo import elo_ratings
from strategies.knockout import Knockout
from strategies.lucb import LUCB
from strategies.registry import STRATEGIES, make_strategy, make_tournament
from strategies.round_robin import RoundRobin
from strategies.swiss import Swiss
from strategies.voting import AdaptiveVoting, Vote, Voting

__all__ = [
    "LUCB",
    "STRATEGIES",
    "AdaptiveKnockout",
    "AdaptiveVoting",
    "Knockout",
    "Match",
    "RoundRobin",
    "Strategy",
    "Swiss",
    "Vote",
    "Voting",
    "bt_bootstrap",
    "bt_fit",
    "elo_ratings",
    "make_strategy",
    "make_tournament",
    "rank_by_scores",
]
