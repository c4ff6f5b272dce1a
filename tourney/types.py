"""The neutral types every part of tourney shares: prompts, judge requests and judgments, the Judge protocol.

Judge families and backends import from here and never from each other, so a family never depends on how it is run
(a test checks that ``tourney.judges`` imports no backend).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Self, runtime_checkable

Message = Mapping[str, str]
Prompt = str | Sequence[Message]


@dataclass(frozen=True)
class Request:
    """One pairwise judgment: ``a`` is shown in position A, ``b`` in position B."""

    prompt: Prompt
    a: str
    b: str
    vote: int = 0
    seed: int = 0  # per-request sampling seed, derived by the engine so results do not depend on batching
    a_fields: Mapping[str, Any] = field(default_factory=dict)  # other fields of the response (e.g. quality)
    b_fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Judgment:
    """A judge's answer. ``p_a`` is P(A is better): 1/0 for a parsed verdict, soft when forced, None if invalid."""

    verdict: str | None  # "A", "B" or None
    p_a: float | None
    raw: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    forced: bool = False


@dataclass
class Counters:
    """What every run counts: prompts, backend calls, the tokens of new work (what the run spent), its wall time."""

    prompts: int = 0
    backend_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The counters as a JSON-able dict, times (``*_s``) rounded to ms."""
        return {k: round(v, 3) if k.endswith("_s") else v for k, v in asdict(self).items()}


@runtime_checkable
class Judge(Protocol):
    """A batched pairwise judge. ``identity`` names everything that changes its output (it keys the cache)."""

    def identity(self) -> dict[str, Any]:
        """Return a JSON-able description: model, family, template text, sampling parameters."""
        ...

    def judge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Judge a batch in one backend call; results are in request order."""
        ...

    async def ajudge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Judge a batch from an event loop; concurrent calls may share the backend."""
        ...

    def key_fields(self) -> tuple[str, ...]:
        """Response fields the verdicts depend on besides the texts (the cache keys them too)."""
        ...

    def retries(self) -> int:
        """Backend calls that failed and were tried again, so far (servers)."""
        ...

    def close(self) -> None:
        """Release engines, processes and connections."""
        ...


class JudgeBase:
    """Defaults for the Judge protocol's optional hooks: a threaded ``ajudge``, no key fields, nothing to close."""

    def identity(self) -> dict[str, Any]:
        """Return a JSON-able description of the judge."""
        raise NotImplementedError

    def judge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Judge a batch; results are in request order."""
        raise NotImplementedError

    async def ajudge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Run the batched ``judge`` in a worker thread."""
        return await asyncio.to_thread(self.judge, list(requests))

    def key_fields(self) -> tuple[str, ...]:
        """No response fields besides the texts."""
        return ()

    def retries(self) -> int:
        """No retries."""
        return 0

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> Self:
        """Use the judge as a context manager that closes it."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the judge."""
        self.close()
