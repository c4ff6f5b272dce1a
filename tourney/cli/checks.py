"""Option checks every command shares: contradictory or ignored options are errors naming both (exit 2).

They run before any input is read or model loaded.
"""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from tourney.errors import InputError

VLLM_ONLY = ("dtype", "max_model_len", "tensor_parallel_size", "gpu_memory_utilization", "engine_args")
RAY_ONLY = ("replicas", "ray_address", "replica_timeout")
MODEL_ONLY = ("family", "verdict", "max_tokens", "temperature", "top_p", "backend", *VLLM_ONLY, *RAY_ONLY,
              "base_urls", "concurrency", "max_retries", "api_key_env", "timeout")  # fmt: skip
SIM_ONLY = ("sim_tau", "sim_position_bias", "sim_invalid_rate", "sim_latency")
OPENAI_ONLY = ("base_urls", "concurrency", "max_retries", "api_key_env", "timeout")


def given_options() -> set[str]:
    """The options the user set on the command line (not defaults)."""
    ctx = click.get_current_context()
    return {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}


def flag(name: str) -> str:
    """The option's long flag as the user types it (``base_urls`` -> ``--base-url``)."""
    for param in click.get_current_context().command.params:
        if param.name == name:
            return max(param.opts, key=len)
    return name


def clash(a: str, b: str, why: str) -> InputError:
    """The one-line error for option ``a`` against ``b``, as the user typed them."""
    return InputError(f"{flag(a)} {why} {b}")


def check_judge_options(opts: dict[str, Any], given: set[str], strategy: str) -> None:
    """The checks of the tournament commands: simulator vs model options, strategy options, dry-run outputs."""
    from strategies.registry import strategy_options

    simulated = opts["judge"] == "simulated"
    for name in sorted(given):
        if simulated and name in MODEL_ONLY:
            raise clash(name, "--judge simulated", "has no effect with")
        if not simulated and name in SIM_ONLY:
            raise clash(name, "--judge simulated", "only applies to")
    if not simulated:
        check_backend_options(opts, given)
    accepts = strategy_options(strategy)
    for name in ("rating", "elo_k"):
        if name in given and name not in accepts:
            raise clash(name, f"--strategy {strategy}", "has no effect with")
    if "elo_k" in given and opts["rating"] != "elo":
        raise clash("elo_k", f"--rating {opts['rating']}", "has no effect with")
    if opts["adaptive_votes"] and opts["votes"] < 3:
        raise clash(
            "adaptive_votes", f"--votes {opts['votes']} (it needs 3 or more to stop early)", "has no effect with"
        )
    check_dry_run(opts, given, ("output", "judgments_path", "summary_path"))
    check_run_options(opts, given)


def jsonl_output(opts: dict[str, Any], command: str) -> None:
    """Refuse a Parquet name for ``-o`` of a command that writes JSONL: every reader would take it for Parquet."""
    from tourney.tables import parquet_name

    if parquet_name(opts["output"]):
        raise InputError(f"{command} writes JSONL (rank, pairs and train read it); name the output .jsonl", field="-o")


def check_files(opts: dict[str, Any], outputs: dict[str, str | None], default_cache: str) -> None:
    """Before any work: the outputs against each other, the input and the cache the run uses (``default_cache``
    unless --cache or --no-cache; only a given --cache must be in an existing folder)."""
    from tourney.io import check_outputs

    own = opts["cache_path"] is not None
    cache = None if opts["no_cache"] else opts["cache_path"] if own else default_cache
    check_outputs(outputs, opts["input_path"], cache, own)


def check_dry_run(opts: dict[str, Any], given: set[str], outputs: tuple[str, ...]) -> None:
    """Refuse output options with --dry-run, which writes nothing."""
    for name in outputs:
        if opts["dry_run"] and name in given:
            raise clash(name, "--dry-run (it writes nothing)", "has no effect with")


def check_backend_options(opts: dict[str, Any], given: set[str]) -> None:
    """Refuse engine options with --backend openai, server options without it, Ray options without --backend ray."""
    for name in sorted(given):
        if opts["backend"] == "openai" and name in VLLM_ONLY:
            raise clash(name, "--backend openai (the server sets it)", "has no effect with")
        if opts["backend"] != "openai" and name in OPENAI_ONLY:
            raise clash(name, "--backend openai", "only applies to")
        if opts["backend"] != "ray" and name in RAY_ONLY:
            raise clash(name, "--backend ray", "only applies to")


def check_run_options(opts: dict[str, Any], given: set[str]) -> None:
    """The checks every model command shares: cache and log options, and a server for --backend openai (each URL is
    checked by ``JudgeConfig``)."""
    if opts["no_cache"] and "cache_path" in given:
        raise clash("cache_path", "--no-cache", "contradicts")
    if opts["quiet"] and opts["verbose"]:
        raise clash("quiet", "--verbose", "contradicts")
    if opts["backend"] == "openai" and not opts["base_urls"] and opts.get("judge") != "simulated":
        raise InputError("--backend openai needs at least one --base-url", field="--base-url")
