"""A misbehaving HTTP proxy on 127.0.0.1 for fault-injection tests: it forwards to a real server, but not always.

``FaultProxy(upstream)`` speaks HTTP/1.1 with keep-alive to its clients and forwards each request to ``upstream``
(a fresh connection each time, so it never trips over the upstream's idle-connection timeout). For a set share of
requests it misbehaves instead, in one of these ways (``KINDS``):

- ``drop``: read the request, close the connection unanswered (the upstream never sees it);
- ``reset``: forward, send the headers and half the body, then reset the connection (RST);
- ``429`` / ``503``: answer that status itself, with ``Retry-After`` (1 s and 0 s); ``500`` / ``502``: without;
- ``slow``: wait ``slow`` seconds (meant to stay under the client's timeout), then forward normally;
- ``stall``: hold the request unanswered for ``stall`` seconds (meant to pass the client's timeout), then close.

The choice is seeded and depends only on the request (method, path, body) and how often that same request came before,
not on arrival order, so concurrent clients get the same faults run after run. One request is faulted at most
``max_per_request`` times in a row, so a client with that many retries always gets through. Every decision is
counted by kind. Bounded: the proxy stops by itself after ``lifetime`` seconds, and on ``stop()`` or leaving ``with``.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

import httpx

KINDS = ("drop", "reset", "429", "500", "502", "503", "slow", "stall")
DEFAULT_KINDS = ("drop", "reset", "429", "500", "502", "503", "slow")  # no stall: it needs a short client timeout
RETRY_AFTER = {"429": "1", "503": "0"}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host", "te",
              "trailer", "upgrade", "proxy-connection"}  # fmt: skip


class FaultProxy:
    """An HTTP proxy in front of ``upstream`` that misbehaves for a seeded share ``rate`` of requests."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        rate: float = 0.2,
        kinds: Iterable[str] = DEFAULT_KINDS,
        slow: float = 0.5,
        stall: float = 5.0,
        max_per_request: int = 3,
        lifetime: float = 600.0,
    ) -> None:
        """Set the upstream, the fault share and kinds, the delays, and the proxy's own lifetime; start with start()."""
        self.kinds = tuple(kinds)
        if not self.kinds or set(self.kinds) - set(KINDS):
            raise ValueError(f"kinds must be among {KINDS}; got {self.kinds}")
        self.upstream, self.seed, self.rate = upstream.rstrip("/"), seed, rate
        self.slow, self.stall, self.max_per_request, self.lifetime = slow, stall, max_per_request, lifetime
        self.counts: Counter[str] = Counter()  # kind (or "ok") -> requests
        self.by_path: Counter[tuple[str, str]] = Counter()  # (path, kind) -> requests
        self.port = 0
        self._seen: Counter[bytes] = Counter()  # request digest -> times seen
        self._streak: Counter[bytes] = Counter()  # request digest -> faults in a row
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def faults(self) -> int:
        """Requests it misbehaved on, of every kind."""
        with self._lock:
            return sum(n for kind, n in self.counts.items() if kind != "ok")

    def must_retry(self) -> int:
        """Faults a client sees as a failed attempt: all but ``slow`` (a ``stall`` only if it passes the timeout)."""
        with self._lock:
            return sum(n for kind, n in self.counts.items() if kind not in ("ok", "slow"))

    def report(self) -> dict[str, Any]:
        """What it did: requests by kind, and by path and kind."""
        with self._lock:
            by_path = {f"{p} {k}": n for (p, k), n in sorted(self.by_path.items()) if n}
            return {"kinds": {k: n for k, n in sorted(self.counts.items()) if n}, "by_path": by_path}

    def start(self, port: int = 0) -> FaultProxy:
        """Listen on ``port`` (0: a free one), serving from a daemon thread with its own event loop; a stopped proxy
        may start again (on its old port: a server that went away and came back)."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._stopped.clear()

        def main() -> None:
            try:
                asyncio.run(self._serve(ready, port))
            except BaseException as err:  # report a failed start to the starting thread
                failure.append(err)
                ready.set()
            finally:
                self._stopped.set()

        self._thread = threading.Thread(target=main, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise RuntimeError(f"fault proxy did not start: {failure[0]!r}")
        return self

    def stop(self) -> None:
        """Stop serving and drop every open connection; safe to call twice."""
        loop = self._loop
        if loop is not None and not self._stopped.is_set():
            try:
                loop.call_soon_threadsafe(self._shutdown.set)
            except RuntimeError:  # the loop already closed
                pass
        if self._thread is not None:
            self._thread.join(30)

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s for the proxy to stop; whether it has."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> FaultProxy:
        """Start the proxy."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop the proxy."""
        self.stop()

    # ---- on the proxy's loop ------------------------------------------------------------------------------------

    async def _serve(self, ready: threading.Event, port: int) -> None:
        """Accept connections until stopped or ``lifetime`` runs out, then close them all."""
        self._loop = asyncio.get_running_loop()
        self._shutdown = asyncio.Event()
        # A fresh upstream connection per request: no keep-alive race with the upstream's idle timeout.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=self.upstream, timeout=300.0, limits=limits) as client:
            self._client = client
            server = await asyncio.start_server(self._track, "127.0.0.1", port)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            try:
                await asyncio.wait_for(self._shutdown.wait(), self.lifetime)
            except TimeoutError:
                pass
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection as a task that ``stop`` can cancel."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve the requests of one keep-alive connection, one after the other."""
        while True:
            request = await read_request(reader)
            if request is None:
                return
            method, path, headers, body = request
            kind = self._decide(method, path, body)
            if kind == "drop":
                return
            if kind == "stall":
                await asyncio.sleep(self.stall)
                return
            if kind in ("429", "500", "502", "503"):
                extra = {"Retry-After": RETRY_AFTER[kind]} if kind in RETRY_AFTER else {}
                error = f'{{"error": {{"message": "injected {kind}", "type": "proxy", "code": {kind}}}}}'
                writer.write(response_bytes(int(kind), error.encode(), {"Content-Type": "application/json", **extra}))
                await writer.drain()
                continue
            if kind == "slow":
                await asyncio.sleep(self.slow)
            try:
                resp = await self._client.request(method, path, content=body, headers=forward_headers(headers))
            except httpx.HTTPError as err:  # the upstream failed: the client sees a 502, counted as a fault
                self._refile(path, kind, "upstream-error")
                writer.write(response_bytes(502, f"upstream: {type(err).__name__}".encode(), {}))
                await writer.drain()
                continue
            data = response_bytes(resp.status_code, resp.content, forward_headers(resp.headers))
            if kind == "reset":
                head = data.index(b"\r\n\r\n") + 4
                writer.write(data[: head + (len(data) - head) // 2])
                await writer.drain()
                await asyncio.sleep(0.05)  # let the client read the head first: the reset comes mid-answer
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                return
            writer.write(data)
            await writer.drain()
            if headers.get("connection", "").lower() == "close":
                return

    def _decide(self, method: str, path: str, body: bytes) -> str:
        """The kind for this request (``ok``: forward), from the seed, the request and how often it came before."""
        digest = hashlib.sha256(b"\0".join([method.encode(), path.encode(), body])).digest()
        with self._lock:
            nth = self._seen[digest]
            self._seen[digest] += 1
            roll = hashlib.sha256(f"{self.seed}:{nth}:".encode() + digest).digest()
            share, pick = int.from_bytes(roll[:8], "big") / 2**64, int.from_bytes(roll[8:16], "big")
            kind = "ok"
            if share < self.rate and self._streak[digest] < self.max_per_request:
                kind = self.kinds[pick % len(self.kinds)]
            self._streak[digest] = self._streak[digest] + 1 if kind not in ("ok", "slow") else 0
            self.counts[kind] += 1
            self.by_path[(path, kind)] += 1
        return kind

    def _refile(self, path: str, old: str, new: str) -> None:
        """Count one decided request under another kind (the upstream failed it)."""
        with self._lock:
            self.counts[old] -= 1
            self.by_path[(path, old)] -= 1
            self.counts[new] += 1
            self.by_path[(path, new)] += 1


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request (method, path, lower-cased headers, body); None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        raise ConnectionError("chunked request bodies are not supported")
    size = int(headers.get("content-length") or 0)
    body = await reader.readexactly(size) if size else b""
    return method, path, headers, body


def forward_headers(headers: Any) -> dict[str, str]:
    """End-to-end headers only (the proxy frames each message itself)."""
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


def response_bytes(status: int, body: bytes, headers: dict[str, str]) -> bytes:
    """A complete HTTP/1.1 response with a Content-Length (keep-alive)."""
    from http import HTTPStatus

    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
