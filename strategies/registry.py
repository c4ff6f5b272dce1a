"""Strategies and ratings by name, for the CLI, the engine and the experiments.

Add a strategy: write its module, then add one line to ``STRATEGIES`` (name -> "module:Class"). Classes are imported
on first use, so listing the names (``tourney --help``) imports no algorithm, numpy or scipy.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strategies.base import Strategy
    from strategies.voting import Voting

RATINGS = ("elo", "bt")  # round robin's ratings: sequential Elo, Bradley–Terry MLE
ELO_K = 32.0  # the Elo K-factor's default, the standard chess value (strategies.elo says why)


class _Lazy(Mapping[str, Any]):
    """A name -> class mapping whose classes are imported when looked up."""

    def __init__(self, where: dict[str, str]) -> None:
        """``where``: name -> ``"module:Class"``."""
        self._where = where

    def __getitem__(self, name: str) -> Any:
        """Import and return the class registered as ``name``."""
        module, _, attr = self._where[name].partition(":")
        return getattr(importlib.import_module(module), attr)

    def __iter__(self) -> Iterator[str]:
        """The registered names, in registration order."""
        return iter(self._where)

    def __len__(self) -> int:
        """How many are registered."""
        return len(self._where)


STRATEGIES: Mapping[str, Any] = _Lazy({
    "round-robin": "strategies.round_robin:RoundRobin",
    "knockout": "strategies.knockout:Knockout",
    "lucb": "strategies.lucb:LUCB",
    "adaptive-knockout": "strategies.adaptive_knockout:AdaptiveKnockout",
    "swiss": "strategies.swiss:Swiss",
})  # fmt: skip

# The strategy a budget gets when no strategy is named: the smallest worst regret over the scenarios of
# experiments.bench_strategies (see the README's strategy guide).
BUDGETED_DEFAULT = "lucb"

__all__ = [
    "BUDGETED_DEFAULT", "RATINGS", "STRATEGIES", "budgeted", "make_strategy", "make_tournament", "strategy_options",
]  # fmt: skip


def strategy_options(name: str) -> set[str]:
    """The keyword options strategy ``name``'s constructor takes (an option it lacks would be ignored)."""
    return set(_options(name))


@functools.cache
def _options(name: str) -> frozenset[str]:
    """``strategy_options``, read once per name: ``inspect.signature`` costs more than building a small strategy."""
    return frozenset(inspect.signature(STRATEGIES[name]).parameters)


def budgeted() -> list[str]:
    """The strategies that take a judge-call budget, in registration order."""
    return [name for name in STRATEGIES if "budget" in strategy_options(name)]


def make_strategy(
    name: str, n: int, *, rating: str = "elo", seed: int = 0, elo_k: float = ELO_K, budget: int | None = None
) -> Strategy:
    """Build strategy ``name`` over ``n`` candidates, passing only the options its constructor accepts.

    ``budget`` is the number of matches the strategy may propose; strategies without one ignore it.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    accepted = _options(name)
    options = {"rating": rating, "seed": seed, "elo_k": elo_k, "budget": budget}
    return STRATEGIES[name](n, **{key: value for key, value in options.items() if key in accepted})


def make_tournament(
    name: str,
    n: int,
    *,
    rating: str = "elo",
    seed: int = 0,
    elo_k: float = ELO_K,
    votes: int = 1,
    adaptive_votes: bool = False,
    budget: int | None = None,
) -> Voting:
    """Build what the engine drives for one prompt: strategy ``name`` wrapped in its votes.

    ``budget`` counts judgments (every vote) for this prompt and is never exceeded. With fixed votes each match costs
    ``votes`` judgments, so the strategy may propose ⌊budget / votes⌋ matches; with ``adaptive_votes`` (stop once the
    majority of ``votes`` is decided) a match costs at least ⌊votes/2⌋ + 1, so the strategy may propose
    ⌊budget / (⌊votes/2⌋ + 1)⌋ matches and the voting layer keeps the total within ``budget``. A strategy without a
    budget option (knockout, round-robin) whose fixed size exceeds the budget is an error (``ValueError``), and so is a
    budget under a budgeted strategy's ``min_budget(n)`` matches (one Swiss round, one judgment per bracket match).
    """
    from strategies.voting import AdaptiveVoting, Voting

    if budget is not None and budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    per_match = votes // 2 + 1 if adaptive_votes else votes
    least = getattr(STRATEGIES[name], "min_budget", None) if name in STRATEGIES else None  # floors of budgeted ones
    if budget is not None and least is not None and least(n) * per_match > budget:
        raise ValueError(
            f"strategy {name!r} needs at least {least(n) * per_match} judgments for {n} candidates, over the budget"
            f" of {budget}"
        )
    inner = make_strategy(
        name, n, rating=rating, seed=seed, elo_k=elo_k, budget=None if budget is None else budget // per_match
    )
    if budget is not None and inner.budget() * per_match > budget:
        raise ValueError(
            f"strategy {name!r} needs {inner.budget() * per_match} judgments for {n} candidates"
            f"{' at the fewest' if adaptive_votes else ''}, over the budget of {budget}"
        )
    if adaptive_votes:
        return AdaptiveVoting(inner, k=votes, seed=seed, budget=budget)
    return Voting(inner, k=votes, seed=seed)
