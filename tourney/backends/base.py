"""What a judge backend receives and returns. A backend turns a batch of requests into judgments in one call."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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


class Judge(Protocol):
    """A batched pairwise judge. ``identity`` names everything that changes its output (it keys the cache)."""

    def identity(self) -> dict[str, Any]:
        """Return a JSON-able description: model, family, template text, sampling parameters."""
        ...

    def judge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Judge a batch in one backend call; results are in request order."""
        ...

    def close(self) -> None:
        """Release engines, processes and connections."""
        ...


async def ajudge(judge: Judge, requests: Sequence[Request]) -> list[Judgment]:
    """Await a judge's native ``ajudge`` when it has one, else run its batched ``judge`` in a worker thread."""
    native = getattr(judge, "ajudge", None)
    if native is not None:
        return await native(requests)
    return await asyncio.to_thread(judge.judge, list(requests))
