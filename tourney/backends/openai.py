"""Judge over OpenAI-compatible HTTP servers (vLLM's api_server and the like): load spreading, retries, forced verdicts.

Each request is one ``POST /v1/chat/completions`` (the family's messages, the request's own ``seed``, ``n=1``) sent to
the endpoint with the fewest outstanding requests, at most ``concurrency`` at a time per endpoint. 429, 5xx, timeouts,
dropped connections and garbage answers are retried with capped exponential backoff and jitter; a connection failure
sidelines that endpoint for a while and the request fails over to another. Errors retries cannot fix (wrong model,
prompt longer than the context, 401) raise ``BackendError`` at once. All HTTP runs on one private event-loop thread,
so ``judge`` works from plain code and ``ajudge`` from any event loop, and the per-endpoint bound holds across calls.

Forced verdicts (``verdict="auto"`` when the output has no readable verdict, ``"logprobs"`` always): the judge's own
text (cut before any verdict it began; ``</think>`` closed for thinking families) plus the family's
``verdict_prefix`` is fed back for ONE token and ``p_a = softmax(lp_A, lp_B)[0]``.

- vLLM servers (they have ``/tokenize``): the prompt is built from token ids exactly as the in-process backend does
  (chat template from ``/tokenize``, reasoning cut to fit the context) and sent to ``/v1/completions`` with
  ``logprob_token_ids``, which returns the raw log-probs of exactly the two choice tokens.
- Other servers: the assistant turn is prefilled in ``/v1/chat/completions`` (``continue_final_message``) and the
  choices are looked up in the top-20 log-probs by text. A choice missing from the top-k gets the lowest log-prob
  seen minus ``MISSING_MARGIN`` (it is at most that likely); if both are missing there is no forced verdict.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import httpx

from tourney.errors import BackendError
from tourney.judges import Family, get_family
from tourney.types import JudgeBase, Judgment, Request

log = logging.getLogger(__name__)

VERDICT_MODES = ("auto", "logprobs", "parse")
FALLBACK_SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 4096}
THINK_CLOSE = "\n</think>\n\n"
TOP_LOGPROBS = 20  # vLLM's default cap (--max-logprobs)
MISSING_MARGIN = 1.0  # nats below the lowest top-k log-prob, for a choice absent from the top-k
CONTEXT_RE = re.compile(r"context length|context window|too many tokens", re.IGNORECASE)


class _Retry(Exception):
    """A transient failure: worth another attempt (``down``: the endpoint itself is unreachable)."""

    def __init__(self, message: str, down: bool = False, after: float = 0.0) -> None:
        """Keep the one-line description, whether to sideline the endpoint, and the server's Retry-After."""
        super().__init__(message)
        self.down, self.after = down, after


@dataclass
class _Endpoint:
    """One server: its base URL, a bound on requests in flight, and its health."""

    url: str
    slots: asyncio.Semaphore
    outstanding: int = 0
    failures: int = 0
    down_until: float = 0.0


