"""The flow every tournament command shares (rank, best-of-n, pairs): check everything, judge, report.

``prepare`` does every check that needs no model (options, outputs, family, and every input row: read once, none
held); ``judge`` builds the judge with its logs kept out of the terminal and streams the prompts through the engine
with a progress bar, handing each result to the command as soon as it and every earlier one are done; ``finish``
writes the summary and puts the streamed outputs in place; ``report`` prints the closing line and the warnings. Each
command adds only what it writes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from strategies.registry import BUDGETED_DEFAULT, budgeted
from tourney.cli import CONSOLE
from tourney.cli.checks import check_files, check_judge_options, given_options
from tourney.config import JudgeConfig, SimConfig, parse_engine_args
from tourney.console import plural, vllm_logs_off_stdout
from tourney.engine import Result, Stream
from tourney.errors import BackendError, InputError
from tourney.io import Item
from tourney.sink import Resume, Sink
from tourney.source import Source
from tourney.tournament import Tournament

WARN_SHARE = 0.5  # warn when this share of judgments or more is invalid, or forced
HUGE_PROMPT = 100_000  # judgments one prompt may plan before a run says that is a lot (round robin from N = 448)


@dataclass(frozen=True)
class Prepared:
    """A checked command: its input (scanned), the judge config and family, the tournament, and where its JSONL
    outputs stream (None for a dry run) from which prompt on (a killed run's resume point)."""

    source: Source
    cfg: JudgeConfig
    family: Any
    tournament: Tournament
    sink: Sink | None
    resume: Resume
    planner: Planner  # each prompt's planned judgments, worked out once per number of responses

    @property
    def name(self) -> str:
        """The input's name in messages."""
        return self.source.name


def prepare(
    opts: dict[str, Any],
    command: str,
    default_strategy: str,
    check: Callable[[list, str], None] | None = None,
    streams: Sequence[tuple[str, str]] = (),
    settings: dict[str, Any] | None = None,
    resumable: bool = True,
) -> Prepared:
    """Every check that needs no model, the input's rows included (read once, none held).

    ``check(items, source)`` is a command's own check of the rows; ``streams`` are the (option, path) JSONL outputs
    written as the run goes, in flush order; ``settings``: the command's own options that decide its output;
    ``resumable``: False when an output is written whole at the end (a killed run then starts over)."""
    from tourney.cache import default_cache_path
    from tourney.config import resolve_family

    CONSOLE.quiet = opts["quiet"]
    CONSOLE.interrupted = "nothing is cached: --no-cache" if opts["no_cache"] else "judgments so far are cached"
    # A budget without --strategy: the budgeted default (robust over the judges of experiments.bench_strategies).
    strategy = opts["strategy"] or (BUDGETED_DEFAULT if opts["budget"] is not None else default_strategy)
    check_judge_options(opts, given_options(), strategy)
    cfg = judge_config(opts)  # checks every value of the judge's options, before the input is read
    try:
        tournament = Tournament(strategy=strategy, rating=opts["rating"], votes=opts["votes"],
                                adaptive_votes=opts["adaptive_votes"], budget=opts["budget"], seed=opts["seed"],
                                elo_k=opts["elo_k"], intervals=opts.get("intervals", False))  # fmt: skip
    except InputError as err:  # the library names its parameters (elo_k); the user gave options (--elo-k)
        if err.field is None or err.file is not None:
            raise
        raise InputError(err.message, field="--" + err.field.replace("_", "-")) from None
    source = Source(opts["input_path"], opts["limit"])
    outputs = {} if opts["dry_run"] else {"--output": opts["output"], "--judgments": opts.get("judgments_path"),
                                          "--summary": opts.get("summary_path")}  # fmt: skip
    check_files(opts, outputs, str(default_cache_path()))
    family = resolve_family(cfg)  # resolved once, before any model loads: a bad --family fails here
    warn_unknown_family(cfg, family)
    warn_greedy_votes(cfg, family, opts["votes"])
    sink = None if opts["dry_run"] else Sink(streams, run_settings(command, cfg, tournament, settings or {}),
                                             resumable)  # fmt: skip
    resume = sink.resume_point() if sink else Resume()
    planner = Planner(tournament)
    source.scan(row_check(source.name, cfg, family, tournament, check), planner, resume)
    planner.warn_if_huge()
    return Prepared(source, cfg, family, tournament, sink, resume, planner)


def row_check(
    name: str, cfg: JudgeConfig, family: Any, tournament: Tournament, check: Callable[[list, str], None] | None
) -> Callable[[Item], None]:
    """The checks every input row gets before anything is judged: the command's, the simulator's, the family's
    prompt, and the budget (once per number of responses)."""
    sizes: set[int] = set()

    def check_row(item: Item) -> None:
        if check is not None:
            check([item], name)
        if cfg.simulated:
            require_quality([item], name)
        check_prompts([item], family, name)
        if len(item.texts) not in sizes:
            tournament.check([item], name, "--budget")
            sizes.add(len(item.texts))

    return check_row


class Planner:
    """A prompt's planned judgments (an upper bound for adaptive strategies), worked out once per size; it keeps the
    largest prompt's plan, for the warning about a tournament too big to judge."""

    def __init__(self, tournament: Tournament) -> None:
        """Plan for ``tournament``; nothing planned yet."""
        self.tournament = tournament
        self.sizes: dict[int, int] = {}
        self.widest = (0, 0)  # (responses, judgments) of the prompt with the most judgments

    def __call__(self, item: Item) -> int:
        """The judgments planned for ``item``."""
        n = len(item.texts)
        if n not in self.sizes:
            self.sizes[n] = self.tournament.plan([item])
            self.widest = max(self.widest, (n, self.sizes[n]), key=lambda w: w[1])
        return self.sizes[n]

    def warn_if_huge(self) -> None:
        """Say so when one prompt alone plans more judgments than a run of that size is likely meant to make."""
        n, judgments = self.widest
        if judgments < HUGE_PROMPT:
            return
        t, names = self.tournament, ", ".join(budgeted())
        if t.strategy in budgeted() and t.budget is not None:  # the user's own bound: advice to budget is no news
            CONSOLE.warn(f"a prompt with {n:,} responses may make up to {judgments:,} judgments ({t.strategy}, "
                         f"--budget {t.budget} counts judgments per prompt)")  # fmt: skip
            return
        CONSOLE.warn(f"a prompt with {n:,} responses plans {judgments:,} judgments ({t.strategy}, "
                     f"{plural(t.votes, 'vote')} a match); a budgeted strategy ({names}: --budget B) "
                     "or a knockout judges O(N) per prompt")  # fmt: skip


def run_settings(command: str, cfg: JudgeConfig, tournament: Tournament, extra: dict[str, Any]) -> dict[str, Any]:
    """What decides a command's output bytes (a resumed run must match the killed one): not how it is run (mode,
    window, servers, retries), only what is judged and how it is ranked."""
    judge = dataclasses.asdict(cfg)
    for name in ("mode", "base_urls", "concurrency", "max_retries", "api_key_env", "timeout",
                 "gpu_memory_utilization", "replicas", "ray_address", "replica_timeout"):  # fmt: skip
        judge.pop(name, None)
    if judge["backend"] == "ray":  # the same engine as in-process, placed elsewhere: a killed run resumes either way
        judge["backend"] = "vllm"
    judge["sim"].pop("latency", None)
    return {"command": command, "judge": judge, "tournament": dataclasses.asdict(tournament), **extra}


def judge(
    opts: dict[str, Any],
    prep: Prepared,
    each: Callable[[Result], None],
    items: Iterable[Item] | None = None,
    keep_records: bool = False,
) -> tuple[Stream, Any] | None:
    """Stream the tournaments (model logs kept in the log file), ``each(result)`` in input order; returns (stream,
    judge), or None after a dry run. ``items``: the prompts to play (default: the input after the resume point)."""
    from tourney.api import check_context, play
    from tourney.cache import open_cache
    from tourney.config import make_judge

    if items is None:
        items = itertools.islice(prep.source.items(), prep.resume.prompts, None)
    cfg = prep.cfg
    cache = open_cache(opts["cache_path"], opts["no_cache"], opts["dry_run"])
    vllm_logs_off_stdout()
    logs = nullcontext() if cfg.simulated or opts["verbose"] else CONSOLE.logs_to(log_path())
    try:
        with logs:
            the_judge = make_judge(cfg, prep.family)
            with closing(the_judge, getattr(the_judge, "backend", None)):
                more = None if prep.source.complete else prep.source.chunks
                check_context(prep.source.longest, the_judge, prep.name, CONSOLE.warn, more)
                common: dict[str, Any] = {"judge": the_judge, "tournament": prep.tournament, "cache": cache,
                                          "window": opts["window"]}  # fmt: skip
                if opts["dry_run"]:
                    for line in getattr(getattr(the_judge, "backend", None), "plan", list)():
                        CONSOLE.say(line)  # --backend ray: the cluster and where each replica would go
                    planned = Unplayed(prep.planner, cache, the_judge) if prep.tournament.exact() else None
                    if planned is not None:
                        items = planned.filter(items)
                    stream = play(items, lambda res: None, dry_run=True, **common)
                    print_dry_run(stream, prep.tournament, planned)
                    return None
                if prep.resume.prompts:
                    done = plural(prep.resume.prompts, "prompt")
                    CONSOLE.say(f"tourney: continuing a killed run after the {done} it wrote")
                keep = keep_records or bool(opts["judgments_path"])
                with (
                    CONSOLE.progress(prep.source.plan) as bar,
                    writing(prep),
                ):  # plan: a bound for adaptive ones
                    if hasattr(the_judge, "status"):
                        the_judge.status = bar.phase
                    if hasattr(the_judge, "notice"):
                        the_judge.notice = bar.note
                    stream = play(items, each, mode=cfg.engine_mode(), keep_records=keep, progress=bar.advance,
                                  **common)  # fmt: skip
                return stream, the_judge
    except BackendError as err:
        if not (cfg.simulated or opts["verbose"]):
            err.args = (f"{err} (log: {log_path()})",)
        raise
    finally:
        if cache:
            cache.close()
        prep.source.close()


@contextmanager
def closing(thing: Any, backend: Any) -> Iterator[None]:
    """Close ``thing`` (a judge or a backend) at the end. On Ctrl-C, first say so if ``backend``'s vLLM engine is still
    starting: it cannot be stopped while it loads, and closing it waits for that (~20 s for SmolLM2 here, minutes for
    a 32B model), so the wait is not silent."""
    try:
        yield
    except KeyboardInterrupt:
        if getattr(backend, "starting", lambda: False)():
            CONSOLE.say("tourney: stopping once the vLLM engine has loaded (Ctrl-C again ends it now)")
        raise
    finally:
        thing.close()


@contextmanager
def writing(prep: Prepared) -> Iterator[None]:
    """Open the outputs for the run; if it stops early, keep what is written and (on Ctrl-C) say how to go on."""
    sink = prep.sink
    assert sink is not None  # a dry run writes nothing
    sink.open(prep.resume)
    try:
        yield
    except BaseException:
        sink.stop()
        if sink.log is not None and sink.written:  # prepare said what the cache keeps; add where the rows are
            n = sink.written
            CONSOLE.interrupted = (f"{n} prompt{'s' * (n != 1)} written to {sink.where()}, {CONSOLE.interrupted}; "
                                   "run the same command again to continue after them")  # fmt: skip
        elif sink.dropped():
            CONSOLE.interrupted += f"; {sink.dropped()}"
        raise


def finish(
    opts: dict[str, Any], prep: Prepared, stream: Stream, judge: Any, whole: Sequence[Any] = (), **extra: Any
) -> None:
    """Write the summary and the ``whole`` outputs (path, payload) of ``tourney.io.write_all``, then put the streamed
    outputs in place (a failure keeps them resumable); ``extra``: a command's own summary fields."""
    from tourney.io import write_all

    sink = prep.sink
    assert sink is not None
    try:
        sink.flush()
        summary_file = [(opts["summary_path"], [summary(stream, prep, judge, **extra)])] if opts["summary_path"] else []
        write_all([*whole, *summary_file])
        sink.finish()
    except BaseException:
        sink.stop()
        raise


class Unplayed:
    """A dry run's prompts that need no playing: with an exact plan (a round robin) and none of the prompt's
    judgments in the cache, its plan is its count, all new. Playing a round robin of 3,000 responses (4.5 M
    judgments) only to count them took minutes and 4 GB."""

    def __init__(self, planner: Planner, cache: Any, judge: Any) -> None:
        """Read which prompts the cache has judgments of, for this judge."""
        from tourney.cache import prompt_digest

        self.digest, self.planner = prompt_digest, planner
        self.cached = cache.prompts_of(judge.identity()) if cache is not None else set()
        self.prompts = self.judgments = 0

    def filter(self, items: Iterable[Item]) -> Iterator[Item]:
        """The items to play (the cache has some of their judgments); the others are counted from their plan."""
        for item in items:
            if self.cached and self.digest(item.prompt) in self.cached:
                yield item
            else:
                self.prompts += 1
                self.judgments += self.planner(item)


def print_dry_run(stream: Stream, tournament: Tournament, unplayed: Unplayed | None = None) -> None:
    """Print how many judgments the run would make and how many the cache already has."""
    st = stream.stats
    extra = (unplayed.prompts, unplayed.judgments) if unplayed else (0, 0)
    judgments = st.judgments + extra[1]
    new = judgments - st.cached
    click.echo(json.dumps({"prompts": st.prompts + extra[0], "judgments": judgments, "new": new, "cached": st.cached,
                           "strategy": tournament.strategy, "exact": tournament.counted_exactly()}))  # fmt: skip
    if st.judgments and new and tournament.strategy == "knockout":
        CONSOLE.say("tourney: note: a knockout's later rounds depend on verdicts not judged yet; 'new' assumes "
                    "they are not cached either")  # fmt: skip


def summary(stream: Stream, prep: Prepared, judge: Any, **extra: Any) -> str:
    """The ``--summary`` file's text: the run's counters, the tournament, the judge, and a command's ``extra``."""
    fields = (stream.stats.as_dict() | {"all_invalid_prompts": stream.all_invalid}
              | {"position_bias": stream.order.estimate()} | prep.tournament.summary())  # fmt: skip
    fields |= {"resumed_prompts": prep.resume.prompts, "wall_s": round(CONSOLE.elapsed(), 3)}  # start-up included
    return json.dumps(fields | {"judge": judge.identity()} | extra, indent=2, ensure_ascii=False)


def report(stream: Stream, prep: Prepared) -> None:
    """One closing line with the counters, and warnings when the verdicts cannot be trusted or there was nothing to
    judge."""
    st = stream.stats
    if not st.prompts and not prep.resume.prompts:
        CONSOLE.warn(f"{prep.name} has no prompts: nothing to judge")
    CONSOLE.say(f"tourney: {plural(st.judgments, 'judgment')} ({st.cached} cached), {st.invalid} invalid, "
                f"{st.forced} forced, {plural(st.backend_calls, 'judge call')}, "
                f"{plural(st.retries, 'retry', 'retries')}, {CONSOLE.elapsed():.1f} s")  # fmt: skip
    if st.judgments and st.invalid / st.judgments >= WARN_SHARE:
        CONSOLE.warn(f"{st.invalid} of {st.judgments} judgments ({st.invalid / st.judgments:.0%}) had no verdict; "
                     "they abstain, so these rankings rest on few votes")  # fmt: skip
    if st.judgments and st.forced / st.judgments >= WARN_SHARE:
        CONSOLE.warn(f"{st.forced} of {st.judgments} verdicts ({st.forced / st.judgments:.0%}) were forced from "
                     "log-probabilities: the judge rarely wrote a verdict of its own")  # fmt: skip
    bad = stream.all_invalid
    if bad:
        shown = ", ".join(json.dumps(i) for i in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        CONSOLE.warn(f"{plural(len(bad), 'prompt')} got no verdict at all (their rankings say nothing): {shown}")


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
        timeout=opts["timeout"], replicas=opts["replicas"], ray_address=opts["ray_address"],
        replica_timeout=opts["replica_timeout"], sim=sim,
    )  # fmt: skip


def warn_unknown_family(cfg: JudgeConfig, family: Any) -> None:
    """Say which family a model name that names none falls back to, and the budget that comes with it (rm-r1's
    32,768 tokens: a small model that writes no verdict thinks until its context is full)."""
    from tourney.config import judge_sampling
    from tourney.judges import family_from_name
    from tourney.models import builtin_spec

    if cfg.simulated or cfg.family or builtin_spec(cfg.judge) or family_from_name(cfg.judge):
        return
    budget = "" if cfg.max_tokens else f", and its budget of {judge_sampling(cfg, family).max_tokens} tokens a judgment"
    CONSOLE.warn(f"the judge name {cfg.judge!r} names no known family; using rm-r1's prompt and verdict{budget} (set "
                 f"--family{'' if cfg.max_tokens else ' or --max-tokens'})")  # fmt: skip


def warn_greedy_votes(cfg: JudgeConfig, family: Any, votes: int) -> None:
    """Say what more than two votes cost a greedy judge (the simulator samples its votes: exempt)."""
    from tourney.config import greedy_votes, judge_sampling

    if family is None:
        return
    warning = greedy_votes(votes, judge_sampling(cfg, family).temperature)
    if warning:
        CONSOLE.warn(warning)


def check_prompts(items: list, family: Any, path: str) -> None:
    """Render every prompt with the family before any judging, so a prompt it cannot take fails with its line; with
    no family (the simulated judge) the prompt's shape is checked as a family checks it."""
    from tourney.judges.base import conversation_turns

    for item in items:
        if len(item.texts) < 2:
            continue
        try:
            if family is not None:
                family.render(item.prompt, "", "")
            elif not isinstance(item.prompt, str):
                conversation_turns(item.prompt, None)
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
