"""The ``tourney`` command: rank candidate responses with a pairwise judge, JSONL in and out."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
import urllib.parse
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import click

from strategies.registry import RATINGS, STRATEGIES
from tourney.config import BACKENDS, DTYPES, MODES, JudgeConfig, SimConfig
from tourney.console import Console
from tourney.errors import BackendError, InputError
from tourney.forcing import VERDICT_MODES

CONSOLE = Console()


def apply_options(fn: Callable, options: list[Callable]) -> Callable:
    """Decorate ``fn`` with click options, listed in the order --help shows them."""
    for opt in reversed(options):
        fn = opt(fn)
    return fn


# The model's backend: shared by the judge commands and `tourney sample` (a policy runs on the same backends).
SERVER_OPTIONS = [
    click.option("--backend", type=click.Choice(list(BACKENDS)), default="vllm", show_default=True,
                 help="vllm: in-process engine; openai: OpenAI-compatible servers given by --base-url."),
    click.option("--base-url", "base_urls", multiple=True, metavar="URL",
                 help="OpenAI-compatible endpoint (repeatable; load is spread over all)."),
    click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True,
                 help="Requests in flight per --base-url endpoint."),
]  # fmt: skip
API_KEY_OPTION = click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
                              help="Environment variable holding the API key for --backend openai.")  # fmt: skip
VLLM_OPTIONS = [
    click.option("--dtype", type=click.Choice(list(DTYPES)), default="auto", show_default=True,
                 help="vLLM dtype (auto: the model's; smollm2 runs float32)."),
    click.option("--max-model-len", type=click.IntRange(min=16), default=None, help="vLLM context length."),
]  # fmt: skip
VERBOSE_OPTION = click.option(
    "-v", "--verbose", is_flag=True,
    help="Show vLLM/torch logs on stderr (otherwise they go to ~/.cache/tourney/logs/last-run.log).",
)  # fmt: skip


def _judge_options(fn: Callable) -> Callable:
    """Options shared by every command that runs tournaments."""
    opts = [
        click.argument("input_path", metavar="INPUT", type=str),
        click.option("-o", "--output", default="-", show_default=True, help="Output JSONL file ('-' = stdout)."),
        click.option("--judge", default="smollm2", show_default=True,
                     help="Judge: 'smollm2' (built-in weak CPU judge), a model directory or hub id (e.g. "
                          "Reward-Reasoning/RRM-7B), or 'simulated' (a statistical SIMULATOR reading each "
                          "response's 'quality'; not a model)."),
        *SERVER_OPTIONS,
        click.option("--max-retries", type=click.IntRange(min=0), default=6, show_default=True,
                     help="Retries per request on 429/5xx/timeouts/resets (exponential backoff, capped at 30 s)."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
                     help="Seconds to wait for one server answer before retrying (--backend openai)."),
        API_KEY_OPTION,
        click.option("--family", default=None,
                     help="Judge family: rm-r1, rrm, or a template .toml file (default: detected from the model)."),
        click.option("--strategy", type=click.Choice(sorted(STRATEGIES)), default=None,
                     help="Tournament (default: knockout for best-of-n, round-robin for rank and pairs)."),
        click.option("--rating", type=click.Choice(list(RATINGS)), default="elo", show_default=True,
                     help="Round-robin rating: sequential ELO or Bradley-Terry MLE."),
        click.option("--elo-k", type=click.FloatRange(min=0, min_open=True), default=32.0, show_default=True,
                     help="ELO K-factor (step size) for --rating elo."),
        click.option("--votes", type=click.IntRange(min=1), default=1, show_default=True,
                     help="voting@k: judgments per match, positions balanced."),
        click.option("--budget", type=click.IntRange(min=1), default=None,
                     help="Judge calls per prompt (votes included), never exceeded; adaptive strategies stop early "
                          "when they are sure. See the README's strategy guide."),
        click.option("--adaptive-votes", is_flag=True,
                     help="Stop a match's --votes once their majority is decided (--votes is then the most)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Run seed."),
        click.option("--mode", type=click.Choice(list(MODES)), default="auto",
                     show_default=True, help="pipelined: no barrier across prompts (default for model judges)."),
        click.option("--max-tokens", type=click.IntRange(min=1), default=None, help="Override the family's budget."),
        click.option("--temperature", type=click.FloatRange(min=0), default=None, help="Override sampling."),
        click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                     help="Override sampling."),
        click.option("--verdict", type=click.Choice(list(VERDICT_MODES)), default="auto",
                     show_default=True, help="auto: force a verdict from log-probs when unparseable; "
                                             "logprobs: always; parse: never."),
        *VLLM_OPTIONS,
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
        click.option("--dry-run", is_flag=True,
                     help="Print how many judgments the run would make and how many are cached; check every prompt "
                          "against the judge's context (no model is started, nothing is written)."),
        click.option("-q", "--quiet", is_flag=True,
                     help="No progress bar and no closing summary line (warnings and errors still show)."),
        VERBOSE_OPTION,
    ]  # fmt: skip
    return apply_options(fn, opts)


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
    """Check everything, then judge, rank and write; every output file is written whole or not at all."""
    strategy = opts["strategy"] or ("knockout" if command == "best-of-n" else "round-robin")
    items, source, cfg, family = prepare(opts, strategy)
    ran = judge_items(opts, cfg, family, items, source, strategy)
    if ran is not None:
        results, engine, judge = ran
        _write(command, opts, results, engine, judge, strategy)
        _report(engine, results, CONSOLE)


def prepare(opts: dict[str, Any], strategy: str, check: Callable[[list, str], None] | None = None) -> tuple:
    """Every check that needs no model: options, input rows, outputs, family, prompts; returns (items, source, cfg,
    family). ``check(items, source)``: a command's own checks of the rows, before the outputs are looked at."""
    from tourney.config import resolve_family
    from tourney.io import check_outputs, read_items

    CONSOLE.quiet = opts["quiet"]
    check_options(opts, given_options(), strategy)
    items = read_items(opts["input_path"])
    source = "<stdin>" if opts["input_path"] == "-" else opts["input_path"]
    if check is not None:
        check(items, source)
    outputs = {} if opts["dry_run"] else {"--output": opts["output"], "--judgments": opts.get("judgments_path"),
                                          "--summary": opts.get("summary_path")}  # fmt: skip
    check_outputs(outputs, opts["input_path"])
    cfg = judge_config(opts)
    if cfg.simulated:
        _require_quality(items, source)
    family = resolve_family(cfg)  # resolved once, before any model loads: a bad --family fails here
    _warn_unknown_family(cfg, CONSOLE)
    check_prompts(items, family, source)
    check_budget(items, opts, strategy, source)
    return items, source, cfg, family