class OpenAIJudge(JudgeBase):
    """A pairwise judge served by one or more OpenAI-compatible servers (all serving the same model)."""

    def __init__(
        self,
        base_urls: Sequence[str] | str,
        model: str,
        family: Family | str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        verdict: str = "auto",
        concurrency: int = 16,
        max_retries: int = 6,
        timeout: float = 600.0,
        api_key_env: str = "OPENAI_API_KEY",
        backoff: float = 1.0,
        backoff_cap: float = 30.0,
    ) -> None:
        """Check the options and set up the client; nothing is sent until the first batch."""
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise BackendError("no server URL given")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise BackendError(f"server URL must start with http:// or https://; got {url!r}")
        if verdict not in VERDICT_MODES:
            raise BackendError(f"verdict must be one of {', '.join(VERDICT_MODES)}; got {verdict!r}")
        if concurrency < 1 or max_retries < 0:
            raise BackendError("concurrency must be >= 1 and max_retries >= 0")
        self.model, self.family, self.verdict = model, get_family(family), verdict
        fam = {**FALLBACK_SAMPLING, **self.family.sampling}
        self.temperature = float(temperature if temperature is not None else fam["temperature"])
        self.top_p = float(top_p if top_p is not None else fam["top_p"])
        self.max_tokens = int(max_tokens or fam["max_tokens"])
        self.max_retries, self.timeout, self.backoff, self.backoff_cap = max_retries, timeout, backoff, backoff_cap
        self.api_key_env = api_key_env
        # "http://host:8000/v1" and "http://host:8000" name the same server; /tokenize lives at the root.
        self._endpoints = [_Endpoint(re.sub(r"/v1$", "", u.rstrip("/")), asyncio.Semaphore(concurrency)) for u in urls]
        self._key = os.environ.get(api_key_env) or ""
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        pool = concurrency * len(urls)
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        )
        self._send_max_tokens = self.max_tokens
        self._choice_ids: tuple[int, int] | None = None  # set when the server can tokenize (vLLM)
        self._prefix = self.family.verdict_prefix.rstrip()
        self._max_model_len = 0
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._turn = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- protocol ----------------------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """Describe what shapes the judgments: model name, family, sampling, verdict mode (no URLs, no key)."""
        return {
            "backend": "openai",
            "model": self.model,
            "family": self.family.identity(),
            "sampling": {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens},
            "verdict": self.verdict,
        }

    def judge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Judge a batch (all requests in flight at once, within the per-endpoint bound); results in request order."""
        return self._submit(self._ajudge(list(requests))).result()

    async def ajudge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Judge a batch from any event loop; concurrent calls share the endpoints' bounds."""
        return await asyncio.wrap_future(self._submit(self._ajudge(list(requests))))

    def close(self) -> None:
        """Close the connections and stop the private event loop; safe to call twice."""
        with self._lock:
            self._closed = True
            loop, self._loop = self._loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._client.aclose(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        loop.close()

    def __enter__(self) -> OpenAIJudge:
        """Use the judge as a context manager that closes it."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the judge."""
        self.close()

    def _submit(self, coro: Any) -> Future:
        """Run a coroutine on the private loop (started on first use)."""
        with self._lock:
            if self._closed:
                coro.close()
                raise BackendError("the OpenAI judge is closed")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="tourney-openai", daemon=True)
                self._thread.start()
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # ---- judging -----------------------------------------------------------------------------------------------

    async def _ajudge(self, requests: list[Request]) -> list[Judgment]:
        """On the private loop: render every request (input errors first), then run them all concurrently."""
        messages = [self.family.render(r.prompt, r.a, r.b) for r in requests]
        if not requests:
            return []
        await self._ensure_ready()
        tasks = [asyncio.ensure_future(self._one(i, r, m)) for i, (r, m) in enumerate(zip(requests, messages))]
        try:
            return list(await asyncio.gather(*tasks))
        finally:  # one failure ends the batch: stop the rest
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, index: int, request: Request, messages: list[dict[str, str]]) -> Judgment:
        """One judgment: the judge's generation, then a forced verdict if the mode asks for one."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self._send_max_tokens,
            "n": 1,
            "seed": request.seed,
        }
        data = await self._call("POST", "/v1/chat/completions", body, need="choices", index=index)
        choice, usage = data["choices"][0], data.get("usage") or {}
        text = message_text(choice.get("message") or {})
        reason = choice.get("finish_reason") or "length"
        tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        verdict = self.family.parse(text, finished=reason == "stop", quoted=(request.a, request.b))
        if self.verdict == "parse" or (self.verdict == "auto" and verdict is not None):
            p_a = None if verdict is None else (1.0 if verdict == "A" else 0.0)
            return Judgment(verdict, p_a, text, reason, tokens[0], tokens[1])
        p_a, extra = await self._force(index, messages, text)
        soft = None if p_a is None or p_a == 0.5 else ("A" if p_a > 0.5 else "B")
        return Judgment(soft, p_a, text, reason, tokens[0] + extra[0], tokens[1] + extra[1], forced=True)

    async def _force(self, index: int, messages: list[dict[str, str]], text: str) -> tuple[float | None, tuple]:
        """Ask for the next-token log-probs of the two choices after the judge's text + verdict prefix."""
        body = self._forced_body(text)
        if self._choice_ids is not None:
            ids = await self._forced_ids(messages, body)
            req = {
                "model": self.model,
                "prompt": ids,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": 1,
                "logprob_token_ids": list(self._choice_ids),
                "return_tokens_as_token_ids": True,
            }
            data = await self._call("POST", "/v1/completions", req, need="choices", index=index)
            top = ((data["choices"][0].get("logprobs") or {}).get("top_logprobs") or [{}])[0] or {}
            lps = [top.get(f"token_id:{t}") for t in self._choice_ids]
            p_a = None if None in lps else two_way(lps[0], lps[1])
        else:
            prefill = [*messages, {"role": "assistant", "content": body + self._prefix}]
            req = {
                "model": self.model,
                "messages": prefill,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": TOP_LOGPROBS,
                "continue_final_message": True,
                "add_generation_prompt": False,
            }
            try:
                data = await self._call("POST", "/v1/chat/completions", req, need="choices", index=index)
            except BackendError as err:
                hint = "forced verdicts need a server that continues a prefilled reply (vLLM); or use verdict='parse'"
                raise BackendError(f"{err}; {hint}", index) from err
            content = (data["choices"][0].get("logprobs") or {}).get("content") or [{}]
            p_a = choice_probability(content[0].get("top_logprobs") or [], self.family.choices)
        usage = data.get("usage") or {}
        return p_a, (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

    def _forced_body(self, text: str) -> str:
        """The judge's text up to any verdict it began, with ``</think>`` closed if it was still thinking."""
        cut = text.rfind(self._prefix, max(text.rfind("</think>"), 0)) if self._prefix else -1
        body = text[:cut] if cut >= 0 else text
        if self.family.thinks and "</think>" not in body:
            return body + THINK_CLOSE
        return body + "\n" if body and not body[-1].isspace() else body

    async def _forced_ids(self, messages: list[dict[str, str]], body: str) -> list[int]:
        """Chat-templated prompt ids + ids of body and prefix; the end of the reasoning is dropped if it cannot fit."""
        prompt, tail = await asyncio.gather(self._tokenize(messages=messages), self._tokenize(body + self._prefix))
        budget = self._max_model_len - len(prompt) - 1
        if self._max_model_len and len(tail) > budget:
            sep = THINK_CLOSE if self.family.thinks else "\n"
            head, suffix = await asyncio.gather(self._tokenize(body), self._tokenize(sep + self._prefix))
            tail = head[: max(budget - len(suffix), 0)] + suffix
        return prompt + tail

    # ---- start-up ----------------------------------------------------------------------------------------------

    async def _ensure_ready(self) -> None:
        """Once: check the model is served (and its context), and find the choice tokens if verdicts may be forced."""
        async with self._ready_lock:
            if self._ready:
                return
            listing = await self._call("GET", "/v1/models", need="data", missing_ok=True)
            served = {m.get("id"): m for m in (listing or {}).get("data") or [] if isinstance(m, dict)}
            max_len = int((served.get(self.model) or {}).get("max_model_len") or 0)
            if max_len and self.max_tokens > max_len:
                # vLLM rejects max_tokens > max_model_len; it already caps prompt + output at the context itself.
                log.info("max_tokens %d capped at the served context of %d tokens", self.max_tokens, max_len)
                self._send_max_tokens = max_len
            if self.verdict != "parse":
                self._choice_ids = await self._find_choice_ids()
            self._ready = True

    async def _find_choice_ids(self) -> tuple[int, int] | None:
        """Token ids of the choices right after the verdict prefix (a trailing space may join the choice token).

        None when the server has no ``/tokenize`` (not vLLM): forced verdicts then use the prefill fallback.
        """
        fam = self.family
        for prefix in dict.fromkeys((fam.verdict_prefix, fam.verdict_prefix.rstrip())):
            gap = fam.verdict_prefix[len(prefix) :]
            base = await self._tokenize(prefix, optional=True)
            if base is None:
                return None
            ids = []
            for choice in fam.choices:
                full = await self._tokenize(prefix + gap + choice)
                if full[: len(base)] == base and len(full) == len(base) + 1:
                    ids.append(full[-1])
            if len(ids) == 2 and ids[0] != ids[1]:
                self._prefix = prefix
                return ids[0], ids[1]
        raise BackendError(
            f"family {fam.name}: choices {fam.choices} are not single tokens after {fam.verdict_prefix!r} for "
            f"{self.model}'s tokenizer; use verdict='parse'"
        )

    async def _tokenize(
        self, text: str = "", *, messages: list[dict[str, str]] | None = None, optional: bool = False
    ) -> Any:
        """Token ids from vLLM's ``/tokenize`` (chat-templated with a generation prompt when given messages)."""
        body: dict[str, Any] = {"model": self.model}
        body.update({"messages": messages, "add_generation_prompt": True} if messages else {"prompt": text})
        body["add_special_tokens"] = False  # the chat template writes BOS etc. itself
        data = await self._call("POST", "/tokenize", body, need="tokens", missing_ok=optional)
        if data is None:
            return None
        self._max_model_len = int(data.get("max_model_len") or self._max_model_len)
        return list(data["tokens"])

    # ---- HTTP with retries -------------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, body: Any = None, *, need: str, index: int | None = None, missing_ok: bool = False
    ) -> Any:
        """Send one API call with retries and failover; return its JSON (None: ``missing_ok`` and no such API)."""
        problem = "no attempt made"
        for attempt in range(self.max_retries + 1):
            ep = self._pick()
            ep.outstanding += 1
            try:
                async with ep.slots:
                    data = await self._once(ep, method, path, body, need, index, missing_ok)
                ep.failures, ep.down_until = 0, 0.0
                return data
            except _Retry as err:
                problem, down, after = self._redact(str(err)), err.down, err.after
            finally:
                ep.outstanding -= 1
            if down:  # sideline the endpoint; other requests go elsewhere meanwhile
                ep.down_until = time.monotonic() + self._delay(ep.failures)
                ep.failures += 1
            if attempt == self.max_retries:
                break
            log.info("retrying (%d/%d) after: %s", attempt + 1, self.max_retries, problem)
            if not (down and self._any_up()):  # failing over to a healthy endpoint needs no wait
                await asyncio.sleep(max(self._delay(attempt), min(after, self.backoff_cap)))
        raise BackendError(f"{problem} (gave up after {self.max_retries + 1} attempts)", index)

    async def _once(
        self, ep: _Endpoint, method: str, path: str, body: Any, need: str, index: int | None, missing_ok: bool
    ) -> Any:
        """One attempt; raise ``_Retry`` for transient failures and ``BackendError`` for permanent ones."""
        url = ep.url + path
        try:
            resp = await self._client.request(method, url, json=body)
        except httpx.TimeoutException as err:
            raise _Retry(f"{url}: no answer within {self.timeout:g} s") from err
        except httpx.TransportError as err:  # refused, reset, dropped mid-answer
            raise _Retry(f"{url}: connection failed ({type(err).__name__}: {one_line(str(err))})", down=True) from err
        status = resp.status_code
        if status == 429 or status >= 500:
            after = resp.headers.get("retry-after", "")
            wait = float(after) if after.replace(".", "", 1).isdigit() else 0.0
            raise _Retry(f"{url}: HTTP {status} {one_line(resp.text)}", after=wait)
        if status in (401, 403):
            raise BackendError(f"{url}: HTTP {status}: not authorized; set ${self.api_key_env} to the server's key")
        if status >= 400:
            msg = self._redact(error_message(resp))
            if status in (404, 405, 501) and missing_ok:
                return None
            if status == 404 or "does not exist" in msg:
                raise BackendError(await self._wrong_model(ep, f"{url}: HTTP {status}: {msg}"), index)
            if status == 400 and CONTEXT_RE.search(msg):
                raise BackendError(f"request {index}: the judge prompt does not fit the context on {url}: {msg}", index)
            raise BackendError(f"{url}: HTTP {status}: {msg}", index)
        try:
            data = resp.json()
        except ValueError:
            data = None
        ok = isinstance(data, dict) and data.get(need) is not None
        if ok and need == "choices":
            ok = isinstance(data["choices"], list) and bool(data["choices"]) and isinstance(data["choices"][0], dict)
        if not ok and missing_ok:  # an optional endpoint this server does not really have (a catch-all page)
            return None
        if not ok:
            raise _Retry(f"{url}: HTTP {status} answer is not an API response with {need!r}: {one_line(resp.text)}")
        if path == "/v1/models" and isinstance(data["data"], list):
            served = [m.get("id") for m in data["data"] if isinstance(m, dict)]
            if served and self.model not in served:
                raise BackendError(self._not_served(ep, served))
        return data

    async def _wrong_model(self, ep: _Endpoint, problem: str) -> str:
        """Explain a 404: list the models the server does serve (one try, no retries)."""
        try:
            served = [m["id"] for m in (await self._client.get(ep.url + "/v1/models", timeout=30)).json()["data"]]
        except Exception:  # any failure here just means we cannot add the list
            return problem
        return self._not_served(ep, served)

    def _not_served(self, ep: _Endpoint, served: Sequence[Any]) -> str:
        """The one-line message for a model name the server does not serve."""
        return f"{ep.url}: model {self.model!r} is not served there; it serves: {', '.join(map(str, served))}"

    def _pick(self) -> _Endpoint:
        """The healthy endpoint with the fewest requests in flight (ties rotate); if none, the first back up."""
        now, n = time.monotonic(), len(self._endpoints)
        self._turn += 1
        pool = [e for e in self._endpoints if e.down_until <= now]
        if not pool:
            pool = [min(self._endpoints, key=lambda e: e.down_until)]
        return min(pool, key=lambda e: (e.outstanding, (self._endpoints.index(e) - self._turn) % n))

    def _any_up(self) -> bool:
        """Whether some endpoint is not sidelined right now."""
        now = time.monotonic()
        return any(e.down_until <= now for e in self._endpoints)

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter (timing only, so unseeded), capped."""
        return min(self.backoff_cap, self.backoff * 2 ** min(attempt, 30)) * random.uniform(0.5, 1.0)

    def _redact(self, text: str) -> str:
        """Never let the API key into a message, even if a server echoes it."""
        return text.replace(self._key, "***") if self._key else text


def message_text(message: dict[str, Any]) -> str:
    """The assistant's text; reasoning split off by a server-side reasoning parser is put back before ``</think>``."""
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    if reasoning and content:
        return f"{reasoning}</think>{content}"
    return reasoning or content


