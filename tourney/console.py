"""What the user sees on stderr: one-line messages, a progress bar with ETA, and vLLM/torch logs kept out of the way.

Model libraries write to file descriptor 2 from this process and from vLLM's engine process. ``Console.logs_to``
points fd 2 at a log file for the length of a run and keeps a private copy of the terminal for tourney's own lines, so
the bar and the messages stay readable and ``-o -`` stays clean.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


class Console:
    """tourney's own stderr: messages, warnings, the progress bar."""

    def __init__(self, quiet: bool = False) -> None:
        """``quiet``: no bar and no closing summary line (warnings and errors still show)."""
        self.quiet = quiet
        self.interrupted = "judgments so far are cached"  # what a Ctrl-C message says was kept; a run updates it
        self.started = time.perf_counter()  # the command's start (``main`` resets it): times include start-up
        self._stream: TextIO | None = None  # None: whatever sys.stderr is now (in-process test runs swap it)

    @property
    def stream(self) -> TextIO:
        """Where tourney's own lines go: the terminal's stderr, or its private copy while ``logs_to`` is active."""
        return self._stream if self._stream is not None else sys.stderr

    def start_clock(self, whole_process: bool) -> None:
        """Start the command's clock now, or (``whole_process``: a real ``tourney`` process) when the process began,
        so the interpreter's start and the imports count too (Linux: /proc; elsewhere: now)."""
        self.started = time.perf_counter() - (process_age() if whole_process else 0.0)

    def elapsed(self) -> float:
        """Seconds since the command started: what a closing line and ``wall_s`` report (model loading included)."""
        return time.perf_counter() - self.started

    def say(self, message: str) -> None:
        """One line on stderr, unless quiet."""
        if not self.quiet:
            self.line(message)

    def warn(self, message: str) -> None:
        """A warning line (shown even when quiet); "warning:" in yellow on a terminal."""
        self.line(f"tourney: {self.paint('warning:', '33')} {message}")

    def error(self, message: str, kind: str = "error") -> None:
        """The one line a failed command leaves; ``kind`` ("error:", "judge failed:") in red on a terminal."""
        self.line(f"tourney: {self.paint(kind + ':', '31')} {message}")

    def paint(self, text: str, color: str) -> str:
        """``text`` in an ANSI colour when the stream is a terminal that wants colour (not NO_COLOR, not dumb)."""
        plain = os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb" or not _isatty(self.stream)
        return text if plain else f"\x1b[{color}m{text}\x1b[0m"

    def line(self, text: str) -> None:
        """Write one line to the terminal's stderr."""
        self.stream.write(text + "\n")
        self.stream.flush()

    @contextmanager
    def logs_to(self, path: Path) -> Iterator[None]:
        """Send fd 2 (this process and its children) to ``path`` while tourney keeps writing to the terminal."""
        path.parent.mkdir(parents=True, exist_ok=True)
        sys.stderr.flush()
        saved = os.dup(2)
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 2)
        os.close(log)
        # tourney's own lines go to the terminal: a copy of fd 2, unless sys.stderr is not fd 2 (a caller or a test
        # runner captured it), in which case they keep going to sys.stderr.
        mine = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace") if _on_fd2() else None
        previous, self._stream = self._stream, mine
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            self._stream = previous
            if mine is not None:
                mine.close()

    @contextmanager
    def progress(self, total: int, doing: str = "judging") -> Iterator[Progress]:
        """A progress bar over ``total`` judgments, or samples (``doing``), a no-op when quiet or stderr is not a
        terminal."""
        bar = Progress(self, total, enabled=not self.quiet and self.stream.isatty(), doing=doing)
        try:
            yield bar
        finally:
            bar.stop()


def process_age() -> float:
    """Seconds since this process started (0 where /proc cannot tell)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: start time, in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def plural(count: int, word: str, many: str | None = None) -> str:
    """``count`` and ``word``, or its plural ``many`` (default: word + s) unless the count is 1: "1 judge call"."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def vllm_logs_off_stdout() -> None:
    """Before vLLM is imported: its logger writes to stdout by default, which a library's caller owns (and the
    CLI's ``-o -`` carries JSONL on); a caller's own setting wins."""
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


@contextmanager
def silenced() -> Iterator[None]:
    """Drop what this process prints meanwhile, from Python and from C (file descriptors 1 and 2): for importing a
    model library that announces itself on import (vLLM: "Triton is installed, but ..."), outside any run's log."""
    import contextlib
    import io

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _isatty(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (False for in-memory streams)."""
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


def _on_fd2() -> bool:
    """Whether sys.stderr writes to file descriptor 2."""
    try:
        return sys.stderr.fileno() == 2
    except (OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream
        return False


NO_ETA = "-:--:--"
BURST_S = 0.5  # judgments counted this close together count as one burst, done at its end
RATE_AFTER_S = 1.0  # no rate before this long after the first burst


def clock(seconds: float) -> str:
    """Seconds as H:MM:SS, as rich writes elapsed time (hours past 24 kept)."""
    m, sec = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{sec:02d}"


class Progress:
    """The judging bar: phase, done/total, rate, elapsed and ETA; cached judgments count as soon as they are read."""

    def __init__(self, console: Console, total: int, enabled: bool, doing: str = "judging") -> None:
        """Start the bar on the console's stream when enabled; ``doing`` names the work once it runs."""
        self._bar: Any = None
        self.doing = doing
        self._since: tuple[float, float] | None = None  # (time, judgments done) the rate is measured from
        self._moving = False  # past the first burst of judgments (the cache's, or a whole engine step's)
        self._console, self._noted = console, False
        if not enabled:
            return
        from rich.console import Console as RichConsole
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self._bar = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA {task.fields[eta]}"),
            console=RichConsole(file=console.stream), transient=True,
            # rich would route sys.stdout/stderr through the bar: a model library's logger bound to sys.stderr
            # meanwhile (vLLM's) would then write to the terminal, not the run's log, for the rest of the process.
            redirect_stdout=False, redirect_stderr=False,
        )  # fmt: skip
        self._task = self._bar.add_task("starting", total=total, rate="", eta=NO_ETA)
        self._bar.start()

    def phase(self, text: str) -> None:
        """Show what is happening now (e.g. the engine starting)."""
        if self._bar is not None:
            self._bar.update(self._task, description=text)

    def note(self, text: str) -> None:
        """Something the user waits on (a server that does not answer yet): on the bar, or once as a line."""
        if self._bar is not None:
            self.phase(text)
        elif not self._noted:
            self._noted = True
            self._console.say(f"tourney: {text}")

    def advance(self, n: int) -> None:
        """Count ``n`` more judgments done; the rate and ETA count from the end of the first burst (rich's own speed
        took a lockstep step's judgments, done within microseconds, for 90,000/s)."""
        if self._bar is None:
            return
        task = self._bar.tasks[0]
        self._bar.update(self._task, advance=n, description=self.doing)
        now = time.monotonic()
        if self._since is None or (not self._moving and now - self._since[0] < BURST_S):
            self._since = (now, task.completed)
        else:
            self._moving = True
        start, done = self._since
        rate = (task.completed - done) / (now - start) if self._moving and now - start >= RATE_AFTER_S else 0.0
        eta = clock((task.total - task.completed) / rate) if rate else NO_ETA
        self._bar.update(self._task, rate=f"{rate:.1f}/s" if rate else "", eta=eta)

    def stop(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
