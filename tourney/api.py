"""The library entry point: ``tourney.rank(items, judge=JudgeConfig(...), tournament=Tournament(...))``.

The CLI, ``experiments/scaling`` and the README's Python example all run rankings through ``rank``: it builds the
judge from its config (or takes one you built and own), checks every prompt against the judge's context before
anything is judged, runs the engine in the judge's mode and returns a ``Run`` (results + counters).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tourney.cache import Cache
from tourney.config import MODES, JudgeConfig, make_judge
from tourney.engine import Engine, Result, Run, Stream, fewer_collections
from tourney.errors import InputError
from tourney.io import Item, parse_line, unique_ids
from tourney.tournament import Tournament
from tourney.types import Judge, JudgeBase, Judgment, Request


def rank(
    items: Iterable[Item | Mapping[str, Any]],
    *,
    judge: JudgeConfig | Judge | None = None,
    tournament: Tournament | None = None,
    cache: Cache | str | Path | None = None,
    mode: str | None = None,
    keep_records: bool = False,
    progress: Callable[[int], None] | None = None,
    dry_run: bool = False,
    source: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> Run:
    """Rank every prompt's responses with a pairwise judge; returns a result per prompt (input order) and counters.

    ``items``: ``Item`` objects (``tourney.io.read_items``) or rows shaped like the JSONL input lines.
    ``judge``: a ``JudgeConfig`` (built here and closed at the end; default: the built-in CPU judge) or a judge you
    built (reused, not closed). ``cache``: a path or an open ``Cache`` (None: no cache). ``mode``: "lockstep" or
    "pipelined" (default: the config's; lockstep for a judge object). ``dry_run``: count judgments and cache hits,
    judge nothing. Every user value is checked before a model loads (``InputError``); ``source`` names the input in
    those errors. ``warn``: where notes about the run go (prompts too long to think in full; default
    ``warnings.warn``).
    """
    prompts = as_items(items)
    tournament = tournament or Tournament()
    tournament.check(prompts, source, "--budget" if source else "budget")
    config = judge if isinstance(judge, JudgeConfig) else JudgeConfig() if judge is None else None
    if mode is not None and mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}", field="mode")
    store = Cache(cache) if isinstance(cache, (str, Path)) else cache
    built = make_judge(config) if config is not None else None
    the_judge: Judge = built if built is not None else judge  # type: ignore[assignment]
    try:
        check_context(prompts, the_judge, source, warn)
        chosen = mode if mode not in (None, "auto") else config.engine_mode() if config else "lockstep"
        results: list[Result] = []
        stream = play(prompts, results.append, judge=the_judge, tournament=tournament, cache=store, mode=chosen,
                      keep_records=keep_records, progress=progress, dry_run=dry_run)  # fmt: skip
        return Run(results, stream.stats)
    finally:
        if built is not None:
            built.close()
        if store is not None and store is not cache:
            store.close()


def play(
    items: Iterable[Item],
    each: Callable[[Result], None],
    *,
    judge: Judge,
    tournament: Tournament,
    cache: Cache | None = None,
    mode: str = "lockstep",
    keep_records: bool = False,
    progress: Callable[[int], None] | None = None,
    dry_run: bool = False,
    window: int | None = None,
) -> Stream:
    """Stream checked ``items`` through the engine: ``each(result)`` is called per prompt, in input order, as soon as
    it and every earlier one are done, with at most ``window`` prompts in flight (None: all). Returns the finished
    stream (its ``stats``, ``all_invalid``). ``dry_run``: count judgments and cache hits, judge nothing."""
    if dry_run:
        engine = Engine(DryJudge(judge), tournament, cache=cache, write_cache=False)
    else:
        engine = Engine(judge, tournament, cache=cache, keep_records=keep_records, progress=progress)
    stream = engine.stream(items, window)
    with fewer_collections():
        if mode == "pipelined" and not dry_run:

            async def drain() -> None:
                async for res in stream:
                    each(res)

            asyncio.run(drain())
        else:
            for res in stream:
                each(res)
    return stream


def as_items(items: Iterable[Item | Mapping[str, Any]]) -> list[Item]:
    """Items as given, rows validated as input lines are (``<items>:K`` names the K-th row); ids must be unique."""
    return unique_ids(
        ("<items>", k, x if isinstance(x, Item) else parse_line(json.dumps(dict(x), ensure_ascii=False), "<items>", k))
        for k, x in enumerate(items, start=1)
    )


def check_context(
    items: Sequence[Item],
    judge: Judge,
    path: str | None = None,
    warn: Callable[[str], None] | None = None,
    more: Callable[[], Iterable[Sequence[Item]]] | None = None,
) -> None:
    """Before the engine starts: refuse a prompt whose judge prompt (its two longest responses) cannot fit the
    context, say once how many prompts leave less than max_tokens to think, and size an in-process engine's context
    to the longest judge prompt + max_tokens (``warn``: where that note goes; default ``warnings.warn``).

    ``items`` may be only the prompts longest in bytes (a streamed input's): then ``more()`` gives every prompt in
    chunks, read only when even the shortest of ``items`` could still matter."""
    backend = getattr(judge, "backend", None)
    limit = backend.context_limit() if backend is not None else 0
    if not limit:
        return  # the simulator, or servers (they say their context only when asked)
    sampling = getattr(judge, "sampling", None)
    max_tokens = int(sampling.max_tokens) if sampling is not None else 1
    fit = getattr(backend, "fit_context", None)  # an in-process engine, with its tokenizer at hand
    # A server counts tokens over HTTP (if at all): ask it only about prompts that may not fit at all, as before.
    scan = max_tokens if fit is not None else 1
    fittable = getattr(backend, "fittable", None)
    fitting = fit is not None and fittable is not None and bool(fittable())
    longest, over, exhausted = prompt_lengths(items, judge, limit, scan, fitting)
    if exhausted and more is not None:
        seen = {item.line for item, _ in over}
        for chunk in more():
            size, extra, _ = prompt_lengths(chunk, judge, limit, scan, fitting)
            longest = max(longest, size)
            over += [(item, n) for item, n in extra if item.line not in seen]
        over.sort(key=lambda x: x[0].line or 0)
    for item, n in over:
        if n + 1 > limit:
            why = f"the judge prompt for its two longest responses has {n} tokens; the judge's context is {limit}"
            hint = context_hint(backend, n + 1, "shorten them")
            raise InputError(f"{why} ({hint})", path, item.line, "responses")
    if over and fit is not None:
        n = max(n for _, n in over)
        fixes = "lower --max-tokens or shorten the responses to avoid it"
        note = (f"{len(over)} prompt(s) leave less than --max-tokens {max_tokens} to think within the judge's "
                f"{limit}-token context (largest judge prompt: {n} tokens); vLLM cuts those judgments' thinking "
                f"short to fit ({context_hint(backend, n + max_tokens, fixes)})")  # fmt: skip
        (warn or _warn)(note)
    if fitting and fit is not None and longest:
        fit(longest + max_tokens)


def prompt_lengths(
    items: Sequence[Item], judge: Judge, limit: int, max_tokens: int, fitting: bool
) -> tuple[int, list[tuple[Item, int]], bool]:
    """The longest judge prompt in tokens (when ``fitting``), the (item, tokens) whose prompt + max_tokens exceeds
    ``limit``, and whether every item was counted (so prompts not given could matter too). Each prompt's longest pair
    only; cheap for large inputs: a token covers at least one UTF-8 byte, so candidates are visited longest first and
    counted only while their bytes could still matter."""
    judged = [item for item in items if len(item.texts) >= 2]
    if not judged:
        return 0, [], False
    if fitting:  # a local tokenizer: the template's own tokens (and a short prompt's) are cheap to count
        shortest = min(judged, key=lambda item: len("".join(map(str, item.prompt))))
        empty = judge.prompt_tokens(shortest.prompt, "", "")  # type: ignore[attr-defined]
    else:  # a server counts: ask it only about prompts near the limit, with room for any template
        empty = 1000
    bounds = []
    for item in judged:
        a, b = sorted(item.texts, key=len)[-2:]
        size = len(("".join(map(str, item.prompt)) + a + b).encode())
        bounds.append((size + empty + 16, item, a, b))  # 16: tokens that may split where texts meet the template
    bounds.sort(key=lambda x: -x[0])
    longest, over = 0, list[tuple[Item, int]]()
    for bound, item, a, b in bounds:
        if (not fitting or bound <= longest) and bound + max_tokens <= limit:
            return longest, sorted(over, key=lambda x: x[0].line or 0), False  # every later one is shorter still
        n = judge.prompt_tokens(item.prompt, b, a)  # type: ignore[attr-defined]
        longest = max(longest, n)
        if n + max_tokens > limit:
            over.append((item, n))
    return longest, sorted(over, key=lambda x: x[0].line or 0), True


def context_hint(backend: Any, needed: int, fixes: str) -> str:
    """``fixes``, led by --max-model-len when raising it can work (never past the model's own limit)."""
    model = backend.model_limit() if hasattr(backend, "model_limit") else 0
    if model and needed <= model and backend.context_limit() < model:
        return f"raise --max-model-len (the model allows {model}) or {fixes}"
    return fixes


def _warn(message: str) -> None:
    """The library's default for notes: a Python warning."""
    import warnings

    warnings.warn(message, stacklevel=3)


class DryJudge(JudgeBase):
    """Stands in for the judge in a dry run: same identity (so cache hits are real), never judges."""

    def __init__(self, inner: Judge) -> None:
        """Wrap the real judge (its model is never loaded)."""
        self.inner = inner

    def identity(self) -> dict[str, Any]:
        """The real judge's identity."""
        return self.inner.identity()

    def key_fields(self) -> tuple[str, ...]:
        """The real judge's key fields."""
        return self.inner.key_fields()

    def judge(self, requests: Sequence[Request]) -> list[Judgment]:
        """An invalid judgment for each request (it abstains; nothing is stored)."""
        return [Judgment(None, None, "[dry run]") for _ in requests]
