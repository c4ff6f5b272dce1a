"""``tourney sample``: N responses per prompt from a policy model, cached, in the rows rank and pairs read."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from typing import Any

import click

from tourney.cli import CONSOLE, options
from tourney.cli.checks import (
    check_backend_options,
    check_dry_run,
    check_files,
    check_run_options,
    given_options,
    jsonl_output,
)
from tourney.cli.judging import closing, log_path
from tourney.console import plural, vllm_logs_off_stdout
from tourney.errors import BackendError


@click.command("sample")
@options.apply_to([
    options.INPUT,
    options.OUTPUT(),
    options.LIMIT(),
    click.option("--policy", default="smollm2", show_default=True,
                 help="Policy model: 'smollm2' (built in), a model directory or hub id, or a served model name."),
    click.option("-n", "n", type=click.IntRange(min=2), default=4, show_default=True,
                 help="Samples per prompt (at least 2: pairs and rankings need two)."),
    click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                 help="Sampling temperature (> 0: greedy decoding would give N equal samples)."),
    click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True,
                 help="Nucleus sampling: keep the smallest set of tokens whose probability reaches this."),
    click.option("--max-tokens", type=click.IntRange(min=1), default=512, show_default=True,
                 help="New tokens per sample."),
    options.SEED(help="Run seed; sample k of a prompt uses a seed derived from (seed, prompt, k)."),
    *options.SERVER,
    *options.RAY,
    *options.RETRIES,
    options.API_KEY,
    *options.VLLM,
    click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                 help="Requests per backend call; each call's samples are committed to the cache at once."),
    click.option("--cache", "cache_path", default=None,
                 help="Sample cache (SQLite). Default: samples.sqlite in $TOURNEY_CACHE_DIR or ~/.cache/tourney."),
    options.NO_CACHE(help="Do not read or write the sample cache."),
    options.SUMMARY(),
    options.DRY_RUN(help="Print how many samples the run would ask for and how many are cached; check every prompt "
                         "against the policy's context (no model is started)."),
    options.QUIET(help="No progress bar and no closing summary line (warnings and errors still show)."),
    options.VERBOSE(),
])  # fmt: skip
def sample_cmd(**opts: Any) -> None:
    """Sample N responses per prompt from a policy; writes rows with 'responses' that rank and pairs read."""
    from tourney.config import JudgeConfig, make_backend, parse_engine_args
    from tourney.io import dumps, input_name, write_all
    from tourney.sample import SampleCache, default_samples_path, read_prompts, sample

    CONSOLE.quiet = opts["quiet"]
    CONSOLE.interrupted = "nothing is cached: --no-cache" if opts["no_cache"] else "samples so far are cached"
    given = given_options()
    check_backend_options(opts, given)
    check_dry_run(opts, given, ("output", "summary_path"))
    check_run_options(opts, given)
    cfg = JudgeConfig(opts["policy"], backend=opts["backend"], mode="lockstep", seed=opts["seed"], dtype=opts["dtype"],
                      max_model_len=opts["max_model_len"], tensor_parallel_size=opts["tensor_parallel_size"],
                      gpu_memory_utilization=opts["gpu_memory_utilization"],
                      engine_kwargs=parse_engine_args(opts["engine_args"]), base_urls=tuple(opts["base_urls"]),
                      concurrency=opts["concurrency"], max_retries=opts["max_retries"], timeout=opts["timeout"],
                      api_key_env=opts["api_key_env"], replicas=opts["replicas"],
                      ray_address=opts["ray_address"], replica_timeout=opts["replica_timeout"])  # fmt: skip
    rows = read_prompts(opts["input_path"], opts["limit"])
    jsonl_output(opts, "sample")
    outputs = {} if opts["dry_run"] else {"--output": opts["output"], "--summary": opts["summary_path"]}
    check_files(opts, outputs, default_samples_path())
    logs = nullcontext() if opts["verbose"] else CONSOLE.logs_to(log_path())  # entered once: dry run or run
    if opts["dry_run"]:
        with logs:  # Ray's notices, the tokenizer's
            dry_run(opts, cfg, rows)
        return
    cache = None if opts["no_cache"] else SampleCache(opts["cache_path"] or default_samples_path())
    vllm_logs_off_stdout()
    try:
        with logs:  # the engine's start and its shutdown alike (vLLM logs both)
            backend = make_backend(cfg)
            with closing(backend, backend):
                identity = backend.identity()
                if hasattr(backend, "fit_prompts"):  # an in-process engine: a context the prompts + --max-tokens need
                    fit_lengths(rows, backend, opts["input_path"], opts["max_tokens"])
                with CONSOLE.progress(len(rows) * opts["n"], doing="sampling") as bar:
                    progress = bar.advance
                    if hasattr(backend, "pool"):  # a server: its retries are said until samples come back
                        progress = waiting_on_server(backend.pool, bar)
                    out, stats = sample(rows, backend, opts["n"], temperature=opts["temperature"],
                                        top_p=opts["top_p"], max_tokens=opts["max_tokens"], seed=opts["seed"],
                                        cache=cache, batch_size=opts["batch_size"], progress=progress,
                                        status=bar.phase)  # fmt: skip
    except BackendError as err:
        where = "" if opts["verbose"] else f" (log: {log_path()})"
        raise click.ClickException(f"policy failed: {err}{where}") from None
    finally:
        if cache:
            cache.close()
    files = [(opts["output"], [dumps(r) for r in out])]
    if opts["summary_path"]:
        summary = stats.as_dict() | {"policy": identity, "n": opts["n"], "seed": opts["seed"],
                                     "wall_s": round(CONSOLE.elapsed(), 3)}  # fmt: skip
        files.append((opts["summary_path"], [json.dumps(summary, indent=2, ensure_ascii=False)]))
    write_all(files)
    if not rows:
        CONSOLE.warn(f"{input_name(opts['input_path'])} has no prompts: nothing to sample")
    CONSOLE.say(f"tourney: {plural(stats.samples, 'sample')} ({stats.cached} cached, {stats.generated} generated), "
                f"{plural(stats.backend_calls, 'backend call')}, {CONSOLE.elapsed():.1f} s")  # fmt: skip


def waiting_on_server(pool: Any, bar: Any) -> Any:
    """Say each retry of the server while no sample has come back (a wrong URL, a server still loading: not waited
    on in silence, as a judge's is not); return the progress hook that ends it."""
    state = {"back": False}
    pool.on_retry = lambda text: None if state["back"] else bar.note(text)

    def advance(n: int) -> None:
        state["back"] = True
        bar.advance(n)

    return advance


def fit_lengths(rows: list[Any], backend: Any, path: str, max_tokens: int, fit: bool = True) -> None:
    """Before the engine starts: a prompt the policy's context cannot hold is an InputError at its line (exit 2),
    as a judge's is, not a failure after vLLM's start-up; else (``fit``) the engine's context is sized to the longest
    prompt plus ``max_tokens`` (each prompt rendered once for both)."""
    from tourney.api import context_hint
    from tourney.errors import InputError
    from tourney.io import input_name

    texts = [backend.render(r.chat()) for r in rows]
    over = backend.too_long(texts)
    if over:
        k, n = over[0]
        limit = backend.context_limit()
        why = (
            f"the prompt has {n} tokens; the policy's context is {limit} ({context_hint(backend, n + 1, 'shorten it')})"
        )
        raise InputError(why, input_name(path), rows[k].line, "prompt")
    if fit:
        backend.fit_prompts(texts, max_tokens)


def dry_run(opts: dict[str, Any], cfg: Any, rows: list[Any]) -> None:
    """Print how many samples a run would make and how many the cache has; with Ray, the cluster's placement; check
    every prompt against an in-process policy's context, as the run does. No model starts (only its tokenizer)."""
    from tourney.backends.base import Sampling
    from tourney.config import make_backend
    from tourney.sample import SampleCache, cached_samples, default_samples_path

    if cfg.backend != "openai":  # the policy must name a model, as a run checks it (nothing is loaded)
        from tourney.models import resolve_model

        resolve_model(cfg.judge, convert=False)
    if cfg.backend == "ray":  # the cluster and where each replica would go
        from tourney.backends.ray import check_cluster

        for line in check_cluster(cfg.ray_address, cfg.replicas, cfg.tensor_parallel_size):
            CONSOLE.say(line)
    cached, path = 0, opts["cache_path"] or default_samples_path()
    backend = None
    try:
        backend = make_backend(cfg)
        if hasattr(backend, "fit_prompts"):
            fit_lengths(rows, backend, opts["input_path"], opts["max_tokens"], fit=False)
        if not opts["no_cache"] and os.path.exists(path):
            store = SampleCache(path)
            try:
                sampling = Sampling(opts["temperature"], opts["top_p"], opts["max_tokens"])
                cached = cached_samples(rows, backend.identity(), opts["n"], sampling, opts["seed"], store)
            finally:
                store.close()
    except BackendError as err:
        raise click.ClickException(f"policy failed: {err}") from None
    finally:
        if backend is not None:
            backend.close()
    total = len(rows) * opts["n"]
    click.echo(json.dumps({"prompts": len(rows), "samples": total, "new": total - cached, "cached": cached}))
