"""One private asyncio event loop on a daemon thread, shared by everything a backend runs.

vLLM's AsyncLLM and an httpx client are bound to the loop they were made on. Running them on a loop of their own
lets plain code (``run``) and code on any other loop (``wrap``) use the same backend, and keeps per-endpoint bounds
and the engine's output handler in one place.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
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
        self._inbox: _Mailbox | None = None  # calls from other loops, started on this one
        self._outboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = weakref.WeakKeyDictionary()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule ``coro`` on the loop (started on first use) and return a concurrent future."""
        with self._lock:
            return asyncio.run_coroutine_threadsafe(coro, self._started(coro))

    def _started(self, coro: Coroutine[Any, Any, Any]) -> asyncio.AbstractEventLoop:
        """The loop, started on first use (call with the lock held); closed: ``coro`` is closed, BackendError."""
        if self._closed:
            coro.close()
            raise BackendError(f"the {self.name} backend is closed")
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._inbox = _Mailbox(self._loop)
            self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
            self._thread.start()
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (from plain, non-async code)."""
        return self.submit(coro).result()

    async def wrap(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and await it from another event loop (on the loop itself: awaited directly).

        Calls and answers cross between the threads through mailboxes: one wake-up carries every call (or answer)
        posted before the other loop gets to them, so a pipelined engine with thousands of calls in flight pays a
        few microseconds per call instead of a concurrent future, two chained callbacks and two wake-ups.
        """
        caller = asyncio.get_running_loop()
        with self._lock:
            loop, inbox = self._started(coro), self._inbox
            outbox = None if caller is loop else self._outboxes.get(caller)
            if outbox is None and caller is not loop:
                outbox = self._outboxes[caller] = _Mailbox(caller)
        if outbox is None:  # called on the loop itself
            return await coro
        assert inbox is not None
        call = _Call(coro, caller.create_future(), outbox)
        inbox.post(call.begin)
        try:
            return await call.result
        except asyncio.CancelledError:
            inbox.post(call.cancel)
            raise

    def close(self, last: Coroutine[Any, Any, Any] | None = None, timeout: float | None = 120.0) -> None:
        """Run ``last`` (a clean-up coroutine) on the loop, then stop and join it; safe to call twice."""
        with self._lock:
            self._closed = True
            loop, self._loop = self._loop, None
        if loop is None:
            if last is not None:
                last.close()
            return
        wait = 30.0
        try:
            if last is not None:
                asyncio.run_coroutine_threadsafe(last, loop).result(timeout=timeout)
            asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=timeout)
        except KeyboardInterrupt:
            wait = 0.0  # Ctrl-C while waiting: the loop may be busy for minutes (an engine loading); it is a daemon
            raise
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=wait)
            if not loop.is_running():
                loop.close()


class _Mailbox:
    """Callables posted to a loop from other threads: one wake-up runs every one posted before the loop gets to them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """An empty mailbox for ``loop``."""
        self.loop = loop
        self.items: deque[Callable[[], None]] = deque()
        self.woken = False

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop soon (dropped once the loop is closed, as asyncio's chained futures do)."""
        self.items.append(fn)
        if not self.woken:
            self.woken = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: nobody waits for its answers any more
                pass

    def _drain(self) -> None:
        """On the loop: run everything posted so far."""
        self.woken = False  # first: a post racing with this drain wakes the loop again rather than being missed
        items = self.items
        while items:
            items.popleft()()


class _Call:
    """One ``wrap`` call: its coroutine, the caller's future, the caller's mailbox, and its task once begun."""

    __slots__ = ("coro", "result", "outbox", "task", "cancelled")

    def __init__(self, coro: Coroutine[Any, Any, Any], result: asyncio.Future[Any], outbox: _Mailbox) -> None:
        """A call not yet begun."""
        self.coro, self.result, self.outbox = coro, result, outbox
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False

    def begin(self) -> None:
        """On the backend's loop: run the coroutine as a task that answers the caller when done."""
        if self.cancelled:
            self.coro.close()
            return
        self.task = asyncio.get_running_loop().create_task(self.coro)
        self.task.add_done_callback(lambda _: self.outbox.post(self.answer))

    def cancel(self) -> None:
        """On the backend's loop: the caller gave up; stop the task (or never begin it)."""
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()

    def answer(self) -> None:
        """On the caller's loop: hand the task's outcome to the caller (unless it has given up)."""
        task = self.task
        assert task is not None
        if task.cancelled():
            if not self.result.done():
                self.result.cancel()
            return
        exc = task.exception()  # read even when the caller has gone: no "exception never retrieved"
        if self.result.done():
            return
        if exc is not None:
            self.result.set_exception(exc)
        else:
            self.result.set_result(task.result())


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
