"""The data commands: ``tourney sample`` (a policy's samples, cached) and ``tourney pairs`` (DPO pairs from a judge).

Registered on the main group by the hook at the end of ``tourney/cli.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from typing import Any

import click

from tourney.cli import _judge_options, _progress, _record_line, _require_quality, check_prompts, judge_config
from tourney.config import BACKENDS
from tourney.errors import BackendError, InputError


@click.command("sample")
@click.argument("input_path", metavar="INPUT", type=str)
@click.option("-o", "--output", default="-", show_default=True, help="Output JSONL file ('-' = stdout).")
@click.option(
    "--policy",
    default="smollm2",
    show_default=True,
    help="Policy model: 'smollm2' (built in), a model directory or hub id, or a served model name.",
)
@click.option(
    "-n",
    "n",
    type=click.IntRange(min=2),
    default=4,
    show_default=True,
    help="Samples per prompt (at least 2: pairs and rankings need two).",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Sampling temperature (> 0: greedy decoding would give N equal samples).",
)
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=512, show_default=True, help="New tokens per sample.")
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Run seed; sample k of a prompt uses a seed derived from (seed, prompt, k).",
)
@click.option(
    "--backend",
    type=click.Choice(list(BACKENDS)),
    default="vllm",
    show_default=True,
    help="vllm: in-process engine; openai: OpenAI-compatible servers given by --base-url.",
)
@click.option("--base-url", "base_urls", multiple=True, metavar="URL", help="OpenAI-compatible endpoint (repeatable).")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Requests in flight per --base-url endpoint.",
)
@click.option(
    "--api-key-env",
    default="OPENAI_API_KEY",
    show_default=True,
    help="Environment variable holding the API key for --backend openai.",
)
@click.option("--dtype", default="auto", show_default=True, help="vLLM dtype (float32, bfloat16, auto).")
@click.option("--max-model-len", type=click.IntRange(min=16), default=None, help="vLLM context length.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Requests per backend call; each call's samples are committed to the cache at once.",
)
@click.option(
    "--cache",
    "cache_path",
    default=None,
    help="Sample cache (SQLite). Default: samples.sqlite in $TOURNEY_CACHE_DIR or ~/.cache/tourney.",
)
@click.option("--no-cache", is_flag=True, help="Do not read or write the sample cache.")
@click.option("--summary", "summary_path", default=None, help="Write run counters as JSON.")
@click.option("--dry-run", is_flag=True, help="Print how many samples the run would ask for; load no model.")
def sample_cmd(**opts: Any) -> None:
    """Sample N responses per prompt from a policy; writes rows with 'responses' that rank and pairs read."""
    from tourney.config import JudgeConfig, make_backend
    from tourney.io import check_writable, dumps, write_all
    from tourney.sample import SampleCache, default_samples_path, read_prompts, sample

    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    rows = read_prompts(opts["input_path"])
    outputs = [p for p in (opts["output"], opts["summary_path"]) if p]
    for path in outputs:
        check_writable(path)
    if sum(p == "-" for p in outputs) > 1:
        raise InputError("only one of -o and --summary can be '-' (stdout)", field="-o")
    if opts["backend"] == "openai" and not opts["base_urls"]:
        raise InputError("--backend openai needs at least one --base-url", field="--base-url")
    if opts["backend"] != "openai" and opts["base_urls"]:
        raise InputError("--base-url needs --backend openai", field="--base-url")
    if opts["dry_run"]:
        click.echo(json.dumps({"prompts": len(rows), "samples": len(rows) * opts["n"]}))
        return
    cfg = JudgeConfig(opts["policy"], backend=opts["backend"], mode="lockstep", seed=opts["seed"], dtype=opts["dtype"],
                      max_model_len=opts["max_model_len"], base_urls=tuple(opts["base_urls"]),
                      concurrency=opts["concurrency"], api_key_env=opts["api_key_env"])  # fmt: skip
    cache = None if opts["no_cache"] else SampleCache(opts["cache_path"] or default_samples_path())
    backend = None
    try:
        backend = make_backend(cfg)
        out, stats = sample(rows, backend, opts["n"], temperature=opts["temperature"], top_p=opts["top_p"],
                            max_tokens=opts["max_tokens"], seed=opts["seed"], cache=cache,
                            batch_size=opts["batch_size"])  # fmt: skip
    except BackendError as err:
        raise click.ClickException(f"policy failed: {err}") from None
    finally:
        if backend is not None:
            backend.close()
        if cache:
            cache.close()
    files = [(opts["output"], [dumps(r) for r in out])]
    if opts["summary_path"]:
        summary = stats.as_dict() | {"policy": backend.identity(), "n": opts["n"], "seed": opts["seed"]}
        files.append((opts["summary_path"], [json.dumps(summary, indent=2, ensure_ascii=False)]))
    write_all(files)


@click.command("pairs")
@_judge_options
@click.option(
    "--pairing",
    default="best-worst",
    show_default=True,
    help="best-worst, top-bottom:K (i-th best vs i-th worst, i < K) or all:MARGIN (every pair whose score "
    "gap >= MARGIN).",
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0, 1),
    default=None,
    help="Keep pairs whose direct votes favour chosen by at least this share (see README).",
)
@click.option("--rationale", is_flag=True, help="Add the judge's reasoning on each pair (its direct judgments).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "parquet"]),
    default="auto",
    show_default=True,
    help="auto: parquet when -o ends in .parquet, else JSONL.",
)
def pairs_cmd(**opts: Any) -> None:
    """Judge every prompt's responses and write DPO preference pairs (prompt, chosen, rejected + metadata)."""
    from tourney.cache import open_cache
    from tourney.config import make_judge, resolve_family
    from tourney.engine import Engine, plan
    from tourney.io import check_writable, dumps, read_items, write_all
    from tourney.pairs import PairStats, check_policy, distinct, make_pairs, parse_policy, rows_of, write_parquet_staged

    # Like _run in tourney/cli.py (vLLM logs off stdout, outputs checked, prompts rendered) before any judging.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    policy = parse_policy(opts["pairing"])
    parquet = opts["fmt"] == "parquet" or (opts["fmt"] == "auto" and opts["output"].endswith(".parquet"))
    if parquet and opts["output"] == "-":
        raise InputError("Parquet needs a file (-o PATH.parquet), not stdout", field="-o")
    items = read_items(opts["input_path"])
    outputs = [p for p in (opts["output"], opts["judgments_path"], opts["summary_path"]) if p]
    for path in outputs:
        check_writable(path)
    if sum(p == "-" for p in outputs) > 1:
        raise InputError("only one of -o, --judgments and --summary can be '-' (stdout)", field="-o")
    source = "<stdin>" if opts["input_path"] == "-" else opts["input_path"]
    check_policy(items, policy, source)
    strategy = opts["strategy"] or "round-robin"
    if opts["judge"] == "simulated":
        _require_quality(items, source)
    cfg = judge_config(opts)
    family = resolve_family(cfg)
    check_prompts(items, family, source)
    slim, index = zip(*(distinct(item) for item in items)) if items else ((), ())
    if opts["dry_run"]:
        count = plan(slim, strategy=strategy, votes=opts["votes"], seed=opts["seed"])
        click.echo(json.dumps({"prompts": len(items), "judgments": count, "strategy": strategy}))
        return
    cache = open_cache(opts["cache_path"], opts["no_cache"])
    judge = make_judge(cfg, family)
    try:
        with _progress(opts["quiet"]) as bar:
            engine = Engine(judge, strategy=strategy, rating=opts["rating"], votes=opts["votes"], seed=opts["seed"],
                            cache=cache, keep_records=True, elo_k=opts["elo_k"])  # fmt: skip
            engine.progress = bar(plan(slim, strategy=strategy, votes=opts["votes"], seed=opts["seed"]))
            mode = cfg.engine_mode()
            results = asyncio.run(engine.arun(slim)) if mode == "pipelined" else engine.run(slim)
    finally:
        judge.close()
        if cache:
            cache.close()
    # Pairing itself: the part that is not _run's.
    stats = PairStats()
    pairs = make_pairs(results, index, items, policy, min_confidence=opts["min_confidence"],
                       rationale=opts["rationale"], stats=stats)  # fmt: skip
    rows = rows_of(pairs, opts["rationale"])
    files = []
    if opts["judgments_path"]:
        recs = [dataclasses.replace(r, a=idx[r.a], b=idx[r.b]) for res, idx in zip(results, index) for r in res.records]
        files.append((opts["judgments_path"], [_record_line(r) for r in recs]))
    if opts["summary_path"]:
        summary = engine.stats.as_dict() | {"strategy": strategy, "votes": opts["votes"], "judge": judge.identity(),
                                            "pairing": opts["pairing"], "pairs": stats.as_dict()}  # fmt: skip
        files.append((opts["summary_path"], [json.dumps(summary, indent=2, ensure_ascii=False)]))
    if not parquet:
        write_all([(opts["output"], [dumps(r) for r in rows]), *files])
    else:
        staged = write_parquet_staged(opts["output"], rows)
        try:
            write_all(files)
            os.replace(staged, opts["output"])
        finally:
            if os.path.exists(staged):
                os.unlink(staged)
    if not opts["quiet"]:
        s = stats
        click.echo(f"tourney pairs: {s.pairs} pairs from {s.prompts} prompts; skipped: {s.skipped_too_few} with < 2 "
                   f"distinct responses, {s.skipped_unseparated} unseparated, {s.skipped_no_pair} with no pair "
                   f"meeting {opts['pairing']}; {s.dropped_low_confidence} pairs below --min-confidence",
                   err=True)  # fmt: skip
