"""The flow every tournament command shares (rank, best-of-n, pairs): check everything, judge, report.

``prepare`` does every check that needs no model (options, input rows, outputs, family, prompts, budget);
``judge`` builds the judge with its logs kept out of the terminal and runs ``tourney.rank`` with a progress bar;
``report`` prints the closing line and the warnings. Each command adds only what it writes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from tourney.cli import CONSOLE
from tourney.cli.checks import check_judge_options, given_options
from tourney.config import JudgeConfig, SimConfig, parse_engine_args
from tourney.errors import BackendError, InputError
from tourney.tournament import Tournament

WARN_SHARE = 0.5  # warn when this share of judgments or more is invalid, or forced


@dataclass(frozen=True)
class Prepared:
    """A checked command: its rows, the input's name, the judge config and family, and the tournament."""

    items: list[Any]
    source: str
    cfg: JudgeConfig
    family: Any
    tournament: Tournament


def prepare(opts: dict[str, Any], default_strategy: str, check: Callable[[list, str], None] | None = None) -> Prepared:
    """Every check that needs no model; ``check(items, source)`` is a command's own check of the rows."""
    from tourney.config import resolve_family
    from tourney.io import check_outputs, read_items

    CONSOLE.quiet = opts["quiet"]
    strategy = opts["strategy"] or default_strategy
    check_judge_options(opts, given_options(), strategy)
    cfg = judge_config(opts)  # checks every value of the judge's options, before the input is read
    tournament = Tournament(strategy=strategy, rating=opts["rating"], votes=opts["votes"],
                            adaptive_votes=opts["adaptive_votes"], budget=opts["budget"], seed=opts["seed"],
                            elo_k=opts["elo_k"])  # fmt: skip
    items = read_items(opts["input_path"])
    source = "<stdin>" if opts["input_path"] == "-" else opts["input_path"]
    if check is not None:
        check(items, source)
    outputs = {} if opts["dry_run"] else {"--output": opts["output"], "--judgments": opts.get("judgments_path"),
                                          "--summary": opts.get("summary_path")}  # fmt: skip
    check_outputs(outputs, opts["input_path"])
    if cfg.simulated:
        require_quality(items, source)
    family = resolve_family(cfg)  # resolved once, before any model loads: a bad --family fails here
    warn_unknown_family(cfg)
    warn_greedy_votes(cfg, family, opts["votes"])
    check_prompts(items, family, source)
    tournament.check(items, source, "--budget")
    return Prepared(items, source, cfg, family, tournament)


def judge(opts: dict[str, Any], prep: Prepared, items: list[Any] | None = None, keep_records: bool = False) -> Any:
    """Run the tournaments (model logs kept in the log file); returns (run, judge), or None after a dry run."""
    from tourney.api import rank
    from tourney.cache import open_cache
    from tourney.config import make_judge

    items = prep.items if items is None else items
    cfg = prep.cfg
    cache = open_cache(opts["cache_path"], opts["no_cache"])
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # never stdout: `-o -` carries JSONL
    logs = nullcontext() if cfg.simulated or opts["verbose"] else CONSOLE.logs_to(log_path())
    try:
        with logs:
            the_judge = make_judge(cfg, prep.family)
            try:
                common: dict[str, Any] = {"judge": the_judge, "tournament": prep.tournament, "cache": cache,
                                          "source": prep.source, "warn": CONSOLE.warn}  # fmt: skip
                if opts["dry_run"]:
                    print_dry_run(rank(items, dry_run=True, **common), prep.tournament)
                    return None
                keep = keep_records or bool(opts["judgments_path"])
                with CONSOLE.progress(prep.tournament.plan(items)) as bar:  # an upper bound for adaptive strategies
                    if hasattr(the_judge, "status"):
                        the_judge.status = bar.phase
                    run = rank(items, mode=cfg.engine_mode(), keep_records=keep, progress=bar.advance, **common)
                return run, the_judge
            finally:
                the_judge.close()
    except BackendError as err:
        if not (cfg.simulated or opts["verbose"]):
            err.args = (f"{err} (log: {log_path()})",)
        raise
    finally:
        if cache:
            cache.close()


