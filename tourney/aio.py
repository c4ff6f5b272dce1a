"""One private asyncio event loop on a daemon thread, shared by everything a backend runs.

vLLM's AsyncLLM and an httpx client are bound to the loop they were made on. Running them on a loop of their own
lets plain code (``run``) and code on any other loop (``wrap``) use the same backend, and keeps per-endpoint bounds
and the engine's output handler in one place.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from tourney.errors import BackendError

T = TypeVar("T")


class LoopThread:
    """A lazily started event loop on a daemon thread; ``close`` stops it after an optional last coroutine."""

    def __init__(self, name: str) -> None:
        """Name the thread; nothing starts until the first coroutine is submitted."""
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop (started on first use) and return a concurrent future."""
        with self._lock:
            if self._closed:
                coro.close()
                raise BackendError(f"the {self.name} backend is closed")
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
                self._thread.start()
            return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (from plain, non-async code)."""
        return self.submit(coro).result()

    async def wrap(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await it from another event loop, or directly when awaited on the loop itself
        (a caller run there, e.g. a pipelined engine, pays no thread hop and no GIL hand-off per call)."""
        if self._loop is not None and asyncio.get_running_loop() is self._loop:
            if self._closed:
                coro.close()
                raise BackendError(f"the {self.name} backend is closed")
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    def close(self, last: Coroutine[Any, Any, Any] | None = None, timeout: float = 120.0) -> None:
        """Run ``last`` (a clean-up coroutine) on the loop, then stop and join it; safe to call twice."""
        with self._lock:
            self._closed = True
            loop, self._loop = self._loop, None
        if loop is None:
            if last is not None:
                last.close()
            return
        try:
            if last is not None:
                asyncio.run_coroutine_threadsafe(last, loop).result(timeout=timeout)
            asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=30)
            if not loop.is_running():
                loop.close()


async def gather_all(aws: Sequence[Awaitable[T]]) -> list[T]:
    """Await all, results in order; the first failure cancels the rest (one failure ends the batch)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _cancel_all() -> None:
    """Cancel every other task on this loop and wait for them (an interrupted batch leaves requests in flight)."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
