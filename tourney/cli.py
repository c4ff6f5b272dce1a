"""The ``tourney`` command: rank candidate responses with a pairwise judge, JSONL in and out."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from tourney.errors import BackendError, InputError

STRATEGY_NAMES = ["knockout", "round-robin"]


def _judge_options(fn: Callable) -> Callable:
    """Options shared by every command that runs tournaments."""
    opts = [
        click.argument("input_path", metavar="INPUT", type=str),
        click.option("-o", "--output", default="-", show_default=True, help="Output JSONL file ('-' = stdout)."),
        click.option("--judge", default="smollm2", show_default=True,
                     help="Judge: 'smollm2' (built-in weak CPU judge), a model directory or hub id (e.g. "
                          "Reward-Reasoning/RRM-7B), or 'simulated' (a statistical SIMULATOR reading each "
                          "response's 'quality'; not a model)."),
        click.option("--backend", type=click.Choice(["vllm", "openai"]), default="vllm", show_default=True,
                     help="vllm: in-process engine; openai: OpenAI-compatible servers given by --base-url."),
        click.option("--base-url", "base_urls", multiple=True, metavar="URL",
                     help="OpenAI-compatible endpoint (repeatable; load is spread over all)."),
        click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Requests in flight per --base-url endpoint."),
        click.option("--max-retries", type=click.IntRange(min=0), default=6, show_default=True,
                     help="Retries per request on 429/5xx/timeouts/resets (exponential backoff, capped at 30 s)."),
        click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
                     help="Environment variable holding the API key for --backend openai."),
        click.option("--family", default=None,
                     help="Judge family: rm-r1, rrm, or a template .toml file (default: detected from the model)."),
        click.option("--strategy", type=click.Choice(STRATEGY_NAMES), default=None,
                     help="Tournament (default: knockout for best-of-n, round-robin for rank)."),
        click.option("--rating", type=click.Choice(["elo", "bt"]), default="elo", show_default=True,
                     help="Round-robin rating: sequential ELO or Bradley-Terry MLE."),
        click.option("--elo-k", type=click.FloatRange(min=0, min_open=True), default=32.0, show_default=True,
                     help="ELO K-factor (step size) for --rating elo."),
        click.option("--votes", type=click.IntRange(min=1), default=1, show_default=True,
                     help="voting@k: judgments per match, positions balanced."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Run seed."),
        click.option("--mode", type=click.Choice(["auto", "lockstep", "pipelined"]), default="auto",
                     show_default=True, help="pipelined: no barrier across prompts (default for model judges)."),
        click.option("--max-tokens", type=click.IntRange(min=1), default=None, help="Override the family's budget."),
        click.option("--temperature", type=click.FloatRange(min=0), default=None, help="Override sampling."),
        click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                     help="Override sampling."),
        click.option("--verdict", type=click.Choice(["auto", "parse", "logprobs"]), default="auto",
                     show_default=True, help="auto: force a verdict from log-probs when unparseable; "
                                             "logprobs: always; parse: never."),
        click.option("--dtype", default="auto", show_default=True, help="vLLM dtype (float32, bfloat16, auto)."),
        click.option("--max-model-len", type=click.IntRange(min=16), default=None, help="vLLM context length."),
        click.option("--sim-tau", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                     help="Simulator: temperature of P(i beats j) = sigmoid((q_i - q_j)/tau)."),
        click.option("--sim-position-bias", type=float, default=0.0, show_default=True,
                     help="Simulator: logit added in favour of position A."),
        click.option("--sim-invalid-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                     help="Simulator: share of votes that come back unparseable."),
        click.option("--sim-latency", type=click.FloatRange(min=0), default=0.0, show_default=True,
                     help="Simulator: seconds each judge call takes, standing in for a real backend."),
        click.option("--cache", "cache_path", default=None,
                     help="Judgment cache (SQLite). Default: $TOURNEY_CACHE_DIR or ~/.cache/tourney/judgments.sqlite."),
        click.option("--no-cache", is_flag=True, help="Do not read or write the judgment cache."),
        click.option("--judgments", "judgments_path", default=None,
                     help="Write every judgment (ids, order shown, vote, verdict, raw text) as JSONL."),
        click.option("--summary", "summary_path", default=None, help="Write run counters as JSON."),
        click.option("--dry-run", is_flag=True, help="Print how many judgments the run would make; run none."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar (it is also off when stderr is not a TTY)."),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="tourney")
def cli() -> None:
    """Rank many candidate LLM responses with a pairwise reasoning judge (RM-R1, RRM, ...).

    Input is JSONL, one prompt per line: {"prompt": ..., "responses": [...]}; output is the same rows with the
    ranking added. INPUT and -o may be '-' for stdin/stdout. Progress goes to stderr.
    """


@cli.command("rank")
@_judge_options
def rank_cmd(**opts: Any) -> None:
    """Rank every prompt's responses; adds 'ranking' (indices, best first) and 'scores' (input order)."""
    _run("rank", opts)


@cli.command("best-of-n")
@_judge_options
def best_of_n_cmd(**opts: Any) -> None:
    """Pick the best response per prompt; adds 'best_index' and 'best' (its text)."""
    _run("best-of-n", opts)