def print_dry_run(run: Any, tournament: Tournament) -> None:
    """Print how many judgments the run would make and how many the cache already has."""
    st = run.stats
    new = st.judgments - st.cached
    click.echo(json.dumps({"prompts": len(run.results), "judgments": st.judgments, "new": new, "cached": st.cached,
                           "strategy": tournament.strategy}))  # fmt: skip
    if st.judgments and new and tournament.strategy == "knockout":
        CONSOLE.say("tourney: note: a knockout's later rounds depend on verdicts not judged yet; 'new' assumes "
                    "they are not cached either")  # fmt: skip


def summary(run: Any, prep: Prepared, judge: Any, **extra: Any) -> str:
    """The ``--summary`` file's text: the run's counters, the tournament, the judge, and a command's ``extra``."""
    fields = run.stats.as_dict() | {"all_invalid_prompts": run.all_invalid()} | prep.tournament.summary()
    return json.dumps(fields | {"judge": judge.identity()} | extra, indent=2, ensure_ascii=False)


def report(run: Any) -> None:
    """One closing line with the counters, and warnings when the verdicts cannot be trusted."""
    st = run.stats
    CONSOLE.say(f"tourney: {st.judgments} judgments ({st.cached} cached), {st.invalid} invalid, {st.forced} forced, "
                f"{st.backend_calls} judge calls, {st.retries} retries, {st.wall_s:.1f} s")  # fmt: skip
    if st.judgments and st.invalid / st.judgments >= WARN_SHARE:
        CONSOLE.warn(f"{st.invalid} of {st.judgments} judgments ({st.invalid / st.judgments:.0%}) had no verdict; "
                     "they abstain, so these rankings rest on few votes")  # fmt: skip
    if st.judgments and st.forced / st.judgments >= WARN_SHARE:
        CONSOLE.warn(f"{st.forced} of {st.judgments} verdicts ({st.forced / st.judgments:.0%}) were forced from "
                     "log-probabilities: the judge rarely wrote a verdict of its own")  # fmt: skip
    bad = run.all_invalid()
    if bad:
        shown = ", ".join(json.dumps(i) for i in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        CONSOLE.warn(f"{len(bad)} prompts got no verdict at all (ranked in input order): {shown}")


def log_path() -> Path:
    """Where a run's vLLM/torch logs go."""
    from tourney.cache import cache_dir

    return cache_dir() / "logs" / "last-run.log"


def judge_config(opts: dict[str, Any]) -> JudgeConfig:
    """The typed judge settings of a command's options."""
    sim = SimConfig(opts["sim_tau"], opts["sim_position_bias"], opts["sim_invalid_rate"], opts["sim_latency"])
    return JudgeConfig(
        judge=opts["judge"], backend=opts["backend"], family=opts["family"], verdict=opts["verdict"],
        max_tokens=opts["max_tokens"], temperature=opts["temperature"], top_p=opts["top_p"], mode=opts["mode"],
        seed=opts["seed"], dtype=opts["dtype"], max_model_len=opts["max_model_len"],
        tensor_parallel_size=opts["tensor_parallel_size"], gpu_memory_utilization=opts["gpu_memory_utilization"],
        engine_kwargs=parse_engine_args(opts["engine_args"]), base_urls=tuple(opts["base_urls"]),
        concurrency=opts["concurrency"], max_retries=opts["max_retries"], api_key_env=opts["api_key_env"],
        timeout=opts["timeout"], sim=sim,
    )  # fmt: skip


def warn_unknown_family(cfg: JudgeConfig) -> None:
    """Say which family a model name that names none falls back to."""
    from tourney.judges import family_from_name
    from tourney.models import builtin_spec

    if cfg.simulated or cfg.family or builtin_spec(cfg.judge) or family_from_name(cfg.judge):
        return
    CONSOLE.warn(f"the judge name {cfg.judge!r} names no known family; using rm-r1's prompt and verdict (set --family)")


def warn_greedy_votes(cfg: JudgeConfig, family: Any, votes: int) -> None:
    """Say what more than two votes cost a greedy judge (the simulator samples its votes: exempt)."""
    from tourney.config import greedy_votes, judge_sampling

    if family is None:
        return
    warning = greedy_votes(votes, judge_sampling(cfg, family).temperature)
    if warning:
        CONSOLE.warn(warning)


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


def require_quality(items: list, path: str) -> None:
    """The simulator reads each response's 'quality'; name the first response that lacks it."""
    for item in items:
        if len(item.texts) < 2:
            continue  # ranked alone, never judged
        for k, fields in enumerate(item.fields):
            if "quality" not in fields:
                raise InputError("missing (the simulated judge reads it)", path, item.line, f"responses[{k}].quality")
