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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tourney.errors import InputError
from tourney.io import parquet, write_all
from tourney.judges import Family, get_family
from tourney.train.pairs import Pair

ABILITY = "pairwise-judgment"
T = TypeVar("T")


def family_ref(family: Family, given: str) -> str:
    """How the reward finds the family again in verl's process: a built-in name, or the TOML file's absolute path."""
    return family.name if given == family.name else str(Path(given).resolve())


def split_by_group(
    rows: Sequence[T], group: Callable[[T], str], val_fraction: float, seed: int
) -> tuple[list[T], list[T]]:
    """The seeded train/val split of every train stage, by whole groups (prompts): no validation prompt is trained on.

    Rounding: the target is counted in rows, ``round(len(rows) * val_fraction)`` (Python's round, half to even).
    Groups, in a seeded shuffle of their sorted keys, go to validation until it holds at least that many rows; a
    positive fraction whose target rounds to 0 still takes one group, and at least one group always stays in training.
    Each split keeps the input order.
    """
    sizes: dict[str, int] = {}
    for row in rows:
        key = group(row)
        sizes[key] = sizes.get(key, 0) + 1
    keys = sorted(sizes)
    random.Random(seed).shuffle(keys)
    want = round(len(rows) * val_fraction)
    if val_fraction > 0 and want == 0:
        want = 1
    val_keys: set[str] = set()
    taken = 0
    for key in keys[:-1]:  # the last group always trains
        if taken >= want:
            break
        val_keys.add(key)
        taken += sizes[key]
    split = [group(row) in val_keys for row in rows]
    return [r for r, v in zip(rows, split) if not v], [r for r, v in zip(rows, split) if v]


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
    train, val = split_by_group(kept, lambda p: json.dumps(p.prompt, ensure_ascii=False), val_fraction, seed)
    train_rows = build_rows(train, family, ref, "train", seed, path)
    val_rows = build_rows(val, family, ref, "val", seed + 1, path, start=len(train_rows))
    if not train_rows:
        why = "no pairs in the file" if not pairs else f"no usable pairs (all {len(pairs)} have chosen == rejected)"
        raise InputError(why, file=path)
    make_dir(out_dir)
    schema = parquet_schema()
    write_all([(os.path.join(out_dir, "train.parquet"), parquet(train_rows, schema)),
               (os.path.join(out_dir, "val.parquet"), parquet(val_rows, schema))])  # fmt: skip

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
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError("is not a folder: -o names the folder for train.parquet and val.parquet", file=out_dir)
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
