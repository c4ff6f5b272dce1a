"""``tourney rank`` and ``tourney best-of-n``: rank every prompt's responses, or pick the best one."""

from __future__ import annotations

from typing import Any

import click

from tourney.cli import options
from tourney.cli.judging import finish, judge, prepare, report
from tourney.engine import Result


@click.command("rank")
@options.apply_to([*options.JUDGE, click.option(
    "--intervals", is_flag=True, help="Add 'intervals': a 95% bootstrap interval on each response's score "
    "(round robin with --rating bt: resampled matches, seeded).")])  # fmt: skip
def rank_cmd(**opts: Any) -> None:
    """Rank every prompt's responses; adds 'ranking' (indices, best first) and 'scores' (input order)."""
    _run("rank", opts)


@click.command("best-of-n")
@options.apply_to(options.JUDGE)
def best_of_n_cmd(**opts: Any) -> None:
    """Pick the best response per prompt; adds 'best_index' and 'best' (its text)."""
    _run("best-of-n", opts)


def _run(command: str, opts: dict[str, Any]) -> None:
    """Check everything, then judge and rank, writing each prompt's row as soon as it and every earlier one are done
    (to ``-o``'s ``.partial`` file, renamed at the end; a killed run continues where it stopped)."""
    from tourney.cli.checks import jsonl_output
    from tourney.io import dumps

    jsonl_output(opts, command)
    streams = [("--judgments", opts["judgments_path"])] if opts["judgments_path"] else []
    prep = prepare(opts, command, "knockout" if command == "best-of-n" else "round-robin",
                   streams=[*streams, ("-o", opts["output"])])  # fmt: skip
    sink = prep.sink

    def each(res: Result) -> None:
        row = dict(res.item.row)
        if command == "rank":
            row["ranking"], row["scores"] = res.ranking, res.scores
            if res.intervals is not None:
                row["intervals"] = res.intervals
        else:
            row["best_index"] = res.ranking[0]
            row["best"] = res.item.texts[res.ranking[0]]
        records = [[r.line() for r in res.records]] if streams else []
        assert sink is not None
        sink.put([*records, [dumps(row)]], res.item.id)

    ran = judge(opts, prep, each)
    if ran is None:
        return
    stream, the_judge = ran
    finish(opts, prep, stream, the_judge)
    report(stream, prep)
