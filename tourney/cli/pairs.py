"""``tourney pairs``: judge every prompt's responses and write DPO preference pairs."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from tourney.cli import CONSOLE, options
from tourney.cli.judging import judge, prepare, report, summary
from tourney.errors import InputError


@click.command("pairs")
@options.apply_to(options.JUDGE)
@click.option("--pairing", default="best-worst", show_default=True,
              help="best-worst, top-bottom:K (i-th best vs i-th worst, i < K) or all:MARGIN (every pair whose score "
                   "gap >= MARGIN).")  # fmt: skip
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=None,
              help="Keep pairs whose direct votes favour chosen by at least this share (see README).")  # fmt: skip
@click.option("--rationale", is_flag=True, help="Add the judge's reasoning on each pair (its direct judgments).")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "parquet"]), default="auto", show_default=True,
              help="auto: parquet when -o ends in .parquet, else JSONL.")  # fmt: skip
def pairs_cmd(**opts: Any) -> None:
    """Judge every prompt's responses and write DPO preference pairs (prompt, chosen, rejected + metadata)."""
    from tourney.pairs import check_policy, distinct, parse_policy

    policy = parse_policy(opts["pairing"])
    parquet = opts["fmt"] == "parquet" or (opts["fmt"] == "auto" and opts["output"].endswith(".parquet"))
    if parquet and opts["output"] == "-" and not opts["dry_run"]:
        raise InputError("Parquet needs a file (-o PATH.parquet), not stdout", field="-o")
    prep = prepare(opts, "round-robin", lambda rows, src: check_policy(rows, policy, src))
    slim, index = (list(x) for x in zip(*(distinct(item) for item in prep.items))) if prep.items else ([], [])
    ran = judge(opts, prep, items=slim, keep_records=True)  # pairs read the direct votes
    if ran is None:
        return
    run, the_judge = ran
    stats = _write(opts, run, index, prep, policy, parquet, the_judge)
    report(run)
    CONSOLE.say(
        f"tourney: {stats.pairs} pairs from {stats.prompts} prompts; skipped {stats.skipped_too_few} with < 2 "
        f"distinct responses, {stats.skipped_unseparated} unseparated, {stats.skipped_no_pair} with no pair "
        f"for {opts['pairing']}; {stats.dropped_low_confidence} pairs below --min-confidence"
    )


def _write(opts: dict[str, Any], run: Any, index: list, prep: Any, policy: Any, parquet: bool, the_judge: Any) -> Any:
    """Pair, then write the pairs (JSONL or Parquet), the judgments and the summary, all or nothing."""
    from tourney.io import dumps, write_all
    from tourney.pairs import PairStats, make_pairs, parquet_rows, rows_of

    stats = PairStats()
    pairs = make_pairs(run.results, index, prep.items, policy, min_confidence=opts["min_confidence"],
                       rationale=opts["rationale"], stats=stats)  # fmt: skip
    rows = rows_of(pairs, opts["rationale"])
    files = []
    if opts["judgments_path"]:  # candidate indices back into the input's responses
        recs = [dataclasses.replace(r, a=idx[r.a], b=idx[r.b]) for res, idx in zip(run.results, index)
                for r in res.records]  # fmt: skip
        files.append((opts["judgments_path"], [r.line() for r in recs]))
    if opts["summary_path"]:
        text = summary(run, prep, the_judge, pairing=opts["pairing"], pairs=stats.as_dict())
        files.append((opts["summary_path"], [text]))
    write_all([(opts["output"], parquet_rows(rows) if parquet else [dumps(r) for r in rows]), *files])
    return stats
