"""The data commands: ``tourney sample`` (a policy's samples, cached) and ``tourney pairs`` (DPO pairs from a judge).

Registered on the main group by the hook at the end of ``tourney/cli.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from contextlib import nullcontext
from typing import Any

import click

from tourney import cli
from tourney.cli import _judge_options
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
@functools.partial(cli.apply_options, options=[*cli.SERVER_OPTIONS, cli.API_KEY_OPTION, *cli.VLLM_OPTIONS])
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
@click.option("-q", "--quiet", is_flag=True, help="No closing summary line (errors still show).")
@cli.VERBOSE_OPTION
def sample_cmd(**opts: Any) -> None:
    """Sample N responses per prompt from a policy; writes rows with 'responses' that rank and pairs read."""
    from tourney.config import JudgeConfig, make_backend
    from tourney.io import check_outputs, dumps, write_all
    from tourney.sample import SampleCache, default_samples_path, read_prompts, sample

    console = cli.CONSOLE
    console.quiet = opts["quiet"]
    given = cli.given_options()
    cli.check_backend_options(opts, given)
    cli.check_run_options(opts, given)
    rows = read_prompts(opts["input_path"])
    outputs = {} if opts["dry_run"] else {"--output": opts["output"], "--summary": opts["summary_path"]}
    check_outputs(outputs, opts["input_path"])
    if opts["dry_run"]:
        click.echo(json.dumps({"prompts": len(rows), "samples": len(rows) * opts["n"]}))
        return
    cfg = JudgeConfig(opts["policy"], backend=opts["backend"], mode="lockstep", seed=opts["seed"], dtype=opts["dtype"],
                      max_model_len=opts["max_model_len"], base_urls=tuple(opts["base_urls"]),
                      concurrency=opts["concurrency"], api_key_env=opts["api_key_env"])  # fmt: skip
    cache = None if opts["no_cache"] else SampleCache(opts["cache_path"] or default_samples_path())
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # never stdout: `-o -` carries JSONL
    logs = nullcontext() if opts["verbose"] else console.logs_to(cli.log_path())
    backend = None
    try:
        with logs:
            backend = make_backend(cfg)
            identity = backend.identity()
            out, stats = sample(rows, backend, opts["n"], temperature=opts["temperature"], top_p=opts["top_p"],
                                max_tokens=opts["max_tokens"], seed=opts["seed"], cache=cache,
                                batch_size=opts["batch_size"])  # fmt: skip
    except BackendError as err:
        where = "" if opts["verbose"] else f" (log: {cli.log_path()})"
        raise click.ClickException(f"policy failed: {err}{where}") from None
    finally:
        if backend is not None:
            backend.close()
        if cache:
            cache.close()
    files = [(opts["output"], [dumps(r) for r in out])]
    if opts["summary_path"]:
        summary = stats.as_dict() | {"policy": identity, "n": opts["n"], "seed": opts["seed"]}
        files.append((opts["summary_path"], [json.dumps(summary, indent=2, ensure_ascii=False)]))
    write_all(files)
    console.say(f"tourney: {stats.samples} samples ({stats.cached} cached, {stats.generated} generated), "
                f"{stats.backend_calls} backend calls, {stats.wall_s:.1f} s")  # fmt: skip


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
    from tourney.pairs import check_policy, distinct, parse_policy

    strategy = opts["strategy"] or "round-robin"
    policy = parse_policy(opts["pairing"])
    parquet = opts["fmt"] == "parquet" or (opts["fmt"] == "auto" and opts["output"].endswith(".parquet"))
    if parquet and opts["output"] == "-" and not opts["dry_run"]:
        raise InputError("Parquet needs a file (-o PATH.parquet), not stdout", field="-o")
    items, source, cfg, family = cli.prepare(opts, strategy, lambda rows, src: check_policy(rows, policy, src))
    slim, index = (list(x) for x in zip(*(distinct(item) for item in items))) if items else ([], [])
    ran = cli.judge_items(opts, cfg, family, slim, source, strategy, keep_records=True)  # pairs read the direct votes
    if ran is None:
        return
    results, engine, judge = ran
    stats = _write_pairs(opts, results, index, items, policy, parquet, engine, judge, strategy)
    cli._report(engine, results, cli.CONSOLE)
    cli.CONSOLE.say(
        f"tourney: {stats.pairs} pairs from {stats.prompts} prompts; skipped {stats.skipped_too_few} with < 2 "
        f"distinct responses, {stats.skipped_unseparated} unseparated, {stats.skipped_no_pair} with no pair "
        f"for {opts['pairing']}; {stats.dropped_low_confidence} pairs below --min-confidence"
    )


def _write_pairs(
    opts: dict[str, Any],
    results: list,
    index: list,
    items: list,
    policy: Any,
    parquet: bool,
    engine: Any,
    judge: Any,
    strategy: str,
) -> Any:
    """Pair, then write the pairs (JSONL or Parquet), the judgments and the summary, all or nothing."""
    from tourney.io import dumps, write_all
    from tourney.pairs import PairStats, make_pairs, rows_of, write_parquet_staged

    stats = PairStats()
    pairs = make_pairs(results, index, items, policy, min_confidence=opts["min_confidence"],
                       rationale=opts["rationale"], stats=stats)  # fmt: skip
    rows = rows_of(pairs, opts["rationale"])
    files = []
    if opts["judgments_path"]:  # candidate indices back into the input's responses
        recs = [dataclasses.replace(r, a=idx[r.a], b=idx[r.b]) for res, idx in zip(results, index) for r in res.records]
        files.append((opts["judgments_path"], [cli._record_line(r) for r in recs]))
    if opts["summary_path"]:
        summary = engine.stats.as_dict() | {"strategy": strategy, "votes": opts["votes"], "judge": judge.identity(),
                                            "pairing": opts["pairing"], "pairs": stats.as_dict()}  # fmt: skip
        files.append((opts["summary_path"], [json.dumps(summary, indent=2, ensure_ascii=False)]))
    if not parquet:
        write_all([(opts["output"], [dumps(r) for r in rows]), *files])
        return stats
    staged = write_parquet_staged(opts["output"], rows)
    try:
        write_all(files)
        os.replace(staged, os.path.realpath(opts["output"]))
    finally:
        if os.path.exists(staged):
            os.unlink(staged)
    return stats
