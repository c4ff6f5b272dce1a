"""A pool of HTTP endpoints serving one API: load spreading, bounded concurrency, retries, fail-over, key redaction.

It knows nothing of models or judging. Each call goes to the healthy endpoint with the fewest calls in flight, at most
``concurrency`` at a time per endpoint. 429, 5xx, timeouts, dropped connections and answers without the expected key
are retried with capped exponential backoff and jitter (honouring Retry-After); a connection failure sidelines that
endpoint for a while and the call fails over to another. 401/403 and other 4xx answers are final: they raise
``HTTPError`` (a ``BackendError``) with the status and the server's message. The API key never appears in a message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from tourney.console import plural
from tourney.errors import BackendError, InputError

log = logging.getLogger(__name__)


class HTTPError(BackendError):
    """A final (non-retryable) HTTP error answer: ``status``, ``url`` and the server's one-line ``detail``."""

    def __init__(self, url: str, status: int, detail: str, index: int | None = None) -> None:
        """Keep the parts; the message is ``URL: HTTP STATUS: detail``."""
        super().__init__(f"{url}: HTTP {status}: {detail}", index)
        self.url, self.status, self.detail = url, status, detail


class _Retry(Exception):
    """A transient failure: worth another attempt (``down``: the endpoint itself is unreachable)."""

    def __init__(self, message: str, down: bool = False, after: float = 0.0) -> None:
        """Keep the one-line description, whether to sideline the endpoint, and the server's Retry-After."""
        super().__init__(message)
        self.down, self.after = down, after


@dataclass
class Endpoint:
    """One server: its base URL, a bound on calls in flight, and its health."""

    url: str
    slots: asyncio.Semaphore
    outstanding: int = 0
    failures: int = 0
    down_until: float = 0.0


class ServerPool:
    """Endpoints of one API; ``call`` sends one request with retries and fail-over and returns its JSON."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        concurrency: int = 16,
        max_retries: int = 6,
        timeout: float = 600.0,
        api_key_env: str = "OPENAI_API_KEY",
        backoff: float = 1.0,
        backoff_cap: float = 30.0,
    ) -> None:
        """Check the options (InputError naming the bad one) and set up the client; nothing is sent until a call."""
        urls = check_base_urls(base_urls)
        if concurrency < 1:
            raise InputError(f"must be >= 1; got {concurrency}", field="--concurrency")
        if max_retries < 0:
            raise InputError(f"must be >= 0; got {max_retries}", field="--max-retries")
        self.max_retries, self.timeout, self.backoff, self.backoff_cap = max_retries, timeout, backoff, backoff_cap
        self.api_key_env = api_key_env
        self.retries = 0  # attempts that failed and were tried again, over the pool's life
        self.on_retry: Callable[[str], None] | None = None  # told before each retry (the judge's start-up notice)
        # "http://host:8000/v1" and "http://host:8000" name the same server; /tokenize lives at the root.
        self.endpoints = [Endpoint(re.sub(r"/v1$", "", u.rstrip("/")), asyncio.Semaphore(concurrency)) for u in urls]
        self._key = os.environ.get(api_key_env) or ""
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        size = concurrency * len(urls)
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        )
        self._turn = 0

    async def call(
        self, method: str, path: str, body: Any = None, *, need: str, index: int | None = None, missing_ok: bool = False
    ) -> Any:
        """Send one call with retries and fail-over; return its JSON (None: ``missing_ok`` and no such API)."""
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
                problem, down, after = self.redact(str(err)), err.down, err.after
            finally:
                ep.outstanding -= 1
            if down:  # sideline the endpoint; other calls go elsewhere meanwhile
                ep.down_until = time.monotonic() + self._delay(ep.failures)
                ep.failures += 1
            if attempt == self.max_retries:
                break
            self.retries += 1
            log.info("retrying (%d/%d) after: %s", attempt + 1, self.max_retries, problem)
            if self.on_retry is not None:
                self.on_retry(f"{problem}; retrying ({attempt + 1} of {self.max_retries}, --max-retries)")
            if not (down and self._any_up()):  # failing over to a healthy endpoint needs no wait
                await asyncio.sleep(max(self._delay(attempt), min(after, self.backoff_cap)))
        raise BackendError(f"{problem} (gave up after {plural(self.max_retries + 1, 'attempt')})", index)

    async def get_once(self, url: str) -> Any:
        """One GET without retries (for explanations after a failure); None on any problem."""
        try:
            return (await self._client.get(url, timeout=30)).json()
        except Exception:  # any failure here just means there is nothing to add
            return None

    async def _once(
        self, ep: Endpoint, method: str, path: str, body: Any, need: str, index: int | None, missing_ok: bool
    ) -> Any:
        """One attempt; raise ``_Retry`` for transient failures and ``BackendError`` for final ones."""
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
            if status in (404, 405, 501) and missing_ok:
                return None
            raise HTTPError(url, status, self.redact(error_message(resp)), index)
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
        return data

    def _pick(self) -> Endpoint:
        """The healthy endpoint with the fewest calls in flight (ties rotate); if none, the first back up."""
        now, n = time.monotonic(), len(self.endpoints)
        self._turn += 1
        pool = [e for e in self.endpoints if e.down_until <= now]
        if not pool:
            pool = [min(self.endpoints, key=lambda e: e.down_until)]
        return min(pool, key=lambda e: (e.outstanding, (self.endpoints.index(e) - self._turn) % n))

    def _any_up(self) -> bool:
        """Whether some endpoint is not sidelined right now."""
        now = time.monotonic()
        return any(e.down_until <= now for e in self.endpoints)

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter (timing only, so unseeded), capped."""
        return min(self.backoff_cap, self.backoff * 2 ** min(attempt, 30)) * random.uniform(0.5, 1.0)

    def redact(self, text: str) -> str:
        """Never let the API key into a message, even if a server echoes it."""
        return text.replace(self._key, "***") if self._key else text

    async def aclose(self) -> None:
        """Close the connections."""
        await self._client.aclose()


def check_base_urls(base_urls: Sequence[str]) -> list[str]:
    """The server URLs as a list: at least one, each ``http(s)://HOST[:PORT][/v1]``; else an InputError naming it."""
    urls = list(base_urls)
    if not urls:
        raise InputError("no server URL given", field="--base-url")
    for url in urls:
        try:
            parts = urllib.parse.urlsplit(url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 0) >= 0
        except ValueError:  # a bad IPv6 literal or port number
            ok = False
        if not ok:
            raise InputError(f"expected http://HOST[:PORT][/v1], got {url!r}", field="--base-url")
    return urls


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
