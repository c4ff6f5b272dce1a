"""Preference pairs -> verl's RLHF parquet (``train.parquet``, ``val.parquet``) for RLVR of a pairwise judge.

One row per pair in verl's ``RLHFDataset`` schema (verl docs, ``preparation/prepare_data``): ``data_source``,
``prompt`` (the chat messages the judge family renders, so training and inference share one template),
``ability``, ``reward_model = {style: "rule", ground_truth: "A"|"B"}`` and ``extra_info`` (split, index, source id,
line, family). As in RM-R1's data mix, the better answer sits in A for half of each split and in B for the other half;
here the halves are drawn with a seeded shuffle rather than alternated, so position is not tied to input order.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tourney.errors import InputError
from tourney.judges import Family, get_family
from tourney.train.pairs import Pair

ABILITY = "pairwise-judgment"


def family_ref(family: Family, given: str) -> str:
    """How the reward finds the family again in verl's process: a built-in name, or the TOML file's absolute path."""
    return family.name if given == family.name else str(Path(given).resolve())


def split_pairs(pairs: Sequence[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Seeded train/val split by prompt, so no validation prompt is seen in training."""
    groups: dict[str, list[Pair]] = {}
    for p in pairs:
        groups.setdefault(json.dumps(p.prompt, ensure_ascii=False), []).append(p)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    want = round(len(pairs) * val_fraction)
    if val_fraction > 0 and want == 0 and len(keys) > 1:
        want = 1
    val_keys: set[str] = set()
    taken = 0
    for k in keys:
        if taken >= want or len(val_keys) == len(keys) - 1:  # keep at least one prompt for training
            break
        val_keys.add(k)
        taken += len(groups[k])
    train = [p for p in pairs if json.dumps(p.prompt, ensure_ascii=False) not in val_keys]
    val = [p for p in pairs if json.dumps(p.prompt, ensure_ascii=False) in val_keys]
    return train, val


def chosen_positions(n: int, seed: int) -> list[str]:
    """A seeded, balanced assignment: ceil(n/2) pairs get the better answer in A, the rest in B."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    in_a = set(order[: (n + 1) // 2])
    return ["A" if k in in_a else "B" for k in range(n)]


def build_rows(
    pairs: Sequence[Pair], family: Family, ref: str, split: str, seed: int, path: str, start: int = 0
) -> list[dict[str, Any]]:
    """The verl rows of one split; ``start`` offsets ``extra_info.index`` so indices are unique across splits."""
    rows = []
    for k, (pair, pos) in enumerate(zip(pairs, chosen_positions(len(pairs), seed))):
        a, b = (pair.chosen, pair.rejected) if pos == "A" else (pair.rejected, pair.chosen)
        try:
            messages = family.render(pair.prompt, a, b)
        except InputError as err:
            raise InputError(err.message, path, pair.line, "prompt") from None
        rows.append(
            {
                "data_source": f"tourney/{family.name}",
                "prompt": messages,
                "ability": ABILITY,
                "reward_model": {"style": "rule", "ground_truth": pos},
                "extra_info": {"split": split, "index": start + k, "id": pair.id, "line": pair.line, "family": ref},
            }
        )
    return rows


def prepare(
    pairs: Sequence[Pair], family_name: str, out_dir: str, path: str, seed: int = 0, val_fraction: float = 0.1
) -> dict[str, Any]:
    """Write ``train.parquet`` and ``val.parquet`` into ``out_dir``; return the report (counts and A/B balance)."""
    family = get_family(family_name)
    ref = family_ref(family, family_name)
    kept = [p for p in pairs if p.chosen != p.rejected]
    train, val = split_pairs(kept, val_fraction, seed)
    train_rows = build_rows(train, family, ref, "train", seed, path)
    val_rows = build_rows(val, family, ref, "val", seed + 1, path, start=len(train_rows))
    if not train_rows:
        raise InputError("no usable pairs (every pair was skipped)", file=path)
    make_dir(out_dir)
    write_parquets(
        [(os.path.join(out_dir, "train.parquet"), train_rows), (os.path.join(out_dir, "val.parquet"), val_rows)]
    )

    def balance(rows: list[dict[str, Any]]) -> dict[str, int]:
        a = sum(r["reward_model"]["ground_truth"] == "A" for r in rows)
        return {"rows": len(rows), "chosen_in_A": a, "chosen_in_B": len(rows) - a}

    return {
        "pairs": len(pairs),
        "skipped_identical": len(pairs) - len(kept),
        "family": family.name,
        "train": balance(train_rows),
        "val": balance(val_rows),
        "out": out_dir,
    }


def make_dir(out_dir: str) -> None:
    """Create the output directory, or fail with one line (a file in the way, no permission)."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create output directory: {err.strerror}", file=out_dir) from None


def parquet_schema() -> Any:
    """The explicit arrow schema (so an empty split still has every column verl reads)."""
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    extra = pa.struct(
        [
            ("split", pa.string()),
            ("index", pa.int64()),
            ("id", pa.string()),
            ("line", pa.int64()),
            ("family", pa.string()),
        ]
    )
    return pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(message)),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
            ("extra_info", extra),
        ]
    )


def write_parquets(outputs: Sequence[tuple[str, list[dict[str, Any]]]], schema: Any = None) -> None:
    """Write every table to a temp file first, then rename all: a failed run leaves no partial output."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = schema if schema is not None else parquet_schema()
    staged: list[tuple[str, str]] = []
    try:
        for path, rows in outputs:
            fd, tmp = tempfile.mkstemp(prefix=".tourney-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
            os.close(fd)
            staged.append((tmp, path))
            pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException as err:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if isinstance(err, OSError):
            raise InputError(f"cannot write: {err.strerror}", file=err.filename) from None
        raise
