"""Strategies by name, for the CLI and the engine."""

from __future__ import annotations

import inspect
from collections.abc import Callable

from strategies.base import Strategy
from strategies.knockout import Knockout
from strategies.round_robin import RATINGS, RoundRobin

STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "round-robin": RoundRobin,
    "knockout": Knockout,
}

__all__ = ["RATINGS", "STRATEGIES", "make_strategy"]


def make_strategy(name: str, n: int, *, rating: str = "elo", seed: int = 0, elo_k: float = 32.0) -> Strategy:
    """Build strategy ``name`` over ``n`` candidates, passing only the options its constructor accepts."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    factory = STRATEGIES[name]
    accepted = inspect.signature(factory).parameters
    options = {"rating": rating, "seed": seed, "elo_k": elo_k}
    return factory(n, **{key: value for key, value in options.items() if key in accepted})