def two_way(lp_a: float, lp_b: float) -> float | None:
    """P(A) = softmax(lp_a, lp_b)[0]; None if both are -inf."""
    if math.isinf(lp_a) and math.isinf(lp_b):
        return None
    return 1.0 / (1.0 + math.exp(min(lp_b - lp_a, 700.0)))


def choice_probability(top: Sequence[dict[str, Any]], choices: tuple[str, str]) -> float | None:
    """P(A) from OpenAI-style top log-probs matched by text; a missing choice gets the lowest seen minus a margin."""
    seen = [float(t["logprob"]) for t in top if isinstance(t.get("logprob"), (int, float))]
    if not seen:
        return None
    lps: list[float | None] = []
    for choice in choices:
        hits = [float(t["logprob"]) for t in top if str(t.get("token", "")).strip() == choice.strip()]
        # Several spellings (" A", "A") all write the choice: their probabilities add up.
        lps.append(max(hits) + math.log(sum(math.exp(h - max(hits)) for h in hits)) if hits else None)
    if lps[0] is None and lps[1] is None:
        return None
    floor = min(seen) - MISSING_MARGIN
    return two_way(floor if lps[0] is None else lps[0], floor if lps[1] is None else lps[1])


def error_message(resp: httpx.Response) -> str:
    """The server's error message (OpenAI ``{"error": {"message": ...}}``) or the start of its body, on one line."""
    try:
        err = resp.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
    except Exception:  # not JSON: show the raw text
        msg = None
    return one_line(str(msg) if msg else resp.text or resp.reason_phrase)


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace and cut long text, for one-line error messages."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
