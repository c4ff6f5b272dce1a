"""The engine: one tournament per prompt, every ready judgment batched across prompts, every judgment cached.

Lockstep (``Engine.run``): each step collects the votes every tournament can play now and sends them to the judge
in ONE call, so a knockout over P prompts costs ⌈log2 N⌉ judge calls, not P × rounds. Pipelined (``Engine.arun``):
each tournament advances as soon as its own matches are judged, with no barrier across prompts; the backend
(vLLM's async engine or a pool of servers) batches whatever is in flight. Both go through the same step (read the
cache, judge what is missing, commit it, then deliver), and a pipelined run does its SQLite work on one worker
thread, off the event loop that feeds the judge.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from tourney.cache import Cache, canonical, encoded_key, judge_hash
from tourney.errors import BackendError
from tourney.io import Item
from tourney.tournament import Tournament, derive_seed, encoded_seed
from tourney.types import Counters, Judge, Judgment, Request

if TYPE_CHECKING:
    from strategies.voting import Vote, Voting

__all__ = ["Engine", "Record", "Result", "Run", "Stats", "derive_seed"]

T = TypeVar("T")


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

    def run(self, items: Sequence[Item]) -> Run:
        """Run every tournament in lockstep: one judge call per step for all ready votes across prompts."""
        state = _State(self, items)
        while True:
            ready = [v for k, tour in enumerate(state.tours) if not tour.done() for v in state.ready(k)]
            if not ready:
                break
            batch = self._lookup(state, ready)
            if batch.todo:
                with state.calling(batch):
                    fresh = self.judge.judge(batch.todo_requests())
                self._commit(state, batch, fresh)
            self._deliver(state, batch)
        return state.finish()

    async def arun(self, items: Sequence[Item]) -> Run:
        """Run every tournament pipelined: each advances as soon as its own votes are judged."""
        state = _State(self, items)
        db = ThreadPoolExecutor(1, thread_name_prefix="tourney-cache") if self.cache else None
        loop = asyncio.get_running_loop()

        async def off_loop(fn: Callable[..., T], *args: Any) -> T:
            # SQLite reads and commits run on one worker thread: the event loop keeps feeding the judge meanwhile.
            return await loop.run_in_executor(db, fn, *args) if db else fn(*args)

        async def play(k: int) -> None:
            while not state.tours[k].done():
                ready = state.ready(k)
                if not ready:
                    break  # proposing finished it
                batch = await off_loop(self._lookup, state, ready)
                if batch.todo:
                    with state.calling(batch):
                        fresh = await self.judge.ajudge(batch.todo_requests())
                    await off_loop(self._commit, state, batch, fresh)
                self._deliver(state, batch)

        try:
            await asyncio.gather(*(play(k) for k in range(len(items))))
        finally:
            if db:
                db.shutdown()
        return state.finish()

    def _lookup(self, state: _State, ready: list[tuple[int, Vote]]) -> _Batch:
        """Key every vote, read what the cache has, and build requests for what is left to judge (each key once)."""
        keys = [self.key(state.encoded(k), vote) for k, vote in ready]
        found = self.cache.get_many(keys) if self.cache else {}
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in found and key not in todo:
                todo[key] = i
        requests = {i: self.request(state.items[ready[i][0]], ready[i][1], state.encoded(ready[i][0]))
                    for i in todo.values()}  # fmt: skip
        return _Batch(state.items, ready, requests, keys, found, todo, hits=set(found))

    def _commit(self, state: _State, batch: _Batch, fresh: list[Judgment]) -> None:
        """Commit new judgments to the cache, then count them; only then may strategies see them."""
        if len(fresh) != len(batch.todo):
            raise BackendError(f"judge returned {len(fresh)} judgments for {len(batch.todo)} requests")
        new = dict(zip(batch.todo, fresh))
        if self.cache and self.write_cache:
            self.cache.put_many(self.judge_id, ((k, batch.requests[batch.todo[k]], j) for k, j in new.items()))
        batch.found.update(new)
        st = state.stats
        st.backend_calls += 1
        for j in fresh:
            st.prompt_tokens += j.prompt_tokens
            st.completion_tokens += j.completion_tokens

    def _deliver(self, state: _State, batch: _Batch) -> None:
        """Hand each vote's outcome to its tournament and record it."""
        st, results = state.stats, state.results
        for k in {k for k, _ in batch.ready}:
            results[k].rounds += 1
        for (k, vote), key in zip(batch.ready, batch.keys):
            j = batch.found[key]
            res = results[k]
            res.judgments += 1
            res.invalid += j.p_a is None
            res.prompt_tokens += j.prompt_tokens
            res.completion_tokens += j.completion_tokens
            st.judgments += 1
            st.cached += key in batch.hits
            st.invalid += j.p_a is None
            st.forced += j.forced
            if self.keep_records:
                res.records.append(Record(res.item.id, vote.a, vote.b, vote.vote, j.verdict, j.p_a, j.forced, j.raw))
            state.tours[k].receive(vote.id, j.p_a)
        if self.progress:
            self.progress(len(batch.ready))


