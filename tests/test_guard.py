"""The guard that ends an engine's processes when tourney dies without closing it (kill -9): real processes, since
the processes are the point; the vLLM test runs a real engine with its own engine-core and worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tourney.backends.guard import Guard, stop

REPO = Path(__file__).parents[1]

OWNER = """
import multiprocessing, subprocess, sys, time
from tourney.backends.guard import Guard
guard = Guard()
# The engine's process, forked as vLLM does on a GPU: it holds a copy of the watcher's pipe, which never closes.
engine = multiprocessing.get_context(sys.argv[2]).Process(target=time.sleep, args=(300,))
engine.start()
if sys.argv[1] == "started":
    guard.started()
    later = subprocess.Popen(["sleep", "300"]).pid  # another engine's, or the caller's own
else:  # killed while the engine starts: the watcher must have seen it
    time.sleep(1.5)
    later = engine.pid
print(engine.pid, later, flush=True)
time.sleep(300)
"""


def gone(pid: int, within: float) -> bool:
    """Whether ``pid`` exits (or is left a zombie for PID 1 to reap) within ``within`` seconds."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def owner_env() -> dict[str, str]:
    """The environment of a child Python that imports this checkout's tourney."""
    return dict(os.environ, PYTHONPATH=str(REPO))


@pytest.mark.parametrize("start", ["fork", "spawn"])
@pytest.mark.parametrize("when", ["started", "starting"])
def test_a_killed_owner_takes_its_engines_processes_with_it(when: str, start: str) -> None:
    """Killed once the engine is up, or while it loads, its processes forked (a GPU's default) or spawned (a CPU's):
    the engine's processes end, a process started after the engine was up (another engine's) is left alone."""
    owner = subprocess.Popen([sys.executable, "-c", OWNER, when, start], stdout=subprocess.PIPE, text=True,
                             env=owner_env())  # fmt: skip
    assert owner.stdout is not None
    engine, later = map(int, owner.stdout.readline().split())
    try:
        assert not gone(engine, 0.5)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert gone(engine, 15.0)
        assert later == engine or not gone(later, 1.0)
    finally:
        for pid in {engine, later}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_closed_guard_ends_nothing() -> None:
    guard = Guard()
    child = subprocess.Popen(["sleep", "300"])
    try:
        guard.started()
        assert guard.watcher is not None
        watcher = guard.watcher
        guard.close()
        guard.close()  # twice is fine
        assert watcher.returncode == 0 and child.poll() is None  # the watcher has exited and left the child alone
    finally:
        child.kill()
        child.wait()


def test_no_watcher_stays_when_the_engine_has_no_process_of_its_own() -> None:
    guard = Guard()
    watcher = guard.watcher
    assert watcher is not None
    guard.started()  # nothing new: an engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)
    assert guard.watcher is None and watcher.returncode == 0
    guard.close()


def test_a_reused_pid_is_left_alone() -> None:
    child = subprocess.Popen(["sleep", "300"])
    try:
        stop({child.pid: 0.0})  # the pid, another start time: another process
        assert child.poll() is None
        stop({child.pid: psutil.Process(child.pid).create_time()})
        child.wait(timeout=15)  # ended (psutil, having waited on it, may have taken its status)
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("up", [False, True])
def test_end_ends_the_engines_processes_at_once(up: bool) -> None:
    """A second Ctrl-C while the engine loads (``up``: once it is up, the same): the watcher ends what the engine
    started while tourney goes on (and leaves); tourney's other processes are left alone."""
    other = subprocess.Popen(["sleep", "300"])
    guard = Guard()
    child = subprocess.Popen(["sleep", "300"])
    try:
        if up:
            guard.started()
        guard.end()
        assert guard.watcher is None
        assert gone(child.pid, 5.0) and other.poll() is None
    finally:
        for p in (child, other):
            p.kill()
            p.wait()


