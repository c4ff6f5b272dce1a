"""What a sampling setting may be: the keys and ranges a family's ``[sampling]`` table is checked against.

The keys are the names of ``tourney.backends.base.Sampling``'s fields (but the per-request seed), which are vLLM's
``SamplingParams`` names; the ranges are the ones vLLM enforces, so a bad value is refused before anything loads.
A module of its own because judge families (``tourney.judges``) must not import the backends.
"""

from __future__ import annotations

import math
from typing import Any

# key: (low, high, whether low itself is allowed)
SAMPLING_RANGES: dict[str, tuple[float, float, bool]] = {
    "temperature": (0.0, float("inf"), True),
    "top_p": (0.0, 1.0, False),
    "max_tokens": (1, float("inf"), True),
    "repetition_penalty": (0.0, float("inf"), False),
    "presence_penalty": (-2.0, 2.0, True),
    "frequency_penalty": (-2.0, 2.0, True),
    "top_k": (-1, float("inf"), True),
    "min_p": (0.0, 1.0, True),
}
INT_FIELDS = ("max_tokens", "top_k")


def sampling_problem(key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for the sampling field ``key`` (None: nothing); a family's [sampling] uses it."""
    if key not in SAMPLING_RANGES:
        return f"unknown key '{key}'; known keys: {', '.join(SAMPLING_RANGES)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"'{key}' must be a number"
    if key in INT_FIELDS and not isinstance(value, int):
        return f"'{key}' must be an integer"
    low, high, closed = SAMPLING_RANGES[key]
    if not math.isfinite(value) or value > high or value < low or (value == low and not closed):
        return f"'{key}' is out of range: {value}"
    return None
