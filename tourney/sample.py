"""Sample N responses per prompt from a policy, seeded per sample and cached, written in tourney's input format.

Each sample is one request whose seed is derived from (run seed, prompt, sample index), so a sample never depends on
the batch it shared, a killed run resumes where it stopped, and a re-run generates nothing. Samples are committed to
a sample cache (``samples.sqlite`` beside the judgment cache, a ``tourney.store`` of kind "samples") before they
count.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tourney.backends.base import BackendBase, Generation, Sampling
from tourney.cache import cache_dir, canonical, sha
from tourney.engine import derive_seed
from tourney.errors import BackendError, InputError
from tourney.io import Row, read_rows
from tourney.store import Schema, Store
from tourney.types import Counters, Prompt


@dataclass
class PromptRow:
    """One input line: a prompt (string or chat messages), its id, and the original object kept for output."""

    id: Any
    line: int
    prompt: Prompt
    row: dict[str, Any] = field(default_factory=dict)

    def chat(self) -> list[dict[str, str]]:
        """The prompt as chat messages (a string becomes one user turn)."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return [{"role": m["role"], "content": m["content"]} for m in self.prompt]


@dataclass
class SampleStats(Counters):
    """Counters of one sampling run; ``generated`` counts new samples, ``cached`` those read back."""

    samples: int = 0
    generated: int = 0
    cached: int = 0


def read_prompts(path: str, limit: int | None = None) -> list[PromptRow]:
    """Read and validate a JSONL file of prompts (``-`` for stdin; ``limit``: its first rows only); raise InputError
    on the first bad line."""
    return read_rows(path, parse_prompt_line, limit)


def parse_prompt_line(text: str, name: str, lineno: int) -> PromptRow:
    """Validate one JSON line into a PromptRow: an object with ``prompt`` and no ``responses`` yet."""
    row = Row.parse(text, name, lineno)
    prompt = row.prompt()
    if isinstance(prompt, list) and prompt[-1]["role"] != "user":
        raise row.bad(f"the last message must be a user turn, got {prompt[-1]['role']!r}", f"prompt[{len(prompt) - 1}]")
    if "responses" in row.data:
        raise row.bad("already present: sample writes it (remove it, or rank this file instead)", "responses")
    return PromptRow(id=row.id(), line=lineno, prompt=prompt, row=row.data)


# ---- cache -------------------------------------------------------------------------------------------------------

_TABLES = """
CREATE TABLE IF NOT EXISTS samples (
    key TEXT PRIMARY KEY, policy TEXT NOT NULL, seed INTEGER NOT NULL, text TEXT NOT NULL,
    finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS policies (hash TEXT PRIMARY KEY, identity TEXT NOT NULL)
"""
SCHEMA = Schema("samples", 1, _TABLES)  # bump the version when a table changes: an older file is then refused


def default_samples_path() -> str:
    """The default sample cache: ``samples.sqlite`` in tourney's cache folder."""
    return str(cache_dir() / "samples.sqlite")


class SampleCache(Store):
    """A store of samples keyed by ``sample_key`` (see ``tourney.store``); one short transaction per batch."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open (or create) the file; one that is not a sample cache (a judgment cache, say) raises InputError."""
        super().__init__(path, SCHEMA)

    def register(self, identity: dict[str, Any]) -> str:
        """Store a policy identity (for inspection) and return its hash."""
        digest = sha(canonical(identity))
        self.insert("policies", [(digest, canonical(identity))])
        return digest

    def get_many(self, keys: Sequence[str]) -> dict[str, Generation]:
        """The cached samples among ``keys``."""
        query = "SELECT key, text, finish_reason, prompt_tokens, completion_tokens FROM samples WHERE key IN ({marks})"
        return {key: Generation(text, finish, pt, ct) for key, text, finish, pt, ct in self.select_in(query, keys)}

    def put_many(self, policy: str, rows: Sequence[tuple[str, int, Generation]]) -> None:
        """Commit (key, seed, generation) rows in one transaction."""
        self.insert("samples", [(k, policy, seed, g.text, g.finish_reason, g.prompt_tokens, g.completion_tokens)
                                for k, seed, g in rows])  # fmt: skip


def sample_key(policy: str, sampling: Sampling, prompt: Prompt, index: int) -> str:
    """Hash one sample's key: policy hash, sampling (with its seed), prompt and sample index."""
    s = sampling
    return sha(canonical([policy, [s.temperature, s.top_p, s.max_tokens, s.seed], prompt, index]))


