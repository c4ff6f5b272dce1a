"""``tourney pairs``: judge every prompt's responses and write DPO preference pairs."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import click

from tourney.cli import CONSOLE, options
from tourney.cli.judging import Prepared, finish, judge, prepare, report
from tourney.console import plural
from tourney.errors import InputError
from tourney.io import Item


@click.command("pairs")
@options.apply_to(options.judging(options.OUTPUT(help="Output file ('-' = stdout): JSONL, or Parquet (see --format).")))
@click.option("--pairing", default="best-worst", show_default=True,
              help="best-worst, top-bottom:K (i-th best vs i-th worst, i < K) or all:MARGIN (every pair whose score "
                   "gap >= MARGIN).")  # fmt: skip
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=None,
              help="Keep pairs whose direct votes favour chosen by at least this share (see README).")  # fmt: skip
@click.option("--rationale", is_flag=True, help="Add the judge's reasoning on each pair (its direct judgments).")
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "parquet"]), default="auto", show_default=True,
              help="auto: parquet when -o ends in .parquet (any case), else JSONL.")  # fmt: skip
def pairs_cmd(**opts: Any) -> None:
    """Judge every prompt's responses and write DPO preference pairs (prompt, chosen, rejected + metadata)."""
    from tourney.cli.checks import check_dry_run, given_options
    from tourney.pairs import check_policy, parse_policy
    from tourney.tables import parquet_name

    check_dry_run(opts, given_options(), ("min_confidence", "rationale", "fmt"))  # they shape only the output
    policy = parse_policy(opts["pairing"])
    parquet = opts["fmt"] == "parquet" or (opts["fmt"] == "auto" and parquet_name(opts["output"]))
    if parquet and opts["output"] == "-" and not opts["dry_run"]:
        raise InputError("Parquet needs a file (-o PATH.parquet), not stdout", field="-o")
    streams = [("--judgments", opts["judgments_path"])] if opts["judgments_path"] else []
    if not parquet:
        streams.append(("-o", opts["output"]))
    settings = {"pairing": opts["pairing"], "min_confidence": opts["min_confidence"], "rationale": opts["rationale"]}
    # Parquet is written whole at the end, so a run that writes it cannot resume.
    prep = prepare(opts, "pairs", "round-robin", lambda rows, src: check_policy(rows, policy, src), streams,
                   settings, resumable=not parquet)  # fmt: skip
    writer = _Writer(opts, prep, policy, parquet)
    ran = judge(opts, prep, writer.each, items=writer.items(), keep_records=True)  # pairs read the direct votes
    if ran is None:
        return
    stream, the_judge = ran
    stats = writer.finish(stream, the_judge)
    report(stream, prep)
    unmet = f" ({stats.dropped_no_direct_vote} never met)" if stats.dropped_no_direct_vote else ""
    CONSOLE.say(
        f"tourney: {plural(stats.pairs, 'pair')} from {plural(stats.prompts, 'prompt')}; skipped "
        f"{stats.skipped_too_few} with < 2 distinct responses, {stats.skipped_unseparated} unseparated, "
        f"{stats.skipped_no_pair} with no pair for {opts['pairing']}; "
        f"{plural(stats.dropped_low_confidence, 'pair')} dropped by --min-confidence{unmet}"
    )


class _Writer:
    """Pairs a prompt as soon as its result comes, and writes its pairs (JSONL) and judgments in input order."""

    def __init__(self, opts: dict[str, Any], prep: Prepared, policy: Any, parquet: bool) -> None:
        """Nothing is written before ``each``."""
        from tourney.pairs import PairStats

        self.opts, self.prep, self.policy, self.parquet = opts, prep, policy, parquet
        self.stats = PairStats()
        self.held: dict[Any, tuple[Item, list[int]]] = {}  # by prompt id: the original row, kept responses' indices
        self.rows: list[dict[str, Any]] = []  # Parquet only: written whole at the end

    def items(self) -> Iterator[Item]:
        """The input after the resume point, repeated responses merged (each judged once)."""
        from tourney.pairs import distinct

        for item in itertools.islice(self.prep.source.items(), self.prep.resume.prompts, None):
            slim, index = distinct(item)
            if self.prep.sink is not None:  # a dry run pairs nothing
                self.held[item.id] = (item, index)
            yield slim

    def each(self, res: Any) -> None:
        """Pair one prompt and hand its lines to the sink."""
        from tourney.io import dumps
        from tourney.pairs import make_pairs, rows_of

        orig, index = self.held.pop(res.item.id)
        pairs = make_pairs([res], [index], [orig], self.policy, min_confidence=self.opts["min_confidence"],
                           rationale=self.opts["rationale"], stats=self.stats)  # fmt: skip
        rows = rows_of(pairs, self.opts["rationale"], conversational=self.prep.source.chat)
        lines = []
        if self.opts["judgments_path"]:  # candidate indices back into the input's responses
            lines.append([dataclasses.replace(r, a=index[r.a], b=index[r.b]).line() for r in res.records])
        if self.parquet:
            self.rows += rows
        else:
            lines.append([dumps(row) for row in rows])
        assert self.prep.sink is not None
        self.prep.sink.put(lines, res.item.id)

    def finish(self, stream: Any, the_judge: Any) -> Any:
        """The summary and the Parquet file (if any), then the streamed outputs put in place."""
        from tourney.pairs import parquet_rows

        extra = {"pairing": self.opts["pairing"], "pairs": self.stats.as_dict()}
        whole = [(self.opts["output"], parquet_rows(self.rows))] if self.parquet else []
        finish(self.opts, self.prep, stream, the_judge, whole=whole, **extra)
        return self.stats
