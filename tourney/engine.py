"""The engine: one tournament per prompt, every ready judgment batched across prompts, every judgment cached.

Lockstep (``Engine.run``): each step collects the votes every tournament can play now and sends them to the judge
in ONE call, so a knockout over P prompts costs ⌈log2 N⌉ judge calls, not P × rounds. Pipelined (``Engine.arun``):
each tournament advances as soon as its own matches are judged, with no barrier across prompts; the backend
(vLLM's async engine or a pool of servers) batches whatever is in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from strategies import Vote, Voting
from strategies.registry import make_tournament
from tourney.cache import Cache, judge_hash, request_key
from tourney.errors import BackendError
from tourney.io import Item
from tourney.types import Judge, Judgment, Request


@dataclass
class Stats:
    """Counters of one run; ``judgments`` counts every vote used, ``cached`` those read back from the cache."""

    prompts: int = 0
    judgments: int = 0
    cached: int = 0
    invalid: int = 0
    ties: int = 0  # matches whose votes were all invalid, counted as 0.5
    forced: int = 0
    backend_calls: int = 0
    retries: int = 0  # backend calls that failed and were tried again (servers: 429, 5xx, resets, timeouts)
    prompt_tokens: int = 0  # of new judgments only: what this run spent
    completion_tokens: int = 0
    steps: int = 0  # the most rounds (propose, judge, receive) any one prompt went through, cached rounds included
    judge_s: float = 0.0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as a JSON-able dict (times rounded to ms)."""
        out = asdict(self)
        out["judge_s"], out["wall_s"] = round(self.judge_s, 3), round(self.wall_s, 3)
        return out


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


