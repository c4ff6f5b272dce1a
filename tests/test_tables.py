"""Parquet files and saved datasets as input: read like the JSONL they stand for, with the same one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clirun import tourney

from tourney.sample import read_prompts

REPO = Path(__file__).parents[1]
SIM = ["--judge", "simulated", "--no-cache"]


@pytest.fixture
def rows() -> list[dict]:
    """The example's two rows whose prompts are strings (one Arrow column holds one type)."""
    return [json.loads(line) for line in (REPO / "examples" / "best_of_n.jsonl").read_text().splitlines()[:2]]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("command", ["rank", "best-of-n", "pairs"])
def test_parquet_and_a_saved_dataset_read_like_jsonl(tmp_path, rows, command):
    import datasets

    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "x.parquet"))
    ds.save_to_disk(str(tmp_path / "saved"))
    outs = []
    for name in ("x.jsonl", "x.parquet", "saved"):
        if name == "x.jsonl":
            write_jsonl(tmp_path / name, rows)
        p = tourney(command, tmp_path / name, *SIM, "-o", "-")
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout)
    assert outs[0] == outs[1] == outs[2] and outs[0]


def test_a_bad_row_is_named_by_its_row_number_and_field(tmp_path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows[1]["responses"] = []
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    p = tourney("rank", tmp_path / "bad.parquet", *SIM, "-o", tmp_path / "o.jsonl")
    assert p.returncode == 2 and not (tmp_path / "o.jsonl").exists()
    assert (
        p.stderr
        == f"tourney: error: {tmp_path / 'bad.parquet'}:2: field 'responses': empty list: need at least one response\n"
    )


def test_a_value_json_cannot_hold_names_its_column(tmp_path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows).append_column("blob", pa.array([b"x", b"y"], pa.binary()))
    pq.write_table(table, tmp_path / "b.parquet")
    p = tourney("rank", tmp_path / "b.parquet", *SIM, "-o", "-")
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith(f"tourney: error: {tmp_path / 'b.parquet'}:1: field 'blob': holds a value JSON cannot")


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: (d / "junk.parquet").write_text("junk"), "junk.parquet: cannot read it as a Parquet file: "),
        (lambda d: None, "junk.parquet: cannot read input: No such file or directory"),
        (lambda d: (d / "junk.parquet").mkdir(), "junk.parquet: is a folder but not a saved dataset"),
    ],
)
def test_unreadable_tables_are_one_line(tmp_path, make, says):
    make(tmp_path)
    p = tourney("rank", tmp_path / "junk.parquet", *SIM, "-o", "-")
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    assert says in p.stderr, p.stderr


def test_a_dataset_dict_asks_for_a_split(tmp_path, rows):
    import datasets

    ds = datasets.Dataset.from_list(rows)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    p = tourney("rank", tmp_path / "dd", *SIM, "-o", "-")
    assert p.returncode == 2
    assert "dd: is a DatasetDict: name one of its splits (test, train), e.g. " in p.stderr
    assert tourney("rank", tmp_path / "dd" / "train", *SIM, "-o", "-").returncode == 0


def test_sample_reads_prompts_from_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": "a", "prompt": "Hi?"}, {"id": "b", "prompt": "Bye?"}]),
                   tmp_path / "p.parquet")  # fmt: skip
    got = read_prompts(str(tmp_path / "p.parquet"))
    assert [(r.id, r.line, r.prompt) for r in got] == [("a", 1, "Hi?"), ("b", 2, "Bye?")]
