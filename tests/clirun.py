"""Run the ``tourney`` CLI in-process, as a test would run ``python -m tourney`` (without a new interpreter's 2-3 s).

``tourney(...)`` returns a ``subprocess.CompletedProcess`` (returncode, stdout, stderr), so a test reads the same
whichever way its command ran. A real process is still the point for signals, file descriptors, umask, FIFOs,
kill -9 and concurrency between processes: those tests use ``subprocess`` (``python_m_tourney`` gives the command).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import traceback
from collections.abc import Mapping
from typing import Any

# The one line a Ctrl-C leaves: what was kept, and (once rows were written) where they are and how to go on.
INTERRUPTED = re.compile(
    r"tourney: interrupted \((\d+ prompts? written to \S+\.partial, )?judgments so far are "
    r"cached(; run the same command again to continue after them)?\)"
)


def python_m_tourney(*args: Any) -> list[str]:
    """The argv of a real ``python -m tourney ...`` process."""
    return [sys.executable, "-m", "tourney", *map(str, args)]


def on_a_terminal(
    args: list[Any],
    timeout: float = 120,
    env: Mapping[str, str] | None = None,
    stdout: Any = subprocess.DEVNULL,
    raw: bool = False,
) -> tuple[int, str]:
    """Run a real ``python -m tourney`` with stderr on a pseudo-terminal (the progress bar shows only on one); return
    its exit code and every frame written there, control sequences removed unless ``raw`` (``stdout``: where its
    stdout goes)."""
    import pty
    import select
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(python_m_tourney(*args), stdout=stdout, stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    code = proc.wait(timeout=30)
    text = b"".join(chunks).decode("utf-8", "replace")
    if raw:
        return code, text
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def tourney(
    *args: Any, stdin: str | bytes | None = None, env: Mapping[str, Any] | None = None, text: bool = True
) -> subprocess.CompletedProcess:
    """Run ``tourney ARGS`` in this process with ``stdin`` as its standard input.

    ``env``: variables set (str() of each; None: removed) for the run only, over this process's environment.
    ``text``: decode stdout and stderr as UTF-8 (else bytes). An exception main() lets through is printed as the
    interpreter would (a traceback, exit 1), so "no Traceback on stderr" means the same here as in a real process.
    """
    from click.testing import CliRunner

    from tourney.cli import main

    argv = [str(a) for a in args]
    overrides = {k: None if v is None else str(v) for k, v in (env or {}).items()}
    saved_env = dict(os.environ)
    quiet = _console_quiet()
    code: int
    try:
        with CliRunner().isolation(input=stdin, env=overrides) as (out, err, _):
            try:
                main(argv)
                code = 0
            except SystemExit as ex:
                code = _exit_code(ex.code)
            except Exception:  # what the interpreter would print for an uncaught exception
                traceback.print_exc(file=sys.stderr)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            stdout, stderr = out.getvalue(), err.getvalue()
    finally:
        # Nothing a run changes in this process may reach the next test: environment and console flags.
        os.environ.clear()
        os.environ.update(saved_env)
        for console, flag in quiet:
            console.quiet = flag
        forget_vllm_env()
    if text:
        return subprocess.CompletedProcess(argv, code, stdout.decode(), stderr.decode())
    return subprocess.CompletedProcess(argv, code, stdout, stderr)


def forget_vllm_env() -> None:
    """Undo vLLM's cache of its environment variables: an engine core that ran in this process (no multiprocessing)
    froze them, and the next engine here would otherwise still see that one's settings."""
    envs = sys.modules.get("vllm.envs")
    if envs is not None:
        envs.disable_envs_cache()


def _exit_code(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives a process."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits 1
    return 1


def _console_quiet() -> list[tuple[Any, bool]]:
    """Every module-level Console of tourney and its ``quiet`` flag (a run sets it from ``--quiet``)."""
    from tourney.console import Console

    found = []
    for name, module in list(sys.modules.items()):
        if name.startswith("tourney") and module is not None:
            found += [(v, v.quiet) for v in vars(module).values() if isinstance(v, Console)]
    return found