def check_budget(items: list, opts: dict[str, Any], strategy: str, path: str) -> None:
    """Every prompt's tournament must fit the --budget (a knockout of N needs N-1 matches times the votes)."""
    from strategies.registry import make_tournament

    if opts["budget"] is None:
        return
    checked: set[int] = set()
    for item in items:
        if len(item.texts) in checked:  # the check depends on the number of candidates only
            continue
        checked.add(len(item.texts))
        try:
            make_tournament(strategy, len(item.texts), votes=opts["votes"], adaptive_votes=opts["adaptive_votes"],
                            budget=opts["budget"])  # fmt: skip
        except ValueError as err:
            # lucb fits any budget; swiss and adaptive-knockout have a floor, the others a fixed size.
            hint = (
                "raise --budget or use --strategy lucb"
                if hasattr(STRATEGIES[strategy], "min_budget")
                else "raise --budget or pick a budgeted strategy (lucb, adaptive-knockout, swiss)"
            )
            raise InputError(f"{err} ({hint})", path, item.line, "--budget") from None


def judge_items(opts: dict[str, Any], cfg: Any, family: Any, items: list, source: str, strategy: str,
                keep_records: bool = False) -> tuple | None:  # fmt: skip
    """Run the tournaments (model logs kept in the log file); (results, engine, judge), or None after a dry run."""
    from tourney.cache import open_cache
    from tourney.config import make_judge

    cache = open_cache(opts["cache_path"], opts["no_cache"])
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # never stdout: `-o -` carries JSONL
    logs = nullcontext() if cfg.simulated or opts["verbose"] else CONSOLE.logs_to(log_path())
    try:
        with logs:
            judge = make_judge(cfg, family)
            try:
                check_context(items, judge, source)
                engine = _engine(judge, opts, strategy, cache, dry=opts["dry_run"], keep_records=keep_records)
                if opts["dry_run"]:
                    _dry_run(engine, items, strategy, CONSOLE)
                    return None
                return _judge_all(engine, judge, items, cfg.engine_mode(), CONSOLE), engine, judge
            finally:
                judge.close()
    except BackendError as err:
        if not (cfg.simulated or opts["verbose"]):
            err.args = (f"{err} (log: {log_path()})",)
        raise
    finally:
        if cache:
            cache.close()


