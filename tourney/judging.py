"""Build the judge and the cache a command asks for (the one place that maps CLI options to backends)."""

from __future__ import annotations

from typing import Any

from tourney.backends.base import Judge
from tourney.cache import Cache, default_cache_path
from tourney.errors import InputError


def open_cache(path: str | None, disabled: bool) -> Cache | None:
    """Open the judgment cache at ``path`` (or the default), or return None when disabled."""
    if disabled:
        return None
    return Cache(path or default_cache_path())


def make_judge(opts: dict[str, Any]) -> Judge:
    """Build a judge from command options: the simulator, the in-process vLLM engine or OpenAI-compatible servers."""
    name = opts["judge"]
    if name == "simulated":
        from tourney.backends.simulated import SimulatedJudge

        return SimulatedJudge(opts["sim_tau"], opts["sim_position_bias"], opts["sim_invalid_rate"], opts["sim_latency"])
    raise InputError(f"judge {name!r}: model judges need the vLLM backend (not built yet)", field="--judge")
