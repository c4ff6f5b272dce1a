"""Stop an engine's processes when tourney dies without closing them (``kill -9``, the OOM killer).

vLLM's engine core runs in a child process that never learns its parent died: after a ``kill -9`` it kept ~4.4 GB
(on a GPU, the card's memory) until killed by hand, and the resumed run found no room. ``Guard`` starts, before the
engine, a small watcher in a session of its own (Ctrl-C at the terminal does not reach it) holding the read end of a
pipe; tourney holds the write end. While the engine starts (a 32B model loads for minutes) the watcher notes every new
descendant of tourney; once it is up, tourney sends the engine's processes (``started``), and processes started later
(another engine) are not the watcher's. A normal close writes "d" (vLLM's own shutdown has stopped them) and the
watcher just exits; when the pipe closes without it, tourney died, and the watcher ends the processes it noted if they
still run (the same pid *and* start time: a reused pid is left alone).

    python -P guard.py OWNER_PID BEFORE_PID ...   (the watcher; stdin is the pipe; -P: this folder's openai.py and
                                                   friends must not shadow the packages psutil may import)
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys

import psutil

DONE, STARTED = b"d", b"s"
GRACE_S = 10.0  # SIGTERM first (vLLM shuts its workers down on it), SIGKILL after this
POLL_S = 0.5  # how often the watcher looks for the starting engine's new processes

Marks = dict[int, float]  # pid -> start time


class Guard:
    """A watcher of the processes that one engine starts: create it just before the engine, call ``started`` once
    the engine is up and ``close`` once it is shut down."""

    def __init__(self) -> None:
        """Start the watcher; every process this one starts from now until ``started`` is watched."""
        self.before = children()
        self.watcher: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-P", __file__, str(os.getpid()), *map(str, sorted(self.before))],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def started(self) -> None:
        """The engine is up: its processes are the new descendants now (the watcher's own aside)."""
        if self.watcher is not None:
            skip = self.before | {self.watcher.pid}
            marks = {p.pid: when for p in _descendants() if p.pid not in skip and (when := _start(p)) is not None}
            self._send(STARTED + " ".join(f"{pid}:{when!r}" for pid, when in marks.items()).encode() + b"\n")

    def close(self) -> None:
        """Tell the watcher the engine was shut down (it ends nothing) and reap it; safe to call twice."""
        self._send(DONE)
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            assert watcher.stdin is not None
            with contextlib.suppress(OSError):
                watcher.stdin.close()
            watcher.wait()

    def _send(self, message: bytes) -> None:
        if self.watcher is not None and self.watcher.stdin is not None:
            with contextlib.suppress(OSError):  # it died: nothing is watched either way
                self.watcher.stdin.write(message)
                self.watcher.stdin.flush()


def children() -> set[int]:
    """The pids of this process's descendants now."""
    return {p.pid for p in _descendants()}


def _descendants(pid: int | None = None) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _start(p: psutil.Process) -> float | None:
    """A process's start time (None: gone already)."""
    try:
        return float(p.create_time())
    except psutil.Error:
        return None


def stop(marks: Marks) -> None:
    """End the processes (pid -> start time) that still run with that start time, and their descendants (a worker
    started after the watcher's last look): SIGTERM, then SIGKILL."""
    procs: dict[int, psutil.Process] = {}
    for pid, when in marks.items():
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if p.create_time() == when:
                procs |= {q.pid: q for q in [p, *p.children(recursive=True)]}
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(list(procs.values()), timeout=GRACE_S)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


def watch(owner: int, before: set[int]) -> None:
    """The watcher: note ``owner``'s new descendants until it says the engine started (then take its list); stop
    them if the pipe from it closes before "d"."""
    pipe, skip = sys.stdin.buffer, before | {os.getpid()}
    marks: Marks = {}
    while not select.select([pipe], [], [], POLL_S)[0]:  # starting: poll (a dead owner's orphans cannot be found)
        with contextlib.suppress(psutil.Error):
            marks |= {p.pid: when for p in _descendants(owner) if p.pid not in skip and (when := _start(p)) is not None}
    head = pipe.read(1)
    if head == STARTED:
        marks = {int(pid): float(when) for pid, when in (m.split(":") for m in pipe.readline().decode().split())}
        head = pipe.read(1)  # "d", or EOF: tourney died
    if head != DONE:
        stop(marks)


if __name__ == "__main__":
    watch(int(sys.argv[1]), {int(pid) for pid in sys.argv[2:]})