def _engine(judge: Any, opts: dict[str, Any], strategy: str, cache: Any, dry: bool, keep_records: bool = False) -> Any:
    """The engine for this command (a dry run reads the cache and asks the judge nothing)."""
    from tourney.engine import Engine

    keep = keep_records or bool(opts["judgments_path"])
    kw = {"strategy": strategy, "rating": opts["rating"], "votes": opts["votes"], "seed": opts["seed"],
          "cache": cache, "keep_records": keep, "elo_k": opts["elo_k"], "budget": opts["budget"],
          "adaptive_votes": opts["adaptive_votes"]}  # fmt: skip
    if dry:
        return Engine(_DryJudge(judge), write_cache=False, **kw)
    return Engine(judge, **kw)


def _judge_all(engine: Any, judge: Any, items: list, mode: str, console: Console) -> list:
    """Run every tournament with a progress bar; a model's start-up shows as its own phase."""
    from tourney.engine import plan

    total = plan(items, strategy=engine.strategy, votes=engine.votes, seed=engine.seed, budget=engine.budget,
                 adaptive_votes=engine.adaptive_votes)  # an upper bound for adaptive strategies  # fmt: skip
    with console.progress(total) as bar:
        engine.progress = bar.advance
        if hasattr(judge, "status"):
            judge.status = bar.phase
        return asyncio.run(engine.arun(items)) if mode == "pipelined" else engine.run(items)


def _dry_run(engine: Any, items: list, strategy: str, console: Console) -> None:
    """Print how many judgments the run would make and how many the cache already has; judge nothing."""
    results = engine.run(items)
    st = engine.stats
    new = st.judgments - st.cached
    click.echo(json.dumps({"prompts": len(results), "judgments": st.judgments, "new": new, "cached": st.cached,
                           "strategy": strategy}))  # fmt: skip
    if st.judgments and new and engine.strategy == "knockout":
        console.say("tourney: note: a knockout's later rounds depend on verdicts not judged yet; 'new' assumes "
                    "they are not cached either")  # fmt: skip


class _DryJudge:
    """Stands in for the judge in a dry run: same identity (so cache hits are real), never judges."""

    def __init__(self, inner: Any) -> None:
        """Wrap the real judge (its model is never loaded)."""
        self.inner = inner

    def identity(self) -> dict[str, Any]:
        """The real judge's identity."""
        return self.inner.identity()

    def key_fields(self) -> tuple[str, ...]:
        """The real judge's key fields."""
        return self.inner.key_fields()

    def judge(self, requests: list) -> list:
        """An invalid judgment for each request (it abstains; nothing is stored)."""
        from tourney.types import Judgment

        return [Judgment(None, None, "[dry run]") for _ in requests]

    async def ajudge(self, requests: list) -> list:
        """As ``judge``."""
        return self.judge(requests)

    def retries(self) -> int:
        """None."""
        return 0

    def close(self) -> None:
        """Nothing to close."""


