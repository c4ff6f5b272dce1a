"""The ``tourney`` command: a click group whose commands live one module each in this package.

Add a command: write its module (a ``click.Command``), then add one line to ``COMMANDS``. Commands are imported only
when run or listed, so ``tourney --help`` loads no model library. ``main`` turns errors into one line and an exit
code: 2 for bad input or options, 1 for a backend failure, 130 for Ctrl-C, 141 for a closed stdout pipe.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sys

import click

from tourney.console import Console
from tourney.errors import BackendError, InputError

CONSOLE = Console()  # tourney's own stderr, shared by every command

COMMANDS = {
    "rank": "tourney.cli.rank:rank_cmd",
    "best-of-n": "tourney.cli.rank:best_of_n_cmd",
    "pairs": "tourney.cli.pairs:pairs_cmd",
    "sample": "tourney.cli.sample:sample_cmd",
    "train": "tourney.train.cli:train",
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when the command is used or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Commands in registration order (rank and best-of-n first)."""
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return the command registered as ``cmd_name``."""
        if cmd_name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[cmd_name].partition(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; Ctrl-C leaves as ``Interrupted``, which click passes on untouched (it would print a
        blank line first, meant for a terminal's ``^C``, into a log file too)."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            raise Interrupted from err
        except OSError as err:
            if err.errno == errno.EPIPE:
                raise PipeClosed from err
            raise


class Interrupted(Exception):
    """Ctrl-C during a command."""


class PipeClosed(Exception):
    """The reader of stdout went away (``| head -1``)."""


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="tourney")
def cli() -> None:
    """Rank many candidate LLM responses with a pairwise reasoning judge (RM-R1, RRM, ...).

    Input is JSONL, one prompt per line: {"prompt": ..., "responses": [...]}; output is the same rows with the
    ranking added (INPUT may also be Parquet or a saved datasets folder). INPUT and -o may be '-' for stdin/stdout.
    Progress goes to stderr.
    """


def main(args: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 for bad input, 1 for backend failures.

    ``args`` defaults to ``sys.argv[1:]``; tests pass their own and run the command in-process.
    """
    CONSOLE.start_clock(whole_process=args is None)  # tests pass args and run in a process of their own
    code = run(args)
    if args is None and "torch" in sys.modules:
        exit_now(code)
    if code:
        sys.exit(code)


def run(args: list[str] | None) -> int:
    """Run one command; its exit code (errors become one line on stderr)."""
    try:
        cli.main(args=args, standalone_mode=False, prog_name="tourney")
    except click.exceptions.Exit as ex:
        return ex.exit_code
    except SystemExit as ex:
        return ex.code if isinstance(ex.code, int) else 0 if ex.code is None else 1
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help() if err.ctx else err.format_message())
    except click.ClickException as err:
        CONSOLE.error(err.format_message())
        return 2 if isinstance(err, click.UsageError) else err.exit_code
    except InputError as err:
        CONSOLE.error(str(err))
        return 2
    except BackendError as err:
        CONSOLE.error(str(err), "judge failed")
        return 1
    except PipeClosed:
        # Silent, and 128 + SIGPIPE, as a Unix tool stopped by the closed pipe (click's own answer was a bare 1, the
        # code of a failed judge); stdout goes to /dev/null so that the exit's flush finds no closed pipe.
        with contextlib.suppress(OSError, ValueError):  # in-process runs have no stdout descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (click.exceptions.Abort, KeyboardInterrupt, Interrupted):  # Abort: Ctrl-C as click saw it
        if sys.stderr.isatty():  # close the terminal's "^C" echo; a file or pipe gets one line
            click.echo(err=True)
        click.echo(f"tourney: interrupted ({CONSOLE.interrupted})", err=True)
        return 130
    return 0


def exit_now(code: int) -> None:
    """Leave without the interpreter's teardown, once a command is over (outputs renamed, cache and engines closed).

    After torch and vLLM are loaded, the last garbage collection and module teardown take ~2 s of CPU after the
    closing line, so the closing time would not be the run's; skipping it (gc.freeze instead makes Triton's
    bindings print leak reports) loses nothing but buffered output, flushed here."""
    import logging
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: the reader left, nothing more to tell it
            pass
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    main()
