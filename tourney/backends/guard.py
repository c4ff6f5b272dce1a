"""Stop an engine's processes when tourney dies without closing them (``kill -9``, the OOM killer).

vLLM's engine core runs in a child process that never learns its parent died: after a ``kill -9`` it kept ~4.4 GB
(on a GPU, the card's memory) until killed by hand, and the resumed run found no room. ``Guard`` starts, before the
engine, a small watcher in a session of its own (Ctrl-C at the terminal does not reach it), tourney's child, reading
a pipe from tourney. While the engine starts (a 32B model loads for minutes) the watcher notes every new descendant
of tourney; once it is up, tourney sends the engine's processes (``started``), and processes started later (another
engine) are not the watcher's. A normal close writes "d" (vLLM's own shutdown has stopped them) and the watcher just
exits. When tourney dies first (the watcher's parent changes, or the pipe closes without "d"), or says "e" (a second
Ctrl-C while the engine loads: end it now), it ends the processes it noted if they still run (the same pid *and*
start time: a reused pid is left alone). The parent is what tells:
processes forked from tourney (vLLM's default on a GPU) hold copies of the pipe, which then never closes.

    python -P guard.py OWNER_PID PID:START ...   (the watcher; stdin is the pipe; PID:START: tourney's descendants
                                                  before the engine; -P: this folder's openai.py and friends must not
                                                  shadow the packages psutil may import)
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time

import psutil

DONE, STARTED, END = b"d", b"s", b"e"
GRACE_S = 10.0  # SIGTERM first (vLLM shuts its workers down on it), SIGKILL after this
POLL_S = 0.5  # how often the watcher looks at its parent and, while the engine starts, for new processes

Marks = dict[int, float]  # pid -> start time


class Guard:
    """A watcher of the processes that one engine starts: create it just before the engine, call ``started`` once
    the engine is up and ``close`` once it is shut down."""

    def __init__(self) -> None:
        """Start the watcher; every process this one starts from now until ``started`` is watched."""
        self.before = descendants()
        self.watcher: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-P", __file__, str(os.getpid()), *encode(self.before)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        assert self.watcher.stdout is not None
        self.watcher.stdout.read(1)  # it watches (~0.2 s; "" if it could not start): the engine may start now
        self.watcher.stdout.close()

    def started(self) -> None:
        """The engine is up: its processes are the new descendants now (the watcher aside); none (an engine in this
        process): no watcher is needed."""
        if self.watcher is None:
            return
        marks = self._new()
        if not marks:
            self.close()
            return
        self._send(STARTED + line(marks))

    def close(self) -> None:
        """Tell the watcher the engine was shut down (it ends nothing) and reap it; safe to call twice."""
        self._send(DONE)
        self._let_go(wait=True)

    def end(self) -> None:
        """End the engine's processes now, without waiting (a second Ctrl-C while it loads): the watcher, in a
        session of its own, ends them and exits; tourney may leave at once."""
        if self.watcher is None:
            return
        # What started since the watcher's last look: tourney leaves at once, so the watcher cannot look again.
        self._send(END + line(self._new()))
        self._let_go(wait=False)

    def _new(self) -> Marks:
        """This process's descendants started since the guard was made, the watcher aside."""
        assert self.watcher is not None
        return new(descendants(), self.before, self.watcher.pid)

    def _let_go(self, wait: bool) -> None:
        """Close the pipe to the watcher (and reap it when ``wait``); the guard watches nothing more."""
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            assert watcher.stdin is not None
            with contextlib.suppress(OSError):
                watcher.stdin.close()
            if wait:
                watcher.wait()

    def _send(self, message: bytes) -> None:
        if self.watcher is not None and self.watcher.stdin is not None:
            with contextlib.suppress(OSError):  # it died: nothing is watched either way
                self.watcher.stdin.write(message)
                self.watcher.stdin.flush()


def descendants(pid: int | None = None) -> Marks:
    """The descendants of a process (default: this one) now, with their start times."""
    out: Marks = {}
    for p in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):  # gone already
            out[p.pid] = p.create_time()
    return out


def new(now: Marks, before: Marks, watcher: int) -> Marks:
    """The processes of ``now`` that were not there ``before`` (same pid and start time), the watcher aside."""
    return {pid: when for pid, when in now.items() if pid != watcher and before.get(pid) != when}


def encode(marks: Marks) -> list[str]:
    """Marks as ``PID:START`` words."""
    return [f"{pid}:{when!r}" for pid, when in marks.items()]


def line(marks: Marks) -> bytes:
    """Marks as the rest of a message's line: ``PID:START ...`` and a newline."""
    return " ".join(encode(marks)).encode() + b"\n"


def decode(words: list[str]) -> Marks:
    """``PID:START`` words as marks."""
    return {int(pid): float(when) for pid, when in (w.split(":") for w in words)}


def stop(marks: Marks) -> None:
    """End the processes (pid -> start time) that still run with that start time, and their descendants (a worker
    started after the watcher's last look): SIGTERM, then SIGKILL."""
    procs: dict[int, psutil.Process] = {}
    for pid, when in marks.items():
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if p.create_time() == when:
                procs[pid] = p
                with contextlib.suppress(psutil.Error):
                    procs |= {q.pid: q for q in p.children(recursive=True)}
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.terminate()
    alive, deadline = list(procs.values()), time.monotonic() + GRACE_S
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if running(p)]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


def running(p: psutil.Process) -> bool:
    """Whether ``p`` still runs: a zombie has ended (its parent, tourney, may not be there to reap it)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # is_running: not a reused pid
    except psutil.Error:
        return False


def read_marks(sent: bytes, otherwise: Marks) -> Marks:
    """The marks of a message's line; ``otherwise`` if it was cut (tourney died while writing it)."""
    try:
        return decode(sent.decode().split())
    except ValueError:
        return otherwise


def watch(owner: int, before: Marks) -> None:
    """The watcher: until ``owner`` says the engine started (then its list counts), note its new descendants; when it
    dies before saying "d", stop them."""
    marks: Marks = {}
    got, engine_up = b"", False
    os.write(1, b"r")  # watching: tourney may start the engine
    os.close(1)
    while True:
        alive = os.getppid() == owner
        if select.select([0], [], [], POLL_S if alive else 0)[0]:
            chunk = os.read(0, 4096)  # unbuffered: select stays true to what is left
            got += chunk
            if not engine_up and got.startswith(STARTED) and b"\n" in got:
                sent, got = got[1:].split(b"\n", 1)
                marks = read_marks(sent, marks)  # the engine's list replaces what was polled
                engine_up = True
            if got.startswith(DONE):
                return
            if got.startswith(END) and b"\n" in got:  # what tourney saw when it said "e" (it is leaving)
                marks |= read_marks(got[1:].split(b"\n", 1)[0], {})
                break
            if chunk:
                continue
        elif alive:
            if not engine_up:
                with contextlib.suppress(psutil.Error):
                    marks |= new(descendants(owner), before, os.getpid())
            continue
        break  # tourney died (the pipe closed without "d", or the parent changed and the pipe holds nothing more)
    stop(marks)


if __name__ == "__main__":
    watch(int(sys.argv[1]), decode(sys.argv[2:]))