def _write(command: str, opts: dict[str, Any], results: list, engine: Any, judge: Any, strategy: str) -> None:
    """Write the ranked rows, and the judgments and summary when asked, all or nothing."""
    from tourney.io import dumps, write_all

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
        summary = engine.stats.as_dict() | {"all_invalid_prompts": _all_invalid(results), "strategy": strategy,
                                            "votes": opts["votes"], "adaptive_votes": opts["adaptive_votes"],
                                            "budget": opts["budget"], "judge": judge.identity()}  # fmt: skip
        outputs.append((opts["summary_path"], [json.dumps(summary, indent=2, ensure_ascii=False)]))
    write_all(outputs)


def _all_invalid(results: list) -> list:
    """Ids of the prompts whose every judgment had no verdict (their ranking is the input order)."""
    return [r.item.id for r in results if r.judgments and r.invalid == r.judgments]


def _report(engine: Any, results: list, console: Console) -> None:
    """One closing line with the counters, and warnings when the verdicts cannot be trusted."""
    st = engine.stats
    console.say(f"tourney: {st.judgments} judgments ({st.cached} cached), {st.invalid} invalid, {st.forced} forced, "
                f"{st.backend_calls} judge calls, {st.retries} retries, {st.wall_s:.1f} s")  # fmt: skip
    if st.judgments and st.invalid / st.judgments >= WARN_SHARE:
        console.warn(f"{st.invalid} of {st.judgments} judgments ({st.invalid / st.judgments:.0%}) had no verdict; "
                     "they abstain, so these rankings rest on few votes")  # fmt: skip
    if st.judgments and st.forced / st.judgments >= WARN_SHARE:
        console.warn(f"{st.forced} of {st.judgments} verdicts ({st.forced / st.judgments:.0%}) were forced from "
                     "log-probabilities: the judge rarely wrote a verdict of its own")  # fmt: skip
    bad = _all_invalid(results)
    if bad:
        shown = ", ".join(json.dumps(i) for i in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        console.warn(f"{len(bad)} prompts got no verdict at all (ranked in input order): {shown}")


def log_path() -> Any:
    """Where a run's vLLM/torch logs go."""
    from tourney.cache import cache_dir

    return cache_dir() / "logs" / "last-run.log"


def given_options() -> set[str]:
    """The options the user set on the command line (not defaults)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}


def flag(name: str) -> str:
    """The option's long flag as the user types it (``base_urls`` -> ``--base-url``)."""
    for param in click.get_current_context().command.params:
        if param.name == name:
            return max(param.opts, key=len)
    return name


MODEL_ONLY = ("family", "verdict", "max_tokens", "temperature", "top_p", "backend", "dtype", "max_model_len",
              "base_urls", "concurrency", "max_retries", "api_key_env", "timeout")  # fmt: skip
SIM_ONLY = ("sim_tau", "sim_position_bias", "sim_invalid_rate", "sim_latency")
VLLM_ONLY = ("dtype", "max_model_len")
OPENAI_ONLY = ("base_urls", "concurrency", "max_retries", "api_key_env", "timeout")
WARN_SHARE = 0.5  # warn when this share of judgments or more is invalid, or forced


def check_options(opts: dict[str, Any], given: set[str], strategy: str) -> None:
    """Refuse options that contradict each other or would be ignored, naming both (exit 2)."""
    simulated = opts["judge"] == "simulated"
    for name in sorted(given):
        if simulated and name in MODEL_ONLY and not (name == "backend" and opts["backend"] == "vllm"):
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
    for name in ("output", "judgments_path", "summary_path"):
        if opts["dry_run"] and name in given:
            raise clash(name, "--dry-run (it writes nothing)", "has no effect with")
    check_run_options(opts, given)


def clash(a: str, b: str, why: str) -> InputError:
    """The one-line error for option ``a`` against ``b``, as the user typed them."""
    return InputError(f"{flag(a)} {why} {b}")


def check_backend_options(opts: dict[str, Any], given: set[str]) -> None:
    """Refuse vLLM-only options with --backend openai and server options with --backend vllm."""
    for name in sorted(given):
        if opts["backend"] == "openai" and name in VLLM_ONLY:
            raise clash(name, "--backend openai (the server sets it)", "has no effect with")
        if opts["backend"] == "vllm" and name in OPENAI_ONLY:
            raise clash(name, "--backend openai", "only applies to")


def check_run_options(opts: dict[str, Any], given: set[str]) -> None:
    """The checks every model command shares: cache, log and URL options."""
    if opts["no_cache"] and "cache_path" in given:
        raise clash("cache_path", "--no-cache", "contradicts")
    if opts["quiet"] and opts["verbose"]:
        raise clash("quiet", "--verbose", "contradicts")
    for url in opts["base_urls"]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"expected http://HOST[:PORT][/v1], got {url!r}", field="--base-url")
    if opts["backend"] == "openai" and not opts["base_urls"] and opts.get("judge") != "simulated":
        raise InputError("--backend openai needs at least one --base-url", field="--base-url")


