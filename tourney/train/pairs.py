"""Read preference pairs (prompt / chosen / rejected) from JSONL or parquet, validating every row up front.

Accepted rows: tourney's ``pairs`` output (``{"prompt", "chosen", "rejected", "prompt_id", "score_chosen", ...}``) or
any prompt/chosen/rejected data set. ``prompt`` is a string or chat messages; ``chosen``/``rejected`` are strings or,
as in TRL's conversational format, a list of messages whose last assistant turn is the answer. A pair's id is the
row's ``id`` (else its line or row number); ids need not be unique, as a prompt may give several pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tourney.errors import InputError
from tourney.io import Row, jsonl_records
from tourney.tables import parquet_name
from tourney.types import Prompt


@dataclass(frozen=True)
class Pair:
    """One preference pair: ``chosen`` is the known-better answer to ``prompt``."""

    id: str
    line: int
    prompt: Prompt
    chosen: str
    rejected: str


def read_pairs(path: str) -> list[Pair]:
    """Read and validate every pair of a JSONL or ``.parquet`` file; raise InputError on the first bad row."""
    return [parse_pair(row, path, line) for line, row in _rows(path)]


def _rows(path: str) -> Iterator[tuple[int, Any]]:
    """Yield (line or row number, decoded row) from JSONL or parquet."""
    if parquet_name(path):
        import pyarrow.parquet as pq  # only for parquet input; pyarrow ships with both environments

        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read parquet: {str(err).splitlines()[0]}", file=path) from None
        yield from enumerate(rows, start=1)
        return
    for _, line, value in jsonl_records(path):
        yield line, value


def parse_pair(value: Any, path: str, line: int) -> Pair:
    """Validate one row into a Pair: ``tourney.io.Row``'s prompt and id checks, plus chosen and rejected answers. The
    pair's id is its ``prompt_id`` (as ``tourney pairs`` writes), else its ``id``, else its line number."""
    row = Row.of(value, path, line)
    for key in ("prompt", "chosen", "rejected"):
        if row.data.get(key) is None:  # a Parquet column holds null where a JSONL row would leave the key out
            raise row.bad("missing", key)
    prompt = row.prompt()
    if isinstance(prompt, list):
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
    # What `tourney pairs` writes: the pair's prompt; else the row's own id.
    ident = row.id("prompt_id") if row.data.get("prompt_id") is not None else row.id()
    return Pair(
        id=str(ident),
        line=line,
        prompt=prompt,
        chosen=answer_text(row.data["chosen"], path, line, "chosen"),
        rejected=answer_text(row.data["rejected"], path, line, "rejected"),
    )


def answer_text(value: Any, path: str, line: int, field: str) -> str:
    """An answer as text: a string, or the content of the last assistant turn of a message list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for msg in reversed(value):
            if isinstance(msg, dict) and msg.get("role") == "assistant":
                if not isinstance(msg.get("content"), str):
                    raise InputError("assistant content must be a string", path, line, field)
                return msg["content"]
        raise InputError("a message list with no assistant turn", path, line, field)
    raise InputError("expected a string or a list of chat messages", path, line, field)
