"""``tourney rank`` and ``tourney best-of-n``: rank every prompt's responses, or pick the best one."""

from __future__ import annotations

from typing import Any

import click

from tourney.cli import options
from tourney.cli.judging import judge, prepare, report, summary


@click.command("rank")
@options.apply_to(options.JUDGE)
def rank_cmd(**opts: Any) -> None:
    """Rank every prompt's responses; adds 'ranking' (indices, best first) and 'scores' (input order)."""
    _run("rank", opts)


@click.command("best-of-n")
@options.apply_to(options.JUDGE)
def best_of_n_cmd(**opts: Any) -> None:
    """Pick the best response per prompt; adds 'best_index' and 'best' (its text)."""
    _run("best-of-n", opts)


def _run(command: str, opts: dict[str, Any]) -> None:
    """Check everything, then judge, rank and write; every output file is written whole or not at all."""
    from tourney.io import dumps, write_all

    prep = prepare(opts, "knockout" if command == "best-of-n" else "round-robin")
    ran = judge(opts, prep)
    if ran is None:
        return
    run, the_judge = ran
    rows = []
    for res in run.results:
        row = dict(res.item.row)
        if command == "rank":
            row["ranking"], row["scores"] = res.ranking, res.scores
        else:
            row["best_index"] = res.ranking[0]
            row["best"] = res.item.texts[res.ranking[0]]
        rows.append(dumps(row))
    outputs = [(opts["output"], rows)]
    if opts["judgments_path"]:
        outputs.append((opts["judgments_path"], [r.line() for res in run.results for r in res.records]))
    if opts["summary_path"]:
        outputs.append((opts["summary_path"], [summary(run, prep, the_judge)]))
    write_all(outputs)
    report(run)