class _State:
    """One run's tournaments, results and counters (so a second run of the same engine starts from zero)."""

    def __init__(self, engine: Engine, items: Sequence[Item]) -> None:
        """Build every prompt's tournament and start the clocks."""
        self.engine, self.items = engine, items
        self.start, self.retries_before = time.perf_counter(), engine.judge.retries()
        self.tours: list[Voting] = [engine.tournament.build(len(item.texts), item.id) for item in items]
        self.results = [Result(item, [], []) for item in items]
        self.stats = Stats()
        self._in_flight, self._busy_since = 0, 0.0
        self._encoded: dict[int, _Encoded] = {}

    def encoded(self, k: int) -> _Encoded:
        """Prompt ``k``'s texts as JSON, encoded once for all its votes' keys and seeds."""
        enc = self._encoded.get(k)
        if enc is None:
            enc = self._encoded[k] = _Encoded(self.items[k], self.engine.key_fields)
        return enc

    def ready(self, k: int) -> list[tuple[int, Vote]]:
        """The votes prompt ``k``'s tournament can play now; a tournament that is not done must propose some.

        Proposing may itself finish a tournament (adaptive voting settles its last match on the votes it has), so
        nothing to propose is a stall only if the tournament is still not done.
        """
        votes = [(k, vote) for vote in self.tours[k].propose()]
        if not votes and not self.tours[k].done():
            item = self.items[k]
            raise RuntimeError(f"strategy {self.engine.tournament.strategy} stalled on prompt {item.id!r} "
                               f"(input line {item.line}): not done, nothing to propose")  # fmt: skip
        return votes

    @contextmanager
    def calling(self, batch: _Batch) -> Iterator[None]:
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

    def finish(self) -> Run:
        """Read final scores and rankings and close the counters."""
        st = self.stats
        for tour, res in zip(self.tours, self.results):
            res.scores = [round(float(s), 6) + 0.0 for s in tour.scores()]  # + 0.0 turns -0.0 into 0.0
            res.ranking = list(tour.ranking())
            st.ties += tour.all_invalid
        st.prompts = len(self.results)
        st.steps = max((r.rounds for r in self.results), default=0)
        st.wall_s = time.perf_counter() - self.start
        st.retries = self.engine.judge.retries() - self.retries_before
        return Run(self.results, st)


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

    items: Sequence[Item]
    ready: list[tuple[int, Vote]]
    requests: dict[int, Request]  # by position in ``ready``: only the votes still to judge
    keys: list[str]
    found: dict[str, Judgment]
    todo: dict[str, int]
    hits: set[str]

    def todo_requests(self) -> list[Request]:
        """The requests still to judge, in order."""
        return [self.requests[i] for i in self.todo.values()]

    def locate(self, err: BackendError) -> BackendError:
        """Name the prompt behind a backend error that points at one request of this batch."""
        index = getattr(err, "index", None)
        if index is None or not 0 <= index < len(self.todo):
            return err
        item = self.items[self.ready[list(self.todo.values())[index]][0]]
        return BackendError(f"prompt {json.dumps(item.id)} (input line {item.line}): {err}")
