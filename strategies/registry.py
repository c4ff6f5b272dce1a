"""Strategies by name, for the CLI and the engine."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from strategies.adaptive_knockout import AdaptiveKnockout
from strategies.base import Strategy
from strategies.knockout import Knockout
from strategies.lucb import LUCB
from strategies.round_robin import RATINGS, RoundRobin
from strategies.swiss import Swiss
from strategies.voting import AdaptiveVoting, Voting

STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "round-robin": RoundRobin,
    "knockout": Knockout,
    "swiss": Swiss,
    "lucb": LUCB,
    "adaptive-knockout": AdaptiveKnockout,
}

__all__ = ["RATINGS", "STRATEGIES", "make_strategy"]


def make_strategy(
    name: str, n: int, *, rating: str = "elo", seed: int = 0, elo_k: float = 32.0, budget: int | None = None
) -> Strategy:
    """Build strategy ``name`` over ``n`` candidates, passing only the options its constructor accepts.

    ``budget`` is the number of matches the strategy may propose; strategies without one ignore it.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    factory = STRATEGIES[name]
    accepted = inspect.signature(factory).parameters
    options = {"rating": rating, "seed": seed, "elo_k": elo_k, "budget": budget}
    return factory(n, **{key: value for key, value in options.items() if key in accepted})


def make_tournament(
    name: str,
    n: int,
    *,
    rating: str = "elo",
    seed: int = 0,
    elo_k: float = 32.0,
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
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    per_match = votes // 2 + 1 if adaptive_votes else votes
    least = getattr(STRATEGIES.get(name), "min_budget", None)  # budgeted strategies that need a floor
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