def _run(command: str, opts: dict[str, Any]) -> None:
    """Read, judge, rank and write; every output file is written whole or not at all."""
    from tourney.engine import Engine, plan
    from tourney.io import check_writable, dumps, read_items, write_all
    from tourney.judging import check_prompts, family_for, make_judge, open_cache, resolve_mode

    # vLLM logs to stdout by default, which would corrupt `-o -`; and only its warnings matter here.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    items = read_items(opts["input_path"])
    outputs = [p for p in (opts["output"], opts["judgments_path"], opts["summary_path"]) if p]
    for path in outputs:
        check_writable(path)
    if sum(p == "-" for p in outputs) > 1:
        raise InputError("only one of -o, --judgments and --summary can be '-' (stdout)", field="-o")
    strategy = opts["strategy"] or ("knockout" if command == "best-of-n" else "round-robin")
    source = "<stdin>" if opts["input_path"] == "-" else opts["input_path"]
    if opts["judge"] == "simulated":
        _require_quality(items, source)
    family = family_for(opts)  # resolved once, before any model loads: a bad --family fails here
    check_prompts(items, family, source)
    if opts["dry_run"]:
        count = plan(items, strategy=strategy, votes=opts["votes"], seed=opts["seed"])
        click.echo(json.dumps({"prompts": len(items), "judgments": count, "strategy": strategy}))
        return
    cache = open_cache(opts["cache_path"], opts["no_cache"])
    mode = resolve_mode(opts)
    judge = make_judge(opts, mode, family)
    try:
        with _progress(opts["quiet"]) as bar:
            engine = Engine(judge, strategy=strategy, rating=opts["rating"], votes=opts["votes"], seed=opts["seed"],
                            cache=cache, keep_records=bool(opts["judgments_path"]), elo_k=opts["elo_k"])  # fmt: skip
            total = plan(items, strategy=strategy, votes=opts["votes"], seed=opts["seed"])
            engine.progress = bar(total)
            results = asyncio.run(engine.arun(items)) if mode == "pipelined" else engine.run(items)
    finally:
        judge.close()
        if cache:
            cache.close()
    rows = []
    for res in results:
        row = dict(res.item.row)
        if command == "rank":
            row["ranking"], row["scores"] = res.ranking, res.scores
        else:
            row["best_index"] = res.ranking[0]
            row["best"] = res.item.texts[res.ranking[0]]
        rows.append(dumps(row))
    outputs = [(opts["output"], rows)]
    if opts["judgments_path"]:
        outputs.append((opts["judgments_path"], [_record_line(r) for res in results for r in res.records]))
    if opts["summary_path"]:
        summary = engine.stats.as_dict() | {"strategy": strategy, "votes": opts["votes"], "judge": judge.identity()}
        outputs.append((opts["summary_path"], [json.dumps(summary, indent=2, ensure_ascii=False)]))
    write_all(outputs)


def _record_line(rec: Any) -> str:
    """One judgment as a JSONL line."""
    return json.dumps({"id": rec.prompt_id, "a": rec.a, "b": rec.b, "vote": rec.vote, "verdict": rec.verdict,
                       "p_a": rec.p_a, "forced": rec.forced, "raw": rec.raw}, ensure_ascii=False)  # fmt: skip


def _require_quality(items: list, path: str) -> None:
    """The simulator reads each response's 'quality'; name the first response that lacks it."""
    for item in items:
        if len(item.texts) < 2:
            continue  # ranked alone, never judged
        for k, fields in enumerate(item.fields):
            if "quality" not in fields:
                raise InputError("missing (the simulated judge reads it)", path, item.line, f"responses[{k}].quality")


class _progress:
    """A rich progress bar on stderr, or nothing when quiet or not a terminal."""

    def __init__(self, quiet: bool) -> None:
        self.on = not quiet and sys.stderr.isatty()
        self.bar = None

    def __enter__(self) -> Callable[[int], Callable[[int], None] | None]:
        if not self.on:
            return lambda total: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("judging"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=Console(stderr=True), transient=True)  # fmt: skip
        self.bar.start()

        def make(total: int) -> Callable[[int], None]:
            task = self.bar.add_task("judging", total=total)
            return lambda n: self.bar.advance(task, n)

        return make

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.stop()


from tourney.train.cli import train  # noqa: E402

cli.add_command(train)


def main() -> None:
    """Console entry point: one-line errors with exit code 2 for bad input, 1 for backend failures."""
    try:
        cli.main(standalone_mode=False, prog_name="tourney")
    except click.exceptions.Exit as ex:
        sys.exit(ex.exit_code)
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help() if err.ctx else err.format_message())
        sys.exit(0)
    except click.ClickException as err:
        click.echo(f"tourney: error: {err.format_message()}", err=True)
        sys.exit(2 if isinstance(err, click.UsageError) else err.exit_code)
    except InputError as err:
        click.echo(f"tourney: error: {err}", err=True)
        sys.exit(2)
    except BackendError as err:
        click.echo(f"tourney: judge failed: {err}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("tourney: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("tourney: interrupted (judgments so far are cached)", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
