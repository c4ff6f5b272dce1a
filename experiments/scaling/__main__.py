"""``python -m experiments.scaling CONFIG.toml [--out DIR] [--dry-run] [--quiet]``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

# Bradley-Terry fits many tiny problems; a multi-threaded BLAS makes each L-BFGS step ~3 ms on a busy 2-core machine
# (2-3x slower runs, measured), one thread makes it negligible.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from experiments.args import Parser, guarded, out_dir, script_env, script_exit  # noqa: E402
from experiments.scaling import config as config_mod  # noqa: E402
from experiments.scaling import report, run  # noqa: E402
from tourney.errors import InputError  # noqa: E402


def dry_run(cfg: config_mod.Config, data: run.Data) -> None:
    """Print the cells and how many judgments each would make (an upper bound for adaptive strategies)."""
    total = 0
    print(f"{cfg.path}: {len(cfg.cells)} cells, {len(data.prompts)} prompts; data: {data.label}")
    for spec in cfg.judges.values():
        print(f"  judge {spec.describe()}")
    for k, cell in enumerate(cfg.cells, start=1):
        items = run.items_for(data, cell.n)
        count = cell.tournament(cfg.seed).plan(items)
        total += count
        print(f"  cell {k:>3}  {cell.label():<48} judgments {count:>8}")
    print(f"total judgments: {total} (before cache hits); outputs would go to {cfg.out}/")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, check the config and the data, run (or plan) every cell, write the outputs."""
    ap = Parser(prog="python -m experiments.scaling", description=__doc__)
    ap.add_argument("config", help="a TOML config, e.g. experiments/configs/sim.toml")
    out_help = (f"output folder (default: the config's `out`, else {config_mod.DEFAULT_OUT}/NAME in the current "
                "directory; the tracked results: --out experiments/results/NAME)")  # fmt: skip
    ap.add_argument("--out", default=None, metavar="DIR", help=out_help)
    ap.add_argument("--dry-run", action="store_true", help="check the config, print cells and judgment counts")
    ap.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    return guarded("tourney", lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    """Load the config and the data, then plan (``--dry-run``) or run every cell and write the outputs."""
    cfg = config_mod.load(args.config, args.out)
    try:
        out_dir(str(cfg.out))  # before any cell runs (the config's `out` too)
    except argparse.ArgumentTypeError as err:
        raise InputError(f"output folder {err}") from None
    for warning in cfg.warnings:
        print(f"tourney: warning: {warning}", file=sys.stderr)
    data = run.load_data(cfg)
    if args.dry_run:
        dry_run(cfg, data)
        return
    command = "python -m experiments.scaling " + shlex.join([args.config] + (["--out", args.out] if args.out else []))
    with Progress(len(cfg.cells), quiet=args.quiet) as progress:
        rows = run.run(cfg, data, progress.report)
    written = report.write(report.outputs(rows, str(cfg.out), command))
    if not args.quiet:
        for path in written:
            print(f"wrote {path}", file=sys.stderr)


class Progress:
    """A rich progress bar over cells on a terminal; one plain line per finished cell otherwise."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        """Count ``total`` cells; ``quiet`` shows nothing."""
        self.total, self.quiet, self.bar, self.task = total, quiet, None, None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True))  # fmt: skip
            self.task = self.bar.add_task("cells", total=total)

    def __enter__(self) -> Progress:
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.stop()

    def report(self, k: int, cell: config_mod.Cell, row: dict[str, Any] | None) -> None:
        """Called before (row None) and after each cell."""
        if self.quiet:
            return
        if self.bar and self.task is not None:  # both set on a terminal
            if row is None:
                self.bar.update(self.task, description=cell.label())
            else:
                self.bar.advance(self.task)
            return
        if row is not None:
            run.log(
                f"cell {k + 1}/{self.total} {cell.label()}: best-of-N {row['best_of_n']:.3f}, "
                f"{row['judgments']} judgments ({row['cached']} cached), {row['cell_s']:.1f} s"
            )


if __name__ == "__main__":
    script_env()
    script_exit(main())
