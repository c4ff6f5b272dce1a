"""Stop an engine's processes when tourney dies without closing them (``kill -9``, the OOM killer).

vLLM's engine core runs in a child process that never learns its parent died: after a ``kill -9`` it kept ~4.4 GB
(on a GPU, the card's memory) until killed by hand, and the resumed run found no room. ``Guard`` starts a small
watcher in a session of its own (Ctrl-C at the terminal does not reach it) holding the read end of a pipe; tourney
holds the write end. A normal close writes "done" (vLLM's own shutdown has stopped them) and the watcher just exits;
when the pipe closes without it, tourney died, and the watcher ends the processes it was given if they still run (the
same pid *and* start time: a reused pid is left alone).

    python -P guard.py PID:START ...   (the watcher; stdin is the pipe; -P: this folder's openai.py and friends must
                                        not shadow the packages psutil may import, while PYTHONPATH still counts)
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

import psutil

DONE = b"done"
GRACE_S = 10.0  # SIGTERM first (vLLM shuts its workers down on it), SIGKILL after this


class Guard:
    """A watcher of the processes that one engine started."""

    def __init__(self, before: set[int]) -> None:
        """Start watching every descendant of this process that is not in ``before`` (pids taken before the engine
        started); no watcher when there is none."""
        marks = []
        for p in _descendants():
            if p.pid not in before:
                with contextlib.suppress(psutil.Error):  # gone already
                    marks.append(f"{p.pid}:{p.create_time()!r}")
        self.watcher: subprocess.Popen[bytes] | None = None
        if marks:
            self.watcher = subprocess.Popen(
                [sys.executable, "-P", __file__, *marks], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def close(self) -> None:
        """Tell the watcher the engine was shut down (it ends nothing) and reap it; safe to call twice."""
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            assert watcher.stdin is not None
            with contextlib.suppress(OSError):  # it died: nothing is watched either way
                watcher.stdin.write(DONE)
            with contextlib.suppress(OSError):
                watcher.stdin.close()
            watcher.wait()


def children() -> set[int]:
    """The pids of this process's descendants now."""
    return {p.pid for p in _descendants()}


def _descendants() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def stop(marks: list[str]) -> None:
    """End the processes named ``PID:START`` that still run with that start time: SIGTERM, then SIGKILL."""
    procs = []
    for mark in marks:
        pid, start = mark.split(":", 1)
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(int(pid))
            if p.create_time() == float(start):
                procs.append(p)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


def main() -> None:
    """Wait for the pipe from tourney to close; unless it said "done", stop the processes named on the command
    line."""
    # Only "done"'s bytes: a process forked later holds a copy of the write end, so the end of the pipe may be late.
    if sys.stdin.buffer.read(len(DONE)) != DONE:  # EOF first: tourney died
        stop(sys.argv[1:])


if __name__ == "__main__":
    main()
