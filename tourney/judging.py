"""Build the judge and the cache a command asks for (the one place that maps CLI options to backends)."""

from __future__ import annotations

from typing import Any

from tourney.cache import Cache, default_cache_path
from tourney.errors import InputError
from tourney.io import Item
from tourney.judges import Family
from tourney.types import Judge


def open_cache(path: str | None, disabled: bool) -> Cache | None:
    """Open the judgment cache at ``path`` (or the default), or return None when disabled."""
    if disabled:
        return None
    return Cache(path or default_cache_path())


def resolve_mode(opts: dict[str, Any]) -> str:
    """Pick lockstep or pipelined: model judges pipeline by default, the simulator steps in lockstep."""
    if opts["mode"] != "auto":
        return opts["mode"]
    return "lockstep" if opts["judge"] == "simulated" else "pipelined"


def family_for(opts: dict[str, Any]) -> Family | None:
    """The judge family a command will use (None for the simulator), found without loading any model."""
    from tourney.judges import detect_family, get_family

    if opts["judge"] == "simulated":
        return None
    if opts["family"]:
        return get_family(opts["family"])
    if opts["backend"] == "vllm":
        from tourney.models import resolve_model

        return get_family(resolve_model(opts["judge"], convert=False).family or detect_family(opts["judge"]))
    return get_family(detect_family(opts["judge"]))


def check_prompts(items: list[Item], family: Family | None, path: str) -> None:
    """Render every prompt with the family before any judging, so a prompt it cannot take fails with its line."""
    if family is None:
        return
    for item in items:
        if len(item.texts) < 2:
            continue
        try:
            family.render(item.prompt, "", "")
        except InputError as err:
            raise InputError(err.message, file=path, line=item.line, field="prompt") from None


def make_judge(opts: dict[str, Any], mode: str, family: Family | None) -> Judge:
    """Build a judge from command options (``family`` from ``family_for``): the simulator, vLLM, or servers."""
    name = opts["judge"]
    if name == "simulated":
        from tourney.simulated import SimulatedJudge

        return SimulatedJudge(opts["sim_tau"], opts["sim_position_bias"], opts["sim_invalid_rate"], opts["sim_latency"])
    sampling = {"max_tokens": opts["max_tokens"], "temperature": opts["temperature"], "top_p": opts["top_p"]}
    if opts["backend"] == "openai":
        if not opts["base_urls"]:
            raise InputError("--backend openai needs at least one --base-url", field="--base-url")
        from tourney.backends.openai import OpenAIJudge

        return OpenAIJudge(list(opts["base_urls"]), name, family, **sampling,
                           verdict=opts["verdict"], api_key_env=opts["api_key_env"],
                           concurrency=opts["concurrency"], max_retries=opts["max_retries"])  # fmt: skip
    if opts["base_urls"]:
        raise InputError("--base-url needs --backend openai", field="--base-url")
    from tourney.backends.vllm import VLLMJudge

    return VLLMJudge(name, family, **sampling, verdict=opts["verdict"], dtype=opts["dtype"],
                     max_model_len=opts["max_model_len"], mode=mode, seed=opts["seed"])  # fmt: skip