END_AND_LEAVE = """
import os, subprocess
from tourney.backends.guard import Guard
guard = Guard()
child = subprocess.Popen(["sleep", "300"])  # started just now: the watcher has not looked yet
print(child.pid, flush=True)
guard.end()
os._exit(130)  # as tourney leaves after a second Ctrl-C
"""


def test_end_ends_what_started_just_before_even_as_the_owner_leaves_at_once() -> None:
    owner = subprocess.run([sys.executable, "-c", END_AND_LEAVE], capture_output=True, text=True, env=owner_env(),
                           timeout=60)  # fmt: skip
    child = int(owner.stdout.split()[0])
    try:
        assert gone(child, 5.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_zombie_is_not_waited_for() -> None:
    """An engine process ended but not yet reaped by its parent (tourney, busy closing or gone) has ended: ``stop``,
    run elsewhere (the watcher), does not wait the grace period (10 s) for it."""
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, time\n"
                               "print(subprocess.Popen(['sleep', '300']).pid, flush=True)\ntime.sleep(300)"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        t0 = time.monotonic()
        stop({child: psutil.Process(child).create_time()})  # SIGTERM: a zombie, its parent does not reap it
        assert time.monotonic() - t0 < 5.0 and psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    finally:
        parent.kill()
        parent.wait()


ENGINE = """
import sys
from tourney.backends.base import Sampling
from tourney.backends.vllm import VLLMBackend
from tourney.errors import BackendError
backend = VLLMBackend(sys.argv[1], dtype="float32", max_model_len=256, mode=sys.argv[2],
                      engine_kwargs={"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20})
backend.loop.run(backend.start())
print("ready", flush=True)
try:
    while True:
        backend.loop.run(backend.generate([[{"role": "user", "content": "Hi"}]], [Sampling(max_tokens=8)]))
except BackendError as err:
    print(f"error: {err}", flush=True)
finally:
    backend.close()
"""


def started_engine(model: Path, mode: str) -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    """A Python process running a real vLLM engine (with vLLM's default processes) and generating in a loop; its
    engine's processes (the guard's watcher aside). Its stdout has only the script's lines: vLLM's logs are not
    there."""
    env = owner_env()  # and no VLLM_LOGGING_STREAM: tourney keeps vLLM's logs off a library caller's stdout
    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "VLLM_LOGGING_STREAM"):
        env.pop(name, None)
    owner = subprocess.Popen([sys.executable, "-c", ENGINE, str(model), mode], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env=env)  # fmt: skip
    assert owner.stdout is not None
    assert owner.stdout.readline() == "ready\n"
    procs = [p for p in psutil.Process(owner.pid).children(recursive=True) if "guard.py" not in " ".join(p.cmdline())]
    assert procs  # the engine core at least
    return owner, procs


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lockstep", "pipelined"])
def test_an_engine_killed_mid_run_is_one_error_line(tiny_model_dir: Path, mode: str) -> None:
    """The OOM killer takes the engine's process: one BackendError line, not vLLM's EngineDeadError traceback, and
    in lockstep not a hang (vLLM's LLM waited for ever)."""
    pytest.importorskip("vllm")
    owner, procs = started_engine(tiny_model_dir, mode)
    try:
        for p in procs:
            p.kill()
        out, _ = owner.communicate(timeout=120)
        assert out.startswith("error: the vLLM engine of ") and out.endswith(
            " died mid-run (killed, or out of memory?)\n"
        )
        assert len(out.splitlines()) == 1 and owner.returncode == 0, out
    finally:
        owner.kill()


@pytest.mark.slow
def test_a_killed_owner_leaves_no_engine_behind(tiny_model_dir: Path) -> None:
    """tourney killed -9 mid-run (the README's resume path): its engine core and worker do not stay behind holding
    the memory (on a GPU, the card's) the resumed run needs."""
    pytest.importorskip("vllm")
    owner, procs = started_engine(tiny_model_dir, "pipelined")
    owner.kill()
    owner.wait()
    assert all(gone(p.pid, 30.0) for p in procs), [p.pid for p in procs]


