"""LoopThread.wrap from another event loop: answers in order, errors and cancellation carried, refused once closed."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tourney.aio import LoopThread
from tourney.errors import BackendError


async def echo(x: int, delay: float) -> int:
    await asyncio.sleep(delay)
    return x


def test_many_concurrent_calls_each_get_their_own_answer() -> None:
    lt = LoopThread("test-aio")
    try:

        async def main() -> list[int]:
            return await asyncio.gather(*(lt.wrap(echo(i, 0.0005 * (i % 7))) for i in range(3000)))

        assert asyncio.run(main()) == list(range(3000))
        assert asyncio.run(main()) == list(range(3000))  # a second caller loop, same backend loop
    finally:
        lt.close()


def test_errors_and_cancellation_cross_the_threads() -> None:
    lt = LoopThread("test-aio")
    stopped = threading.Event()

    async def boom() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    async def forever() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    async def main() -> None:
        with pytest.raises(ValueError, match="boom"):
            await lt.wrap(boom())
        call = asyncio.ensure_future(lt.wrap(forever()))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    try:
        asyncio.run(main())
        assert stopped.wait(5), "the backend task outlived its cancelled caller"
        assert lt.run(lt.wrap(echo(7, 0.0))) == 7  # awaited on its own loop: runs directly
    finally:
        lt.close()


def test_close_ends_calls_in_flight_and_refuses_new_ones() -> None:
    lt = LoopThread("test-aio")

    async def main() -> None:
        call = asyncio.ensure_future(lt.wrap(echo(1, 60)))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(lt.close)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(call, 10)
        with pytest.raises(BackendError, match="closed"):
            await lt.wrap(echo(2, 0))

    asyncio.run(main())
