"""What a backend is: an LLM client that generates text for chat prompts, knowing nothing about judging.

Two implementations: ``vllm.VLLMBackend`` (the in-process engine) and ``openai.OpenAIBackend`` (a pool of
OpenAI-compatible servers). A judge is a family plus a backend (``tourney.judge``); a policy sampler is a model plus a
backend. Every method is a coroutine run on the backend's own ``loop`` (``tourney.aio.LoopThread``), and every batch
method returns results in request order.

To add a backend: subclass ``BackendBase`` in ``tourney/backends/<name>.py``, implement ``identity``, ``start``,
``generate``, ``tokenize``, ``chat_ids`` and ``next_token_logprobs`` (and ``tokenize_if_able`` when it may have no
tokenizer), and add it to ``BACKENDS`` in
``tourney/config.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tourney.aio import LoopThread

Chat = Sequence[dict[str, str]]  # chat messages, rendered with the model's own chat template by the backend


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one request; ``seed`` makes the output independent of the batch it shares.

    Every field is sent, none left to the server: a vLLM server fills a field a request leaves out from the
    checkpoint's ``generation_config.json`` (a repetition penalty, a top-k), so an in-process run and a server run of
    the same judge would sample differently. The fields after ``seed`` default to vLLM's values for "off".
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 4096
    seed: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_k: int = 0  # 0: off (vLLM also takes -1)
    min_p: float = 0.0

    def shape(self) -> dict[str, Any]:
        """Every field that shapes the output distribution (not the seed nor the token budget), by vLLM's names."""
        return {name: getattr(self, name) for name in SHAPE_FIELDS}

    def identity(self) -> dict[str, Any]:
        """The settings a judge's identity (its cache key) holds: all but the per-request seed."""
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens} | self.shape()


# Named as in vLLM's SamplingParams and OpenAI-style request bodies, and as the keys of a family's [sampling] table.
SHAPE_FIELDS = ("temperature", "top_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "top_k", "min_p")


@dataclass(frozen=True)
class Generation:
    """One generated text; ``prompt_ids`` are the templated prompt's token ids when the backend has them."""

    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    prompt_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Scored:
    """The log-probabilities of given tokens at one next position (None: not returned), and what the call cost."""

    logprobs: tuple[float | None, ...]
    prompt_tokens: int = 0
    completion_tokens: int = 0


class BackendBase:
    """The backend protocol: what every backend implements (``tokenize_if_able`` may say it has no tokenizer)."""

    loop: LoopThread
    max_model_len: int = 0  # 0: unknown
    batched: bool = False  # True: one call for a whole batch beats one call per request (vLLM's LLM.generate)

    @property
    def retries(self) -> int:
        """Calls that failed and were tried again (servers); an in-process engine retries nothing."""
        return 0

    def identity(self) -> dict[str, Any]:
        """Everything about the model that shapes its outputs (not URLs, not keys), JSON-able."""
        raise NotImplementedError

    def label(self) -> str:
        """What the progress line calls this backend while it starts (e.g. "vllm")."""
        return str(self.identity().get("backend"))

    def describe(self) -> str:
        """The model's name as the user gave it (for the progress line)."""
        model = self.identity().get("model")
        return str(model.get("name") if isinstance(model, dict) else model)

    async def start(self) -> None:
        """Load the model or check the servers, once; later calls return at once."""
        raise NotImplementedError

    async def generate(self, prompts: Sequence[Chat], sampling: Sequence[Sampling]) -> list[Generation]:
        """Generate one text per chat prompt with its own sampling settings."""
        raise NotImplementedError

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of a plain text, without special tokens."""
        raise NotImplementedError

    async def tokenize_if_able(self, text: str) -> list[int] | None:
        """As ``tokenize``, or None when the backend has no tokenizer (a server without ``/tokenize``)."""
        return await self.tokenize(text)

    async def chat_ids(self, messages: Chat) -> list[int]:
        """Token ids of chat messages rendered by the chat template with the generation prompt."""
        raise NotImplementedError

    async def next_token_logprobs(self, prompts: Sequence[Sequence[int]], tokens: Sequence[int]) -> list[Scored]:
        """For each token-id prompt, the raw log-probabilities of ``tokens`` as the next token."""
        raise NotImplementedError

    def context_limit(self) -> int:
        """The context length known without starting anything (0: unknown until started)."""
        return self.max_model_len

    def close(self) -> None:
        """Release the engine, processes and connections; safe to call twice."""
        self.loop.close()
