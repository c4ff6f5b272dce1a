"""The engine: one tournament per prompt, every ready judgment batched across prompts, every judgment cached.

Lockstep (``Engine.run``): each step collects the votes every tournament can play now and sends them to the judge
in ONE call (split only past ``MAX_CALL`` votes), so a knockout over P prompts costs ⌈log2 N⌉ judge calls, not
P × rounds. Pipelined (``Engine.arun``):
each tournament advances as soon as its own matches are judged, with no barrier across prompts; the backend
(vLLM's async engine or a pool of servers) batches whatever is in flight. Both go through the same step (read the
cache, judge what is missing, commit it, then deliver), and a pipelined run does its SQLite work on one worker
thread, off the event loop that feeds the judge, and its strategy work on another once a step takes over
``SLOW_STEP_S`` on average (a Swiss matching or a Bradley–Terry fit on many candidates).

Both stream (``Engine.stream``): prompts are read lazily, at most a window of them is held, and each prompt's result
is handed out, in input order, as soon as it and every earlier one is done. Every request's sampling seed depends
only on what it judges, so the window and the mode never change a result.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from strategies.order_effect import OrderCounts
from tourney.cache import Cache, canonical, encoded_key, judge_hash
from tourney.errors import BackendError
from tourney.io import Item
from tourney.tournament import Tournament, derive_seed, encoded_seed
from tourney.types import Counters, Judge, Judgment, Request

if TYPE_CHECKING:
    from strategies.voting import Vote, Voting

__all__ = ["Engine", "Record", "Result", "Run", "Stats", "Stream", "derive_seed", "fewer_collections"]

T = TypeVar("T")

# The most votes one lockstep judge call carries: a window of round robins is ~500k votes at once, and their requests,
# keys and judgments held together cost GBs; a few calls of this size still fill any GPU's batch.
MAX_CALL = 16384
ADMIT = 64  # prompts a pipelined run admits between turns of the event loop
# A pipelined run moves strategy work (propose, receive) to a worker thread once its steps take this long on average:
# the event loop then keeps feeding the judge between the thread's GIL slices instead of waiting for a whole fit or
# matching. Cheaper steps stay on the loop, where a thread hand-off (~50 µs) would cost more than the step.
SLOW_STEP_S = 0.001
# The cyclic GC's thresholds during a run. A run allocates a few hundred small, acyclic objects per judgment while
# the window holds millions more; at Python's default (700, 10, 10) the collector rescans those again and again and
# took ~40 % of a simulated knockout's coordinator time (experiments/bench_scale.py measures it).
GC_THRESHOLDS = (50_000, 20, 100)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the enclosed work with the cyclic GC's thresholds at ``GC_THRESHOLDS`` and everything alive before it
    frozen (``gc.freeze``: imported modules, a loaded model's objects are never rescanned); restored afterwards.
    A caller that froze objects itself keeps them frozen (nothing is frozen or unfrozen then)."""
    before, mine = gc.get_threshold(), gc.get_freeze_count() == 0
    if mine:
        gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        if mine:
            gc.unfreeze()


@dataclass
class Stats(Counters):
    """Counters of one run; ``judgments`` counts every vote used, ``cached`` those read back from the cache."""

    judgments: int = 0
    cached: int = 0
    invalid: int = 0
    ties: int = 0  # matches whose votes were all invalid, counted as 0.5
    forced: int = 0
    retries: int = 0  # backend calls that failed and were tried again (servers: 429, 5xx, resets, timeouts)
    steps: int = 0  # the most rounds (propose, judge, receive) any one prompt went through, cached rounds included
    judge_s: float = 0.0
    peak_held: int = 0  # the most prompts held at once (admitted, not yet handed out): at most the window


@dataclass(frozen=True)
class Record:
    """One judgment as the engine used it: who was shown as A and B, the vote index and the verdict."""

    prompt_id: Any
    a: int
    b: int
    vote: int
    verdict: str | None
    p_a: float | None
    forced: bool
    raw: str

    def line(self) -> str:
        """This judgment as a ``--judgments`` JSONL line."""
        return json.dumps({"id": self.prompt_id, "a": self.a, "b": self.b, "vote": self.vote, "verdict": self.verdict,
                           "p_a": self.p_a, "forced": self.forced, "raw": self.raw}, ensure_ascii=False)  # fmt: skip


