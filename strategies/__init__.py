"""Pure tournament algorithms: they propose matches and receive outcomes, and never call a model.

One module per family; add a strategy by writing one module and one line in ``strategies.registry.STRATEGIES``.
Names are imported on first use (PEP 562), so ``import strategies`` costs nothing until an algorithm is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AdaptiveKnockout": "adaptive_knockout",
    "Match": "base",
    "Strategy": "base",
    "rank_by_scores": "base",
    "bt_bootstrap": "bradley_terry",
    "bt_fit": "bradley_terry",
    "elo_ratings": "elo",
    "Knockout": "knockout",
    "LUCB": "lucb",
    "RATINGS": "registry",
    "STRATEGIES": "registry",
    "make_strategy": "registry",
    "make_tournament": "registry",
    "RoundRobin": "round_robin",
    "Swiss": "swiss",
    "AdaptiveVoting": "voting",
    "Vote": "voting",
    "Voting": "voting",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import ``name`` from its module on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'strategies' has no attribute {name!r}")
    return getattr(importlib.import_module(f"strategies.{_WHERE[name]}"), name)