def derive_seed(*parts: Any) -> int:
    """Derive a stable 63-bit seed from JSON-able parts (no dependence on Python's salted hash)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def plan(
    items: Sequence[Item],
    *,
    strategy: str = "knockout",
    votes: int = 1,
    seed: int = 0,
    budget: int | None = None,
    adaptive_votes: bool = False,
) -> int:
    """Count the judgments a run would make (an upper bound for adaptive strategies), without a judge."""
    return sum(
        make_tournament(strategy, len(item.texts), seed=derive_seed(seed, item.id), votes=votes, budget=budget,
                        adaptive_votes=adaptive_votes).budget()
        for item in items
    )  # fmt: skip


class Engine:
    """Runs many tournaments against one judge, with batching, caching and counting."""

    def __init__(
        self,
        judge: Judge,
        *,
        strategy: str = "knockout",
        rating: str = "elo",
        votes: int = 1,
        seed: int = 0,
        cache: Cache | None = None,
        progress: Callable[[int], None] | None = None,
        keep_records: bool = False,
        elo_k: float = 32.0,
        write_cache: bool = True,
        budget: int | None = None,
        adaptive_votes: bool = False,
    ) -> None:
        """Configure a run; ``progress`` is called with the number of votes just resolved.

        ``budget`` caps the judgments (votes included) per prompt; ``adaptive_votes`` stops a match's ``votes`` once
        their majority is decided (see ``strategies.registry.make_tournament``).
        """
        self.judge, self.strategy, self.rating, self.votes, self.seed = judge, strategy, rating, votes, seed
        self.cache, self.progress, self.keep_records, self.elo_k = cache, progress, keep_records, elo_k
        self.write_cache = write_cache  # False for dry runs: read what is cached, store nothing
        self.judge_id = cache.register(judge.identity()) if cache else judge_hash(judge.identity())
        self.budget, self.adaptive_votes = budget, adaptive_votes
        self.stats = Stats()
        self._retries_before = 0
        self.key_fields = tuple(judge.key_fields())
        self._in_flight, self._busy_since = 0, 0.0

    def tournament(self, item: Item) -> Voting:
        """Build the (vote-wrapped) strategy for one prompt, seeded by the run seed and the prompt id."""
        seed = derive_seed(self.seed, item.id)
        return make_tournament(self.strategy, len(item.texts), rating=self.rating, seed=seed, elo_k=self.elo_k,
                               votes=self.votes, adaptive_votes=self.adaptive_votes, budget=self.budget)  # fmt: skip

    def request(self, item: Item, vote: Vote) -> Request:
        """Build the judge request for one vote; its sampling seed depends only on what it judges."""
        a, b = item.texts[vote.a], item.texts[vote.b]
        return Request(
            prompt=item.prompt, a=a, b=b, vote=vote.vote, seed=derive_seed(item.prompt, a, b, vote.vote),
            a_fields=item.fields[vote.a], b_fields=item.fields[vote.b],
        )  # fmt: skip

    def run(self, items: Sequence[Item]) -> list[Result]:
        """Run every tournament in lockstep: one judge call per step for all ready votes across prompts."""
        start, self._retries_before = time.perf_counter(), self.judge.retries()
        tours = [self.tournament(item) for item in items]
        results = [Result(item, [], []) for item in items]
        while True:
            ready = [(k, vote) for k, tour in enumerate(tours) if not tour.done() for vote in tour.propose()]
            if not ready:
                break
            batch = self._prepare(items, ready)
            if batch.todo:
                with self._calling(batch):
                    fresh = self.judge.judge(batch.todo_requests())
                self._absorb(batch, fresh)
            self._deliver(tours, results, batch)
        return self._finish(tours, results, start)

    async def arun(self, items: Sequence[Item]) -> list[Result]:
        """Run every tournament pipelined: each advances as soon as its own votes are judged."""
        start, self._retries_before = time.perf_counter(), self.judge.retries()
        tours = [self.tournament(item) for item in items]
        results = [Result(item, [], []) for item in items]

        async def play(k: int) -> None:
            while not tours[k].done():
                ready = [(k, vote) for vote in tours[k].propose()]
                if not ready:
                    raise RuntimeError(f"strategy {self.strategy} stalled on prompt {items[k].id}")
                batch = self._prepare(items, ready)
                if batch.todo:
                    with self._calling(batch):
                        fresh = await self.judge.ajudge(batch.todo_requests())
                    self._absorb(batch, fresh)
                self._deliver(tours, results, batch)

        await asyncio.gather(*(play(k) for k in range(len(items))))
        return self._finish(tours, results, start)

    @contextmanager
    def _calling(self, batch: _Batch) -> Iterator[None]:
        """Time one judge call (``judge_s``) and point a backend error at its prompt."""
        self._busy_enter()
        try:
            yield
        except BackendError as err:
            raise batch.locate(err) from None
        finally:
            self._busy_leave()

    def _busy_enter(self) -> None:
        """Open a judge call; judge_s counts the time at least one is in flight (pipelined calls overlap)."""
        if self._in_flight == 0:
            self._busy_since = time.perf_counter()
        self._in_flight += 1

    def _busy_leave(self) -> None:
        """Close a call; when none is left in flight, add the busy interval to judge_s."""
        self._in_flight -= 1
        if self._in_flight == 0:
            self.stats.judge_s += time.perf_counter() - self._busy_since

    def _prepare(self, items: Sequence[Item], ready: list[tuple[int, Vote]]) -> _Batch:
        """Build requests, read what the cache has, and list what is left to judge (each key once)."""
        requests = [self.request(items[k], vote) for k, vote in ready]
        keys = [request_key(self.judge_id, r, self.key_fields) for r in requests]
        found = self.cache.get_many(keys) if self.cache else {}
        todo: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key not in found and key not in todo:
                todo[key] = i
        return _Batch(items, ready, requests, keys, found, todo, hits=set(found))

    def _absorb(self, batch: _Batch, fresh: list[Judgment]) -> None:
        """Commit new judgments to the cache, then count them; only then may strategies see them."""
        if len(fresh) != len(batch.todo):
            raise BackendError(f"judge returned {len(fresh)} judgments for {len(batch.todo)} requests")
        new = dict(zip(batch.todo, fresh))
        if self.cache and self.write_cache:
            self.cache.put_many(self.judge_id, ((k, batch.requests[batch.todo[k]], j) for k, j in new.items()))
        batch.found.update(new)
        self.stats.backend_calls += 1
        for j in fresh:
            self.stats.prompt_tokens += j.prompt_tokens
            self.stats.completion_tokens += j.completion_tokens

    def _deliver(self, tours: list[Voting], results: list[Result], batch: _Batch) -> None:
        """Hand each vote's outcome to its tournament and record it."""
        for k in {k for k, _ in batch.ready}:
            results[k].rounds += 1
        for (k, vote), key in zip(batch.ready, batch.keys):
            j = batch.found[key]
            results[k].judgments += 1
            results[k].invalid += j.p_a is None
            self.stats.judgments += 1
            self.stats.cached += key in batch.hits
            self.stats.invalid += j.p_a is None
            self.stats.forced += j.forced
            if self.keep_records:
                rec = Record(batch.items[k].id, vote.a, vote.b, vote.vote, j.verdict, j.p_a, j.forced, j.raw)
                results[k].records.append(rec)
            tours[k].receive(vote.id, j.p_a)
        if self.progress:
            self.progress(len(batch.ready))

    def _finish(self, tours: list[Voting], results: list[Result], start: float) -> list[Result]:
        """Read final scores and rankings and close the counters."""
        for tour, res in zip(tours, results):
            res.scores = [round(float(s), 6) + 0.0 for s in tour.scores()]  # + 0.0 turns -0.0 into 0.0
            res.ranking = list(tour.ranking())
            self.stats.ties += tour.all_invalid
        self.stats.prompts = len(results)
        self.stats.steps = max((r.rounds for r in results), default=0)
        self.stats.wall_s = time.perf_counter() - start
        self.stats.retries = self.judge.retries() - self._retries_before
        return results


@dataclass
class _Batch:
    """The votes of one step: their requests and keys, judgments found so far, and keys still to judge."""

    items: Sequence[Item]
    ready: list[tuple[int, Vote]]
    requests: list[Request]
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
