"""Parquet files and saved Hugging Face datasets as input: their rows read as the JSONL lines they stand for.

A table input (``x.parquet``, or a folder ``datasets.Dataset.save_to_disk`` wrote) is read a record batch at a time
with pyarrow and each row turned into one JSON line, so every reader (its checks, its one-line errors, its second
pass) works on it as on JSONL; row k (from 1) takes the place of line k in errors. ``datasets`` itself is not needed:
a saved dataset is Arrow IPC stream files listed in its ``state.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from tourney.errors import InputError

BATCH_ROWS = 1024  # rows converted at a time: a table of any size costs the memory of one batch


def parquet_name(path: str) -> bool:
    """Whether ``path`` is named as a Parquet file (``.parquet``, in any case)."""
    return path.lower().endswith(".parquet")


def is_table(path: str) -> bool:
    """Whether ``path`` names a Parquet file or a folder (a saved dataset) rather than JSONL."""
    return path != "-" and (parquet_name(path) or os.path.isdir(path))


def table_lines(path: str, name: str | None = None) -> Iterator[tuple[str, int, str]]:
    """(file name, row number from 1, the row as one JSON line) for each row of a table input."""
    name = name or path
    for k, row in enumerate(table_rows(path, name), start=1):
        yield name, k, json_line(row, name, k)


def table_rows(path: str, name: str) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file or a saved dataset folder, as plain Python objects, in order."""
    import pyarrow as pa

    try:
        for batch in _batches(path, name):
            yield from batch.to_pylist()
    except OSError as err:
        if err.errno:  # no such file, permission denied: as a JSONL input says it
            raise InputError(f"cannot read input: {os.strerror(err.errno)}", name) from None
        raise InputError(f"cannot read it as a {_kind(path)}: {str(err).splitlines()[0]}", name) from None
    except pa.ArrowException as err:
        raise InputError(f"cannot read it as a {_kind(path)}: {str(err).splitlines()[0]}", name) from None


def _kind(path: str) -> str:
    """What a table input was taken for, for its errors."""
    return "Parquet file" if parquet_name(path) else "saved dataset"


def _batches(path: str, name: str) -> Iterator[Any]:
    """The record batches of the table at ``path``."""
    import pyarrow.parquet as pq

    if not os.path.isdir(path):
        yield from pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
        return
    for file in dataset_files(path, name):
        yield from _ipc_batches(file)


def _ipc_batches(file: str) -> Iterator[Any]:
    """The batches of one Arrow file a saved dataset holds (the stream format; the file format is also read)."""
    import pyarrow as pa

    with pa.memory_map(file) as source:
        try:
            reader: Any = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
            return
        yield from reader


def dataset_files(folder: str, name: str) -> list[str]:
    """The Arrow files of a ``save_to_disk`` folder, in order (from its ``state.json``)."""
    state = os.path.join(folder, "state.json")
    if not os.path.exists(state):
        if os.path.exists(os.path.join(folder, "dataset_dict.json")):
            splits = sorted(e for e in os.listdir(folder) if os.path.isdir(os.path.join(folder, e)))
            example = os.path.join(folder, splits[0]) if splits else os.path.join(folder, "train")
            raise InputError(f"is a DatasetDict: name one of its splits ({', '.join(splits)}), e.g. {example}", name)
        raise InputError("is a folder but not a saved dataset (datasets' save_to_disk writes state.json there)", name)
    try:
        with open(state, encoding="utf-8") as f:
            files = [entry["filename"] for entry in json.load(f)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"state.json does not list the dataset's files ({err})", name) from None
    return [os.path.join(folder, file) for file in files]


def json_line(row: dict[str, Any], name: str, k: int) -> str:
    """One table row as a JSON line; a value JSON cannot hold (bytes, a date, NaN) is an error naming its column."""
    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        for key, value in row.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                raise InputError(f"holds a value JSON cannot hold ({type(value).__name__}: bytes, a date, NaN ...)",
                                 name, k, str(key)) from None  # fmt: skip
        raise