# ---- sampling ----------------------------------------------------------------------------------------------------


def sample_seed(run_seed: int, prompt: Prompt, index: int) -> int:
    """The seed of sample ``index`` of ``prompt``: it depends on nothing else, so batching never changes a sample."""
    return derive_seed(run_seed, prompt, index)


def sample(
    rows: Sequence[PromptRow],
    backend: BackendBase,
    n: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_tokens: int = 512,
    seed: int = 0,
    cache: SampleCache | None = None,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
    status: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], SampleStats]:
    """Sample ``n`` responses per prompt and return output rows (input fields + ``responses``) and counters.

    Requests go to the backend ``batch_size`` at a time; each batch is committed to ``cache`` before ``progress``
    hears of it, so a run stopped at any point resumes with only the missing samples. ``status`` is told when the
    backend starts ("starting vllm (...)") and when it is up ("sampling").
    """
    if n < 1:
        raise InputError(f"-n must be >= 1, got {n}", field="-n")
    start, stats = time.perf_counter(), SampleStats(prompts=len(rows), samples=n * len(rows))
    identity = backend.identity()
    policy = cache.register(identity) if cache else sha(canonical(identity))
    plan = plan_samples(rows, policy, n, Sampling(temperature, top_p, max_tokens), seed)
    found = cache.get_many([p[3] for p in plan]) if cache else {}
    todo: dict[str, int] = {}
    for i, (*_, key) in enumerate(plan):
        if key not in found and key not in todo:
            todo[key] = i
    stats.cached = sum(p[3] in found for p in plan)
    if progress and stats.cached:
        progress(stats.cached)
    pending = list(todo.values())
    if pending:
        if status is not None:
            status(f"starting {backend.label()} ({backend.describe()})")
        backend.loop.run(backend.start())
        if status is not None:
            status("sampling")
    for b in range(0, len(pending), batch_size):
        chunk = pending[b : b + batch_size]
        chats = [rows[plan[i][0]].chat() for i in chunk]
        try:
            gens = backend.loop.run(backend.generate(chats, [plan[i][2] for i in chunk]))
        except BackendError as err:
            raise _locate(err, rows, [plan[i][0] for i in chunk]) from None
        if cache:
            cache.put_many(policy, [(plan[i][3], plan[i][1], g) for i, g in zip(chunk, gens)])
        for i, g in zip(chunk, gens):
            found[plan[i][3]] = Generation(g.text, g.finish_reason, g.prompt_tokens, g.completion_tokens)
            stats.prompt_tokens += g.prompt_tokens
            stats.completion_tokens += g.completion_tokens
        stats.backend_calls += 1
        stats.generated += len(chunk)
        if progress:
            progress(len(chunk))
    out = [dict(row.row) | {"responses": []} for row in rows]
    for r, k_seed, _, key in plan:
        g = found[key]
        out[r]["responses"].append({"text": g.text, "finish_reason": g.finish_reason, "prompt_tokens": g.prompt_tokens,
                                    "completion_tokens": g.completion_tokens, "seed": k_seed})  # fmt: skip
    stats.wall_s = time.perf_counter() - start
    return out, stats


def plan_samples(
    rows: Sequence[PromptRow], policy: str, n: int, sampling: Sampling, seed: int
) -> list[tuple[int, int, Sampling, str]]:
    """Every sample a run makes, as (row, the sample's seed, its sampling, its cache key); each sample's seed is
    derived from the run's ``seed``."""
    plan = []
    for r, row in enumerate(rows):
        for k in range(n):
            k_seed = sample_seed(seed, row.prompt, k)
            s = replace(sampling, seed=k_seed)
            plan.append((r, k_seed, s, sample_key(policy, s, row.prompt, k)))
    return plan


def cached_samples(
    rows: Sequence[PromptRow], identity: dict[str, Any], n: int, sampling: Sampling, seed: int, cache: SampleCache
) -> int:
    """How many of a run's samples ``cache`` already has (a dry run's count; nothing is registered)."""
    plan = plan_samples(rows, sha(canonical(identity)), n, sampling, seed)
    return len(cache.get_many([p[3] for p in plan]))


def _locate(err: BackendError, rows: Sequence[PromptRow], which: list[int]) -> BackendError:
    """Name the prompt behind a backend error that points at one request of a batch."""
    index = getattr(err, "index", None)
    if index is None or not 0 <= index < len(which):
        return err
    row = rows[which[index]]
    return BackendError(f"prompt {json.dumps(row.id)} (input line {row.line}): {err}")
