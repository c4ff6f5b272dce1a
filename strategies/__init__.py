"""Pure tournament algorithms: they propose matches and receive outcomes, and never call a model.

One module per family; add a strategy by writing one module and one line in ``STRATEGIES``.
"""

from strategies.base import Match, Strategy, rank_by_scores
from strategies.bradley_terry import bt_bootstrap, bt_fit
from strategies.elo import elo_ratings
from strategies.knockout import Knockout
from strategies.registry import STRATEGIES, make_strategy
from strategies.round_robin import RoundRobin
from strategies.voting import Vote, Voting

__all__ = [
    "STRATEGIES",
    "Knockout",
    "Match",
    "RoundRobin",
    "Strategy",
    "Vote",
    "Voting",
    "bt_bootstrap",
    "bt_fit",
    "elo_ratings",
    "make_strategy",
    "rank_by_scores",
]