@dataclass
class Result:
    """The outcome for one prompt: scores in input order, ranking best first, and its judgments."""

    item: Item
    scores: list[float]
    ranking: list[int]
    records: list[Record] = field(default_factory=list)
    judgments: int = 0
    invalid: int = 0  # judgments without a verdict (they abstain)
    rounds: int = 0
    prompt_tokens: int = 0  # of every judgment used, cached ones included
    completion_tokens: int = 0
    intervals: list[list[float]] | None = None  # (lower, upper) per candidate, with ``Tournament.intervals``


@dataclass(repr=False)
class Run:
    """What one run returns: a result per prompt, in input order, and the run's counters."""

    results: list[Result]
    stats: Stats

    def __repr__(self) -> str:
        # Short on purpose: asyncio.run formats the finished task's result (Python 3.11, in a SIGINT-handler check),
        # and a repr of every result's texts cost seconds on large runs.
        return f"Run({len(self.results)} results, {self.stats.judgments} judgments)"

    def all_invalid(self) -> list[Any]:
        """Ids of the prompts whose every judgment had no verdict (their ranking is the input order)."""
        return [r.item.id for r in self.results if r.judgments and r.invalid == r.judgments]


class Engine:
    """Runs many tournaments against one judge, with batching, caching and counting.

    ``tournament`` says how each prompt is played; ``cache`` stores every judgment before a strategy sees it
    (``write_cache=False``: read only, for dry runs); ``keep_records`` keeps each judgment in its result; ``progress``
    is called with the number of votes just resolved.
    """

    def __init__(
        self,
        judge: Judge,
        tournament: Tournament | None = None,
        *,
        cache: Cache | None = None,
        keep_records: bool = False,
        write_cache: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Configure the engine; nothing is judged until ``run`` or ``arun``."""
        self.judge, self.tournament = judge, tournament or Tournament()
        self.cache, self.keep_records, self.write_cache, self.progress = cache, keep_records, write_cache, progress
        self.judge_id = cache.register(judge.identity()) if cache else judge_hash(judge.identity())
        self.key_fields = tuple(judge.key_fields())
        self._judge_json = canonical(self.judge_id)

    def request(self, item: Item, vote: Vote, enc: _Encoded) -> Request:
        """Build the judge request for one vote (``enc``: the prompt's encoded texts); its sampling seed depends only
        on what it judges."""
        seed = encoded_seed(enc.prompt_seed, enc.texts[vote.a], enc.texts[vote.b], str(vote.vote))  # derive_seed's
        return Request(prompt=item.prompt, a=item.texts[vote.a], b=item.texts[vote.b], vote=vote.vote, seed=seed,
                       a_fields=item.fields[vote.a], b_fields=item.fields[vote.b])  # fmt: skip

    def key(self, enc: _Encoded, vote: Vote) -> str:
        """The cache key of one vote (``tourney.cache.request_key``'s value, from the prompt's encoded texts)."""
        fields = (enc.fields[vote.a], enc.fields[vote.b]) if self.key_fields else ()
        return encoded_key(self._judge_json, enc.prompt_key, enc.texts[vote.a], enc.texts[vote.b], vote.vote, *fields)

    def run(self, items: Iterable[Item], window: int | None = None) -> Run:
        """Run every tournament in lockstep (one judge call per step for all ready votes) and collect the results."""
        stream = self.stream(items, window)
        with fewer_collections():
            return Run(list(stream), stream.stats)

    async def arun(self, items: Iterable[Item], window: int | None = None) -> Run:
        """Run every tournament pipelined (each advances as soon as its own votes are judged); collect the results."""
        stream = self.stream(items, window)
        with fewer_collections():
            return Run([res async for res in stream], stream.stats)

    def stream(self, items: Iterable[Item], window: int | None = None) -> Stream:
        """The results of ``items``' tournaments, one per prompt in input order, as soon as each and every earlier
        one is done: ``for`` plays them in lockstep, ``async for`` pipelined. ``items`` is read lazily and at most
        ``window`` prompts (default: all) are held at once, so memory is bounded by the window, not the input."""
        return Stream(self, items, window)

    def _lookup(self, ready: list[tuple[_Slot, Vote]]) -> _Batch:
        """Key every vote, read what the cache has, and build requests for what is left to judge (each key once)."""
        keys = [self.key(slot.encoded(self.key_fields), vote) for slot, vote in ready]
        found = self.cache.get_many(keys) if self.cache else {}
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in found and key not in todo:
                todo[key] = i
        requests = {}
        for i in todo.values():
            slot, vote = ready[i]
            requests[i] = self.request(slot.result.item, vote, slot.encoded(self.key_fields))
        return _Batch(ready, requests, keys, found, todo, hits=set(found))

    def _advance_cached(self, batch: _Batch) -> int:
        """Move the bar at once by the votes of ``batch`` the cache answered, before any judging; how many (0, and
        nothing counted, without a bar)."""
        return self._advance(batch.cached_votes()) if self.progress else 0

    def _advance(self, done: int) -> int:
        """Move the progress bar by ``done`` judgments (if there is a bar and some are done); return ``done``."""
        if self.progress and done:
            self.progress(done)
        return done

    def _commit(self, stats: Stats, batch: _Batch, fresh: list[Judgment]) -> None:
        """Commit new judgments to the cache, then count them; only then may strategies see them."""
        if len(fresh) != len(batch.todo):
            raise BackendError(f"judge returned {len(fresh)} judgments for {len(batch.todo)} requests")
        new = dict(zip(batch.todo, fresh))
        if self.cache and self.write_cache:
            self.cache.put_many(self.judge_id, ((k, batch.requests[batch.todo[k]], j) for k, j in new.items()))
        batch.found.update(new)
        stats.backend_calls += 1
        for j in fresh:
            stats.prompt_tokens += j.prompt_tokens
            stats.completion_tokens += j.completion_tokens

    def _deliver(self, stats: Stats, batch: _Batch, step: object) -> None:
        """Hand each vote's outcome to its tournament and record it; ``step`` names the round (a lockstep step split
        into several calls is one round for its prompts)."""
        for slot, _ in batch.ready:
            if slot.step is not step:
                slot.step = step
                slot.result.rounds += 1
        keep = self.keep_records
        for (slot, vote), key in zip(batch.ready, batch.keys):
            j = batch.found[key]
            res = slot.result
            res.judgments += 1
            res.invalid += j.p_a is None
            res.prompt_tokens += j.prompt_tokens
            res.completion_tokens += j.completion_tokens
            stats.judgments += 1
            stats.cached += key in batch.hits
            stats.invalid += j.p_a is None
            stats.forced += j.forced
            if keep:
                res.records.append(Record(res.item.id, vote.a, vote.b, vote.vote, j.verdict, j.p_a, j.forced, j.raw))
            slot.tour.receive(vote.id, j.p_a)


class Stream:
    """One run over a stream of prompts: iterate it (``for``: lockstep, ``async for``: pipelined) for each prompt's
    ``Result`` in input order; ``stats`` counts the run so far (final once the iteration ends).

    At most ``window`` prompts are held at once (admitted, not yet handed out; ``stats.peak_held`` is the most ever
    held) and ``all_invalid`` lists the prompts handed out whose every judgment had no verdict.
    """

    def __init__(self, engine: Engine, items: Iterable[Item], window: int | None = None) -> None:
        """Prepare the run; nothing is read or judged before the iteration starts."""
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.engine, self.window = engine, window
        self.stats = Stats()
        self.all_invalid: list[Any] = []
        self.order = OrderCounts()  # position bias: pairs judged both ways, over the prompts handed out
        self._items = iter(items)
        self._slots: deque[_Slot] = deque()  # held, in input order: the head is the next to hand out
        self._exhausted = False
        self._in_flight, self._busy_since = 0, 0.0
        self._start = self._retries_before = 0.0

    def _admit(self, most: int | None = None) -> list[_Slot]:
        """Read prompts while the window has room (``most`` of them at most); build each one's tournament."""
        new: list[_Slot] = []
        while not self._exhausted and (self.window is None or len(self._slots) < self.window):
            if most is not None and len(new) >= most:
                break
            item = next(self._items, None)
            if item is None:
                self._exhausted = True
                break
            slot = _Slot(item, self.engine.tournament.build(len(item.texts), item.id))
            self._slots.append(slot)
            new.append(slot)
        self.stats.peak_held = max(self.stats.peak_held, len(self._slots))
        return new

    def _begin(self) -> None:
        """Start the clocks."""
        self._start, self._retries_before = time.perf_counter(), self.engine.judge.retries()

    def _hand_out(self, slot: _Slot) -> Result:
        """Read a finished prompt's scores and ranking and count it."""
        st, res, tour = self.stats, slot.result, slot.tour
        res.scores = [round(float(s), 6) + 0.0 for s in tour.scores()]  # + 0.0 turns -0.0 into 0.0
        res.ranking = list(tour.ranking())
        if self.engine.tournament.intervals:
            lower, upper = tour.inner.intervals()  # type: ignore[attr-defined]  # round robin (checked)
            res.intervals = [[round(float(a), 6) + 0.0, round(float(b), 6) + 0.0] for a, b in zip(lower, upper)]
        st.ties += tour.all_invalid
        self.order.add(tour.order_counts())
        st.prompts += 1
        st.steps = max(st.steps, res.rounds)
        if res.judgments and res.invalid == res.judgments:
            self.all_invalid.append(res.item.id)
        self._close_clock()
        return res

    def _close_clock(self) -> None:
        """Bring wall time and retries up to now."""
        self.stats.wall_s = time.perf_counter() - self._start
        self.stats.retries = int(self.engine.judge.retries() - self._retries_before)

    def _ready(self, slot: _Slot) -> list[tuple[_Slot, Vote]]:
        """The votes a prompt's tournament can play now; a tournament that is not done must propose some.

        Proposing may itself finish a tournament (adaptive voting settles its last match on the votes it has), so
        nothing to propose is a stall only if the tournament is still not done.
        """
        votes = [(slot, vote) for vote in slot.tour.propose()]
        if not votes and not slot.tour.done():
            item = slot.result.item
            raise RuntimeError(f"strategy {self.engine.tournament.strategy} stalled on prompt {item.id!r} "
                               f"(input line {item.line}): not done, nothing to propose")  # fmt: skip
        return votes

    def _next(self, slot: _Slot) -> list[tuple[_Slot, Vote]]:
        """A pipelined prompt's next votes; none once its tournament is done."""
        return [] if slot.tour.done() else self._ready(slot)

    @contextmanager
    def _calling(self, batch: _Batch) -> Iterator[None]:
        """Time one judge call (judge_s counts the time at least one is in flight) and point an error at its prompt."""
        if self._in_flight == 0:
            self._busy_since = time.perf_counter()
        self._in_flight += 1
        try:
            yield
        except BackendError as err:
            raise batch.locate(err) from None
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.stats.judge_s += time.perf_counter() - self._busy_since

    def __iter__(self) -> Iterator[Result]:
        """Lockstep: each step sends every ready vote of the window to the judge in one call (of MAX_CALL at most)."""
        engine = self.engine
        self._begin()
        self._admit()
        while self._slots:
            ready = [v for slot in self._slots if not slot.tour.done() for v in self._ready(slot)]
            step = object()
            for start in range(0, len(ready), MAX_CALL):  # a step's votes, in calls of at most MAX_CALL
                batch = engine._lookup(ready[start : start + MAX_CALL])
                cached = engine._advance_cached(batch)
                if batch.todo:
                    with self._calling(batch):
                        fresh = engine.judge.judge(batch.todo_requests())
                    engine._commit(self.stats, batch, fresh)
                engine._deliver(self.stats, batch, step)
                engine._advance(len(batch.ready) - cached)
            while self._slots and self._slots[0].tour.done():
                yield self._hand_out(self._slots.popleft())
            self._admit()
        self._close_clock()

    async def __aiter__(self) -> AsyncIterator[Result]:
        """Pipelined: each prompt's tournament runs as its own task and advances as soon as its votes are judged."""
        engine, stats = self.engine, self.stats
        db = ThreadPoolExecutor(1, thread_name_prefix="tourney-cache") if engine.cache else None
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[None] = loop.create_future()

        async def off_loop(fn: Callable[..., T], *args: Any) -> T:
            # SQLite reads and commits run on one worker thread: the event loop keeps feeding the judge meanwhile.
            return await loop.run_in_executor(db, fn, *args) if db else fn(*args)

        pool: list[ThreadPoolExecutor] = []  # the strategy thread, once a step was slow
        step_s = 0.0  # moving average of a strategy step's time

        async def strategy(fn: Callable[..., T], *args: Any) -> T:
            # One thread for every tournament's strategy work keeps each prompt's calls in order, as on the loop.
            def timed() -> T:
                nonlocal step_s
                t0 = time.perf_counter()
                try:
                    return fn(*args)
                finally:
                    step_s += 0.05 * (time.perf_counter() - t0 - step_s)

            if step_s <= SLOW_STEP_S:
                return timed()
            if not pool:
                pool.append(ThreadPoolExecutor(1, thread_name_prefix="tourney-strategy"))
            return await loop.run_in_executor(pool[0], timed)

        async def play(slot: _Slot) -> None:
            while ready := await strategy(self._next, slot):
                batch = await off_loop(engine._lookup, ready)
                cached = engine._advance_cached(batch)
                if batch.todo:
                    with self._calling(batch):
                        fresh = await engine.judge.ajudge(batch.todo_requests())
                    await off_loop(engine._commit, stats, batch, fresh)
                await strategy(engine._deliver, stats, batch, object())
                engine._advance(len(batch.ready) - cached)

        def watch(task: asyncio.Task[None]) -> None:
            # A failure anywhere in the window ends the run now, not when its prompt reaches the head.
            if not task.cancelled() and task.exception() is not None and not failed.done():
                failed.set_exception(task.exception())  # type: ignore[arg-type]

        tasks: dict[int, asyncio.Task[None]] = {}

        def start(slots: list[_Slot]) -> None:
            for slot in slots:
                task = tasks[id(slot)] = loop.create_task(play(slot))
                task.add_done_callback(watch)

        async def fill() -> None:
            # A few prompts at a time, so the first requests go out before the whole window is built.
            while slots := self._admit(ADMIT):
                start(slots)
                await asyncio.sleep(0)

        self._begin()
        try:
            await fill()
            while self._slots:
                head = tasks[id(self._slots[0])]
                await asyncio.wait([head, failed], return_when=asyncio.FIRST_COMPLETED)
                if failed.done():
                    failed.result()  # raises the first failure
                head.result()
                del tasks[id(self._slots[0])]
                yield self._hand_out(self._slots.popleft())
                await fill()
            self._close_clock()
        finally:
            for task in tasks.values():
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks.values(), return_exceptions=True)
            if failed.done() and not failed.cancelled():
                failed.exception()  # retrieved: no "exception was never retrieved" noise
            if db:
                db.shutdown()
            if pool:
                pool[0].shutdown()