@pytest.mark.slow
def test_an_owner_killed_while_its_engine_loads_leaves_no_engine_behind(tiny_model_dir: Path, tmp_path: Path) -> None:
    """tourney killed -9 while vLLM starts (a 32B model loads for minutes): the processes started so far end (they
    stayed ~5 minutes, until vLLM's start-up timed out)."""
    pytest.importorskip("vllm")
    env = owner_env()
    for name in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_LOGGING_STREAM"):
        env.pop(name, None)
    with open(tmp_path / "out", "w") as out:  # not a pipe: the engine's processes would hold it open
        owner = subprocess.Popen([sys.executable, "-c", ENGINE, str(tiny_model_dir), "pipelined"], stdout=out,
                                 stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    try:
        end, procs = time.monotonic() + 120, []
        while not procs and time.monotonic() < end and owner.poll() is None:
            time.sleep(0.2)
            procs = [p for p in psutil.Process(owner.pid).children(recursive=True)
                     if "guard.py" not in " ".join(p.cmdline())]  # fmt: skip
        assert procs, "the engine's process never started"
        time.sleep(1.0)  # the watcher looks twice a second
    finally:
        owner.kill()
        owner.wait()
    assert "ready" not in (tmp_path / "out").read_text()  # killed during the start
    assert all(gone(p.pid, 30.0) for p in procs), [p.pid for p in procs]


def test_closing_a_guard_does_not_wait_for_processes_forked_after_it() -> None:
    """A process forked later (a second engine's core, a fork pool) holds a copy of the pipe's write end: the watcher
    must act on "done", not wait for the pipe's end (closing one engine waited for the other's)."""
    guard = Guard()
    child = subprocess.Popen(["sleep", "300"])
    guard.started()
    forked = os.fork()
    if forked == 0:  # pragma: no cover - the child only waits
        time.sleep(5)
        os._exit(0)
    try:
        t0 = time.monotonic()
        guard.close()
        assert time.monotonic() - t0 < 2.5 and child.poll() is None
    finally:
        os.kill(forked, signal.SIGKILL)
        os.waitpid(forked, 0)
        child.kill()
        child.wait()


class Dead(Exception):
    """The engine's death, as unless_dead raises it."""


def run_unless_dead(work_s: float, death_s: float | None, cancel_death: bool = False, cancel_caller: bool = False):
    """Run ``unless_dead`` on real asyncio work of ``work_s`` seconds against a death after ``death_s`` (None: never);
    return (outcome, whether the work was left running)."""
    from tourney.backends.vllm import unless_dead

    async def main():
        done = asyncio.Event()

        async def work():
            await asyncio.sleep(work_s)
            done.set()
            return "answers"

        loop = asyncio.get_running_loop()
        death = loop.create_future()
        if death_s is not None:
            loop.call_later(death_s, death.cancel if cancel_death else lambda: death.set_result(None))
        call = asyncio.ensure_future(unless_dead(work(), death, Dead))
        if cancel_caller:
            loop.call_later(0.05, call.cancel)
        try:
            outcome = await call
        except (Dead, asyncio.CancelledError) as err:
            outcome = type(err).__name__
        await asyncio.sleep(work_s)  # long enough for an orphaned work to finish
        return outcome, done.is_set()

    return asyncio.run(main())


def test_unless_dead_returns_answers_or_the_death_and_never_leaves_work_running() -> None:
    assert run_unless_dead(0.05, None) == ("answers", True)
    assert run_unless_dead(0.05, 1.0) == ("answers", True)
    assert run_unless_dead(0.3, 0.05) == ("Dead", False)  # the engine died first: its requests are aborted
    assert run_unless_dead(0.3, 0.05, cancel_death=True) == ("CancelledError", False)  # closed while waiting
    assert run_unless_dead(0.3, None, cancel_caller=True) == ("CancelledError", False)  # the caller gave up