def strategy_options(strategy: str) -> set[str]:
    """The keyword options a strategy's constructor takes (the others would be ignored)."""
    return set(inspect.signature(STRATEGIES[strategy]).parameters)


def _warn_unknown_family(cfg: Any, console: Console) -> None:
    """Say which family a model name that names none falls back to."""
    from tourney.judges import family_from_name
    from tourney.models import builtin_spec

    if cfg.simulated or cfg.family or builtin_spec(cfg.judge) or family_from_name(cfg.judge):
        return
    console.warn(f"the judge name {cfg.judge!r} names no known family; using rm-r1's prompt and verdict (set --family)")


def check_context(items: list, judge: Any, path: str) -> None:
    """Fail before the engine starts when a prompt's judge prompt (its two longest responses) cannot fit the context."""
    backend = getattr(judge, "backend", None)
    limit = backend.context_limit() if backend is not None else 0
    if not limit:
        return  # the simulator, or servers (they say their context only when asked)
    for item in items:
        if len(item.texts) < 2:
            continue
        a, b = sorted(item.texts, key=len)[-2:]
        # A token covers at least one UTF-8 byte: only prompts longer in bytes than the context need counting.
        if len(("".join(map(str, item.prompt)) + a + b).encode()) + 1000 < limit:
            continue
        n = judge.prompt_tokens(item.prompt, b, a)
        if n + 1 > limit:
            why = f"the judge prompt for its two longest responses has {n} tokens; the judge's context is {limit}"
            raise InputError(f"{why} (raise --max-model-len or shorten them)", path, item.line, "responses")


def judge_config(opts: dict[str, Any]) -> JudgeConfig:
    """The typed judge settings of a command's options."""
    sim = SimConfig(opts["sim_tau"], opts["sim_position_bias"], opts["sim_invalid_rate"], opts["sim_latency"])
    return JudgeConfig(
        judge=opts["judge"], backend=opts["backend"], family=opts["family"], verdict=opts["verdict"],
        max_tokens=opts["max_tokens"], temperature=opts["temperature"], top_p=opts["top_p"], mode=opts["mode"],
        seed=opts["seed"], dtype=opts["dtype"], max_model_len=opts["max_model_len"], base_urls=tuple(opts["base_urls"]),
        concurrency=opts["concurrency"], max_retries=opts["max_retries"], api_key_env=opts["api_key_env"],
        timeout=opts["timeout"], sim=sim,
    )  # fmt: skip


def check_prompts(items: list, family: Any, path: str) -> None:
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


from tourney.cli_data import pairs_cmd, sample_cmd  # noqa: E402

cli.add_command(sample_cmd)
cli.add_command(pairs_cmd)


from tourney.train.cli import train  # noqa: E402

cli.add_command(train)


def main(args: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 for bad input, 1 for backend failures.

    ``args`` defaults to ``sys.argv[1:]``; tests pass their own and run the command in-process.
    """
    try:
        cli.main(args=args, standalone_mode=False, prog_name="tourney")
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
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("tourney: interrupted (judgments so far are cached)", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