class _Slot:
    """One held prompt: its tournament, its result so far and (once needed) its encoded texts."""

    __slots__ = ("tour", "result", "step", "_encoded")

    def __init__(self, item: Item, tour: Voting) -> None:
        """A prompt admitted to the window."""
        self.tour, self.result = tour, Result(item, [], [])
        self.step: object = None  # the round its last votes were delivered in
        self._encoded: _Encoded | None = None

    def encoded(self, key_fields: tuple[str, ...]) -> _Encoded:
        """The prompt's texts as JSON, encoded once for all its votes' keys and seeds."""
        if self._encoded is None:
            self._encoded = _Encoded(self.result.item, key_fields)
        return self._encoded


class _Encoded:
    """One prompt's parts as JSON, for its cache keys (compact) and request seeds (``derive_seed``'s encoding)."""

    def __init__(self, item: Item, key_fields: tuple[str, ...]) -> None:
        """Encode the prompt, each response text and, when the judge reads them, each response's key fields."""
        self.prompt_key = canonical(item.prompt)
        self.prompt_seed = json.dumps(item.prompt, sort_keys=True, ensure_ascii=False)
        self.texts = [canonical(t) for t in item.texts]  # a string's JSON is the same in both encodings
        self.fields = [canonical([f.get(name) for name in key_fields]) for f in item.fields] if key_fields else []


@dataclass
class _Batch:
    """The votes of one step: their requests and keys, judgments found so far, and keys still to judge."""

    ready: list[tuple[_Slot, Vote]]
    requests: dict[int, Request]  # by position in ``ready``: only the votes still to judge
    keys: list[str]
    found: dict[str, Judgment]
    todo: dict[str, int]
    hits: set[str]

    def cached_votes(self) -> int:
        """How many of the step's votes the cache answered (shown as done at once, before any judging)."""
        return sum(key in self.hits for key in self.keys) if self.hits else 0

    def todo_requests(self) -> list[Request]:
        """The requests still to judge, in order."""
        return [self.requests[i] for i in self.todo.values()]

    def locate(self, err: BackendError) -> BackendError:
        """Name the prompt behind a backend error that points at one request of this batch."""
        index = getattr(err, "index", None)
        if index is None or not 0 <= index < len(self.todo):
            return err
        item = self.ready[list(self.todo.values())[index]][0].result.item
        return BackendError(f"prompt {json.dumps(item.id)} (input line {item.line}): {err}")
