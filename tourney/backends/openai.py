"""A model served by OpenAI-compatible servers (vLLM's api_server and the like), over a ``ServerPool``.

Each generation is one ``POST /v1/chat/completions`` with the request's own ``seed`` and ``n=1``. Token ids come from
the model's own tokenizer loaded HERE (``find_tokenizer``: the ``tokenizer`` given, else the served name when it is a
local folder or a hub id, else the model root the server reports in ``/v1/models``), so forced prompts are rendered
locally and sent as ids to ``/v1/completions`` with ``logprob_token_ids`` (vLLM), never through a chat prefill.
Without a local tokenizer, token counts come from vLLM's ``/tokenize`` and forcing is refused. Errors that retries
cannot fix (a model the servers do not serve, a prompt longer than the context) raise ``BackendError`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tourney.aio import LoopThread, gather_all
from tourney.backends.base import BackendBase, Chat, Generation, Sampling, Scored
from tourney.backends.pool import HTTPError, ServerPool
from tourney.errors import BackendError

log = logging.getLogger(__name__)

GREEDY = Sampling()  # one-token requests (forced verdicts): greedy, every other field explicitly off
CONTEXT_RE = re.compile(r"context length|context window|too many tokens", re.IGNORECASE)
HUB_ID_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # "org/name", the only served names worth asking the hub about


class OpenAIBackend(BackendBase):
    """One model behind one or more OpenAI-compatible endpoints (all serving the same model)."""

    def __init__(
        self, base_urls: Sequence[str] | str, model: str, *, tokenizer: str | None = None, **pool: Any
    ) -> None:
        """``tokenizer``: a local folder or hub id with the served model's tokenizer (default: found, see
        ``find_tokenizer``); ``pool``: ServerPool options (concurrency, max_retries, timeout, api_key_env, backoff,
        backoff_cap)."""
        self.model, self.tokenizer_path = model, tokenizer
        self.pool = ServerPool([base_urls] if isinstance(base_urls, str) else list(base_urls), **pool)
        self.loop = LoopThread("tourney-openai")
        self._started = False
        self._start_lock = asyncio.Lock()
        self._root: str | None = None  # the model path the server reports (vLLM's /v1/models "root")
        self.tokenizer: Any = None
        self.tokenizer_missing = ""  # why no tokenizer was found, once looked for
        self._tokenizer_looked = False
        self._local_tried = False
        self._tokenizer_lock = asyncio.Lock()

    @property
    def retries(self) -> int:
        """Failed attempts that were tried again."""
        return self.pool.retries

    def identity(self) -> dict[str, Any]:
        """The served model's name (no URLs, no key)."""
        return {"backend": "openai", "model": self.model}

    async def start(self) -> None:
        """Once: check that the servers serve the model, and read its context length when they say it."""
        async with self._start_lock:
            if self._started:
                return
            listing = await self.pool.call("GET", "/v1/models", need="data", missing_ok=True)
            models = (listing or {}).get("data")
            served = {m.get("id"): m for m in models if isinstance(m, dict)} if isinstance(models, list) else {}
            if served and self.model not in served:
                raise BackendError(self._not_served(self.pool.endpoints[0].url, list(served)))
            entry = served.get(self.model) or {}
            self.max_model_len = int(entry.get("max_model_len") or 0)
            self._root = str(entry["root"]) if entry.get("root") else None
            self._started = True

    async def find_tokenizer(self, ask_server: bool = True) -> Any:
        """The served model's tokenizer: the one given, else the served name's, else the server's model root's.

        None (and ``tokenizer_missing`` says why) when none of them is a local folder or a hub id this machine can
        load with a chat template; the one given must load. ``ask_server=False`` looks no further than the names it
        has without a request (what the server said, if it was already asked).
        """
        async with self._tokenizer_lock:
            if self._tokenizer_looked:
                return self.tokenizer
            if not self._local_tried:
                self._local_tried = True
                self.tokenizer = load_tokenizer(self.tokenizer_path or self.model)
                if self.tokenizer is None and self.tokenizer_path is not None:
                    raise BackendError(f"cannot load a tokenizer with a chat template from {self.tokenizer_path!r}")
            if not (ask_server or self._started):
                return self.tokenizer  # not looked for at the server's model root yet
            await self.start()  # the context length, and where the server's model lives
            if self.tokenizer is None and self._root and self._root != self.model:
                self.tokenizer = load_tokenizer(self._root)
            if self.tokenizer is None:
                where = f", nor is the server's model root {self._root!r}" if self._root else ""
                self.tokenizer_missing = f"{self.model!r} is no local folder or loadable hub id{where}"
            self._tokenizer_looked = True
            return self.tokenizer

    async def generate(self, prompts: Sequence[Chat], sampling: Sequence[Sampling]) -> list[Generation]:
        """One chat completion per prompt, all in flight at once within the pool's bounds."""
        return await gather_all([self._chat(i, m, s) for i, (m, s) in enumerate(zip(prompts, sampling))])

    async def _chat(self, index: int, messages: Chat, s: Sampling) -> Generation:
        """One chat completion."""
        # vLLM rejects max_tokens > max_model_len; it already caps prompt + output at the context itself.
        cap = min(s.max_tokens, self.max_model_len) if self.max_model_len else s.max_tokens
        # Every sampling field explicit: a vLLM server fills the ones left out from generation_config.json.
        body = {"model": self.model, "messages": list(messages), **s.shape(), "max_tokens": cap, "n": 1,
                "seed": s.seed}  # fmt: skip
        data = await self._call("POST", "/v1/chat/completions", body, need="choices", index=index)
        choice, usage = data["choices"][0], data.get("usage") or {}
        reason = choice.get("finish_reason") or "length"
        return Generation(message_text(choice.get("message") or {}), reason, *tokens_used(usage))

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of a text (no special tokens): the local tokenizer's, else vLLM's ``/tokenize``."""
        if await self.find_tokenizer(ask_server=False) is not None:
            return list(self.tokenizer.encode(text, add_special_tokens=False))
        return self._need_ids(await self._tokenize({"prompt": text}))

    async def tokenize_if_able(self, text: str) -> list[int] | None:
        """Token ids from the local tokenizer; None without one (forced prompts are only ever rendered locally)."""
        if await self.find_tokenizer(ask_server=False) is None:
            return None
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def chat_ids(self, messages: Chat) -> list[int]:
        """Chat-templated prompt ids with the generation prompt: rendered locally, else by vLLM's ``/tokenize``."""
        if await self.find_tokenizer(ask_server=False) is not None:
            text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            return list(self.tokenizer.encode(text, add_special_tokens=False))  # the template wrote BOS and friends
        return self._need_ids(await self._tokenize({"messages": list(messages), "add_generation_prompt": True}))

    def _need_ids(self, ids: list[int] | None) -> list[int]:
        """The ids, or a BackendError saying the server cannot tokenize."""
        if ids is None:
            raise BackendError(f"{self.pool.endpoints[0].url}: the server has no /tokenize")
        return ids

    async def _tokenize(self, body: dict[str, Any]) -> list[int] | None:
        """Call ``/tokenize`` (no special tokens: a chat template writes BOS etc. itself); it tells the context too."""
        body = {"model": self.model, **body, "add_special_tokens": False}
        data = await self._call("POST", "/tokenize", body, need="tokens", missing_ok=True)
        if data is None:
            return None
        self.max_model_len = int(data.get("max_model_len") or self.max_model_len)
        return list(data["tokens"])

    async def next_token_logprobs(self, prompts: Sequence[Sequence[int]], tokens: Sequence[int]) -> list[Scored]:
        """One greedy token per prompt via ``/v1/completions``, with the raw log-probs of exactly ``tokens``.

        The prompt goes as token ids: vLLM takes them as they are, while a text prompt would be tokenized again
        (BOS added by default, different merges where the judge's text meets the closing).
        """

        async def one(index: int, prompt: Sequence[int]) -> Scored:
            req = {"model": self.model, "prompt": list(prompt), **GREEDY.shape(), "max_tokens": 1, "logprobs": 1,
                   "logprob_token_ids": list(tokens), "return_tokens_as_token_ids": True}  # fmt: skip
            data = await self._call("POST", "/v1/completions", req, need="choices", index=index)
            top = ((data["choices"][0].get("logprobs") or {}).get("top_logprobs") or [{}])[0] or {}
            return Scored(tuple(top.get(f"token_id:{t}") for t in tokens), *tokens_used(data.get("usage") or {}))

        return await gather_all([one(i, p) for i, p in enumerate(prompts)])

    async def _call(self, method: str, path: str, body: Any, *, need: str, index: int | None = None,
                    missing_ok: bool = False) -> Any:  # fmt: skip
        """A pool call whose final HTTP errors are explained: a model not served, a prompt too long."""
        try:
            return await self.pool.call(method, path, body, need=need, index=index, missing_ok=missing_ok)
        except HTTPError as err:
            if err.status == 404 or "does not exist" in err.detail:
                listing = await self.pool.get_once(err.url.rsplit(path, 1)[0] + "/v1/models")
                try:
                    served = [m["id"] for m in listing["data"]]
                except (TypeError, KeyError):
                    raise err from None
                raise BackendError(self._not_served(err.url.rsplit(path, 1)[0], served), index) from None
            if err.status == 400 and CONTEXT_RE.search(err.detail):
                raise BackendError(f"the prompt does not fit the context on {err.url}: {err.detail}", index) from None
            raise

    def _not_served(self, url: str, served: Sequence[Any]) -> str:
        """The one-line message for a model name the server does not serve."""
        return f"{url}: model {self.model!r} is not served there; it serves: {', '.join(map(str, served))}"

    def close(self) -> None:
        """Close the connections and stop the loop thread; safe to call twice."""
        self.loop.close(self.pool.aclose(), timeout=30)


def message_text(message: dict[str, Any]) -> str:
    """The assistant's text; reasoning split off by a server-side reasoning parser is put back before ``</think>``."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    if reasoning and content:
        return f"{reasoning}</think>{content}"
    return reasoning or content


def tokens_used(usage: dict[str, Any]) -> tuple[int, int]:
    """(prompt tokens, completion tokens) from an OpenAI ``usage`` object."""
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def load_tokenizer(name: str) -> Any:
    """A tokenizer with a chat template from a local folder or a hub id; None when neither loads (never raises)."""
    if not (Path(name).expanduser().is_dir() or (HUB_ID_RE.fullmatch(name) and not Path(name).exists())):
        return None  # "tiny", "gpt-4o", a path elsewhere: nothing to ask the hub for
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name)
    except Exception as err:  # no such repo, no hub access, missing files: all mean "not here"
        log.debug("no tokenizer from %s: %s", name, err)
        return None
    return tok if getattr(tok, "chat_template", None) else None
