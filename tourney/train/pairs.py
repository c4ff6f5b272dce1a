"""Read preference pairs (prompt / chosen / rejected) from JSONL or parquet, validating every row up front.

Accepted rows: tourney's ``pairs`` output (``{"id", "prompt", "chosen", "rejected", "score_chosen", ...}``) or any
prompt/chosen/rejected data set. ``prompt`` is a string or chat messages; ``chosen``/``rejected`` are strings or, as in
TRL's conversational format, a list of messages whose last assistant turn is the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tourney.errors import InputError
from tourney.io import jsonl_records
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
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq  # only for parquet input; pyarrow ships with both environments

        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read parquet: {str(err).splitlines()[0]}", file=path) from None
        yield from enumerate(rows, start=1)
        return
    for _, line, value in jsonl_records(path):
        yield line, value


def parse_pair(row: Any, path: str, line: int) -> Pair:
    """Validate one row into a Pair."""
    if not isinstance(row, dict):
        raise InputError(f"expected an object, got {type(row).__name__}", path, line)
    for key in ("prompt", "chosen", "rejected"):
        if row.get(key) is None:
            raise InputError("missing", path, line, key)
    prompt = row["prompt"]
    if isinstance(prompt, list):
        if not prompt:
            raise InputError("empty message list", path, line, "prompt")
        for k, msg in enumerate(prompt):
            if not isinstance(msg, dict) or not all(isinstance(msg.get(f), str) for f in ("role", "content")):
                raise InputError("expected {role, content} strings", path, line, f"prompt[{k}]")
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
    elif not isinstance(prompt, str):
        raise InputError("expected a string or a list of chat messages", path, line, "prompt")
    ident = row.get("id", line)
    if not isinstance(ident, (str, int)) or isinstance(ident, bool):
        raise InputError("expected a string or an integer", path, line, "id")
    return Pair(
        id=str(ident),
        line=line,
        prompt=prompt,
        chosen=answer_text(row["chosen"], path, line, "chosen"),
        rejected=answer_text(row["rejected"], path, line, "rejected"),
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
