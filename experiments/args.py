"""The experiments' parser and option types: a bad value or option is one line, ``prog: error: ...``, exit 2."""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse with tourney's one-line errors: ``prog: error: message`` and exit 2 (the usage is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        """Print the one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def script_env(cpu: bool = True) -> None:
    """The environment of a benchmark run as a script, set before it imports vLLM: vLLM's logs at WARNING on stderr
    (its report goes to stdout); with ``cpu``, offline and a 1 GiB CPU KV cache. Called under ``__main__`` only: a
    process that imports the module (the tests) keeps its own environment."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    if cpu:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def script_exit(code: int | None = 0) -> NoReturn:
    """Leave a script as ``tourney`` does: once vLLM is loaded, without the interpreter's teardown (there vLLM's
    ``AsyncLLM.__del__`` prints a TypeError traceback after the engine was shut down, and torch spends ~2 s)."""
    if "vllm" in sys.modules:
        from tourney.cli import exit_now

        exit_now(code or 0)
    sys.exit(code)


def out_dir(text: str) -> Path:
    """An output folder that is a folder or can be made one (checked before any work; nothing is left behind)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a folder")
    parent = path
    while not parent.exists():  # the nearest existing ancestor: it must be a folder this user can write
        parent = parent.parent
    try:  # a real probe: access() says yes to root even in /proc
        if not parent.is_dir():
            raise NotADirectoryError
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".tourney-probe-"))
    except OSError:
        raise argparse.ArgumentTypeError(
            f"{text}: cannot create a folder there ({parent} is not a writable folder)"
        ) from None
    return path


def positive(text: str) -> int:
    """An integer >= 1."""
    return _int(text, 1)


def at_least_two(text: str) -> int:
    """An integer >= 2 (candidates of a tournament)."""
    return _int(text, 2)


def non_negative(text: str) -> int:
    """An integer >= 0."""
    return _int(text, 0)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def open_unit(text: str) -> float:
    """A number strictly between 0 and 1 (a share that is neither none nor all)."""
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1 (exclusive), got {text!r}")
    return value


def sizes(text: str) -> list[int]:
    """Comma-separated numbers of candidates, each >= 2."""
    out = [positive(part.strip()) for part in text.split(",")]
    if min(out) < 2:
        raise argparse.ArgumentTypeError(f"every N must be >= 2, got {text!r}")
    if len(set(out)) < len(out):
        raise argparse.ArgumentTypeError(f"each N once, got {text!r}")
    return out


def given(argv: list[str], *flags: str) -> list[str]:
    """Which of ``flags`` (``--name``) the command line ``argv`` sets, in the order asked: for options that another
    one makes pointless (argparse cannot tell a value given from its default)."""
    seen = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    return [flag for flag in flags if flag in seen]


def _int(text: str, lo: int) -> int:
    """An integer >= ``lo``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
    if value < lo:
        raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}")
    return value


def _float(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def guarded(prog: str, body: Callable[[], int | None]) -> int:
    """Run a command's ``body``: a user's error is one line and exit 2, a judge's failure one line and exit 1, Ctrl-C
    one line and 130 (tourney's own exit codes); otherwise the body's code (None: 0)."""
    from tourney.errors import BackendError, InputError

    try:
        return body() or 0
    except InputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except BackendError as err:
        print(f"{prog}: error: judge failed: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (judgments so far are cached; run again to resume)", file=sys.stderr)
        return 130
