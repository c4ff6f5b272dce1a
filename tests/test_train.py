"""tourney train in the main environment: prepare, reward, launcher commands, sft-prepare, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from train_helpers import dry_run_overrides, judgments_fixture, run_cli, write_pairs

from tourney.errors import InputError
from tourney.judges import FAMILIES, parse_verdict, render
from tourney.train import launcher
from tourney.train.pairs import read_pairs
from tourney.train.prepare import prepare
from tourney.train.reward import compute_score

ROOT = Path(__file__).resolve().parents[1]


def test_prepare_writes_verl_schema_balanced_and_reproducible(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=21, identical=2)
    res = run_cli("train", "prepare", str(pairs), "-o", str(tmp_path / "d1"), "--family", "rm-r1", "--seed", "3")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["pairs"] == 23 and report["skipped_identical"] == 2
    assert report["train"]["rows"] + report["val"]["rows"] == 21
    for split in ("train", "val"):  # balanced within each split: the halves differ by at most one
        assert abs(report[split]["chosen_in_A"] - report[split]["chosen_in_B"]) <= 1
    table = pq.read_table(tmp_path / "d1" / "train.parquet")
    assert table.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    rows = table.to_pylist()
    source = {json.loads(line)["id"]: json.loads(line) for line in pairs.read_text().splitlines()}
    for row in rows:
        pair = source[row["extra_info"]["id"]]
        gt = row["reward_model"]["ground_truth"]
        a, b = (pair["chosen"], pair["rejected"]) if gt == "A" else (pair["rejected"], pair["chosen"])
        assert row["prompt"] == render("rm-r1", pair["prompt"], a, b)  # the family's own template, one source
        assert row["data_source"] == "tourney/rm-r1" and row["reward_model"]["style"] == "rule"
        assert row["extra_info"]["split"] == "train" and row["extra_info"]["family"] == "rm-r1"
    indices = [r["extra_info"]["index"] for r in rows + pq.read_table(tmp_path / "d1" / "val.parquet").to_pylist()]
    assert sorted(indices) == list(range(21))
    run_cli("train", "prepare", str(pairs), "-o", str(tmp_path / "d2"), "--family", "rm-r1", "--seed", "3")
    for name in ("train.parquet", "val.parquet"):
        assert (tmp_path / "d1" / name).read_bytes() == (tmp_path / "d2" / name).read_bytes()
    run_cli("train", "prepare", str(pairs), "-o", str(tmp_path / "d3"), "--seed", "4")
    assert (tmp_path / "d1" / "train.parquet").read_bytes() != (tmp_path / "d3" / "train.parquet").read_bytes()


def test_prepare_keeps_the_prompt_id_that_tourney_pairs_writes(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"q{k}", "chosen": f"right {k}", "rejected": f"wrong {k}", "prompt_id": f"gsm8k-test-{k}"}
            for k in range(6)]  # fmt: skip
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run_cli("train", "prepare", str(pairs), "-o", str(tmp_path / "d"), "--family", "rm-r1")
    assert res.returncode == 0, res.stderr
    got = [
        r["extra_info"]
        for split in ("train", "val")
        for r in pq.read_table(tmp_path / "d" / f"{split}.parquet").to_pylist()
    ]
    assert sorted(e["id"] for e in got) == sorted(r["prompt_id"] for r in rows)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0] | {"prompt_id": [1]}) + "\n")
    res = run_cli("train", "prepare", str(bad), "-o", str(tmp_path / "e"))
    assert res.returncode == 2 and "bad.jsonl:1" in res.stderr and "prompt_id" in res.stderr, res.stderr


def test_prepare_reads_conversational_and_parquet_input(tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": "Capital of France?"}],
            "chosen": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}],
            "rejected": [{"role": "assistant", "content": "Lyon"}],
        },
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    ]
    src = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([{**r, "chosen": json.dumps(r["chosen"])} for r in rows[1:]]), src)
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = read_pairs(str(jsonl))
    assert (pairs[0].chosen, pairs[0].rejected, pairs[0].id) == ("Paris", "Lyon", "1")
    pq.write_table(pa.Table.from_pylist([rows[1], {"prompt": "3+3?", "chosen": "6", "rejected": "7"}]), src)
    from_parquet = read_pairs(str(src))
    assert [(p.prompt, p.chosen, p.line) for p in from_parquet] == [("2+2?", "4", 1), ("3+3?", "6", 2)]
    report = prepare(pairs + from_parquet, "rrm", str(tmp_path / "out"), str(jsonl), val_fraction=0.0)
    assert report["train"]["rows"] == 4 and report["val"]["rows"] == 0
    assert pq.read_table(tmp_path / "out" / "val.parquet").num_rows == 0  # empty split keeps its schema


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"prompt": "p", "chosen": "a"}', "rejected"),
        ('{"chosen": "a", "rejected": "b"}', "prompt"),
        ('{"prompt": "p", "chosen": 3, "rejected": "b"}', "chosen"),
        ('{"prompt": "p", "chosen": "a", "rejected": [{"role": "user", "content": "x"}]}', "rejected"),
    ],
)
def test_prepare_bad_rows_fail_with_file_line_field(tmp_path, line, field):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt": "ok", "chosen": "a", "rejected": "b"}\n' + line + "\n")
    res = run_cli("train", "prepare", str(src), "-o", str(tmp_path / "out"))
    assert res.returncode == 2
    assert res.stderr.startswith(f"tourney: error: {src}:2: field '{field}':"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "train.parquet").exists()


def test_prepare_unknown_family_and_all_identical(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=2)
    res = run_cli("train", "prepare", str(pairs), "-o", str(tmp_path / "o"), "--family", "nope")
    assert res.returncode == 2 and "unknown judge family 'nope'" in res.stderr
    (tmp_path / "file").write_text("")
    res = run_cli("train", "prepare", str(pairs), "-o", str(tmp_path / "file"))
    want = f"tourney: error: {tmp_path / 'file'}: is not a folder: -o names the folder for train.parquet and "
    assert res.returncode == 2 and res.stderr == want + "val.parquet\n"
    same = write_pairs(tmp_path / "same.jsonl", n=0, identical=3)
    res = run_cli("train", "prepare", str(same), "-o", str(tmp_path / "o"))
    assert res.returncode == 2 and "no usable pairs (all 3 have chosen == rejected)" in res.stderr
    (tmp_path / "empty.jsonl").write_text("")
    res = run_cli("train", "prepare", str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "o"))
    assert res.returncode == 2 and res.stderr == f"tourney: error: {tmp_path / 'empty.jsonl'}: no pairs in the file\n"
    res = run_cli("train", "rlvr", "--model", "Qwen/Qwen2.5-7B", "--data", "no-such-dir", "--output", "ck", "--dry-run")
    assert res.stderr == "tourney: error: no-such-dir/train.parquet: missing: run `tourney train prepare` first\n"


def test_prepare_custom_toml_family_reaches_the_reward(tmp_path):
    toml = Path(__file__).resolve().parents[1] / "tourney" / "judges" / "rm_r1_instruct.toml"
    report = prepare(read_pairs(str(write_pairs(tmp_path / "p.jsonl", n=4))), str(toml), str(tmp_path / "o"), "p")
    row = pq.read_table(tmp_path / "o" / "train.parquet").to_pylist()[0]
    assert row["extra_info"]["family"] == str(toml) and report["family"] == "rm-r1-instruct"
    right = "<answer>[[" + row["reward_model"]["ground_truth"] + "]]</answer>"
    assert (
        compute_score(row["data_source"], right, row["reward_model"]["ground_truth"], row["extra_info"])["score"] == 1
    )


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reward_values_follow_parse_verdict(family):
    fam = FAMILIES[family]
    think = "</think>\n" if fam.thinks else ""
    a, b = (think + "Reasoning... " + v for v in fam.verdicts)
    src = f"tourney/{family}"
    assert compute_score(src, a, "A") == {"score": 1.0, "acc": 1.0, "valid": 1.0}
    assert compute_score(src, b, "A") == {"score": -1.0, "acc": 0.0, "valid": 1.0}
    assert compute_score(src, b, "model_b")["score"] == 1.0  # RM-R1's own labels
    assert compute_score(src, "I cannot decide.", "B") == {"score": -1.0, "acc": 0.0, "valid": 0.0}
    assert compute_score(src, "I cannot decide.", "B", format_penalty=-0.5)["score"] == -0.5
    # A verdict quoted mid-way is not the final verdict: the same rule the engine applies at inference.
    quoted = a + " but on reflection nothing."
    assert parse_verdict(family, quoted) is None and compute_score(src, quoted, "A")["score"] == -1.0
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score(src, a, "C")


def test_reward_imports_without_torch_vllm_or_verl():
    code = (
        "import sys; from tourney.train.reward import compute_score; "
        "heavy = [m for m in ('torch', 'vllm', 'transformers', 'verl', 'trl', 'pyarrow') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture
def data_dir(tmp_path) -> Path:
    out = tmp_path / "data"
    prepare(read_pairs(str(write_pairs(tmp_path / "p.jsonl", n=10))), "rm-r1", str(out), "p")
    return out


@pytest.mark.parametrize(
    ("model", "size", "lr", "nodes", "micro"),
    [
        ("Qwen/Qwen2.5-7B-Instruct", None, 1e-6, 1, 4),
        ("gaotang/RM-R1-DeepSeek-Distilled-Qwen-14B", None, 1e-6, 2, 1),
        ("/models/RM-R1-Qwen2.5-Instruct-32B", None, 5e-7, 4, 1),
        ("/models/my-judge", "32b", 8e-7, 4, 1),
    ],
)
def test_rlvr_dry_run_uses_rm_r1_presets(data_dir, tmp_path, model, size, lr, nodes, micro):
    args = ["train", "rlvr", "--model", model, "--data", str(data_dir), "--output", str(tmp_path / "ck"), "--dry-run"]
    res = run_cli(*args, *(["--size", size] if size else []), "--", "trainer.save_freq=5")
    assert res.returncode == 0, res.stderr
    ov = dry_run_overrides(res.stdout, "verl.trainer.main_ppo")
    assert f"actor_rollout_ref.actor.optim.lr={lr:g}" in ov
    assert f"trainer.nnodes={nodes}" in ov and f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}" in ov
    for must in ("algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=7", "actor_rollout_ref.rollout.name=vllm",
                 "actor_rollout_ref.actor.kl_loss_coef=0.001", f"actor_rollout_ref.model.path={model}",
                 f"reward.custom_reward_function.path={launcher.reward_path()}"):  # fmt: skip
        assert must in ov
    assert ov[-1] == "trainer.save_freq=5"  # user overrides come last and win
    if nodes > 1:
        assert "ray start --head" in res.stdout


def test_rlvr_bad_input_and_missing_environment(data_dir, tmp_path, monkeypatch):
    base = ["train", "rlvr", "--data", str(data_dir), "--output", str(tmp_path / "ck")]
    res = run_cli(*base, "--model", "/models/judge-3B", "--dry-run")
    assert res.returncode == 2 and "no RM-R1 preset for model size 3b" in res.stderr and "--lr" in res.stderr
    assert run_cli(*base, "--model", "/models/judge-3B", "--lr", "2e-6", "--dry-run").returncode == 0
    res = run_cli(*base, "--model", "Qwen/Qwen2.5-7B", "--data", str(tmp_path / "none"), "--dry-run")
    assert res.returncode == 2 and "train.parquet: missing" in res.stderr
    # An interpreter asked for that is not there is a wrong value (exit 2), dry run or not: never replaced.
    nope = str(tmp_path / "nope")
    for extra, env, name in (["--python", nope], None, "option --python"), ([], {"TOURNEY_TRAIN_PYTHON": nope},
                                                                            "$TOURNEY_TRAIN_PYTHON"):  # fmt: skip
        for dry in ([], ["--dry-run"]):
            res = run_cli(*base, "--model", "Qwen/Qwen2.5-7B", *extra, *dry, env=env)
            assert res.returncode == 2 and not res.stdout, res.stderr
            assert res.stderr == f"tourney: error: {name}: {nope}: no executable file there\n"
    # No training environment: one line saying how to create it, exit 1 (the environment, not the input).
    monkeypatch.setattr(launcher, "repo_root", lambda: tmp_path)  # a checkout without .venv-train
    monkeypatch.delenv("TOURNEY_TRAIN_PYTHON", raising=False)
    res = run_cli(*base, "--model", "Qwen/Qwen2.5-7B")
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert "bash scripts/setup_train.sh" in res.stderr
    if not launcher.has_gpu():  # with verl present but no GPU: one line, exit 1
        res = run_cli(*base, "--model", "Qwen/Qwen2.5-7B", env={"TOURNEY_TRAIN_PYTHON": sys.executable})
        assert res.returncode == 1 and "needs a GPU" in res.stderr and res.stderr.count("\n") == 1


def test_model_size_parsing():
    assert launcher.model_size("Reward-Reasoning/RRM-32B") == "32b"
    assert launcher.model_size("gaotang/RM-R1-Qwen2.5-Instruct-32B") == "32b-instruct"
    assert launcher.model_size("Qwen/Qwen2.5-1.5B-Instruct") == "1.5b"
    assert launcher.model_size("/ckpt/v2/model") is None
    with pytest.raises(InputError, match="set --size"):
        launcher.resolve_preset("/ckpt/v2/model", None, None)


def test_sft_prepare_keeps_correct_judge_written_verdicts(tmp_path):
    items, judgments = judgments_fixture(tmp_path)
    out = tmp_path / "sft"
    res = run_cli("train", "sft-prepare", str(judgments), "--items", str(items), "-o", str(out), "--val-fraction", "0")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["kept"] == 2 and report["skipped_wrong"] == 1 and report["skipped_forced_or_invalid"] == 1
    assert report["skipped_unparsed"] == 1 and report["skipped_no_label"] == 1
    rows = pq.read_table(out / "train.parquet").to_pylist()
    assert rows[0]["messages"] == render("rm-r1", "2+2?", "4", "5") + [
        {"role": "assistant", "content": "4 is right. <answer>[[A]]</answer>"}
    ]
    assert rows[1]["messages"][0]["content"] == render("rm-r1", "2+2?", "5", "4")[0]["content"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        judgments.read_text() + '{"id": "p1", "a": 0, "vote": 0, "verdict": "A", "forced": false, "raw": "x"}\n'
    )
    res = run_cli("train", "sft-prepare", str(bad), "--items", str(items), "-o", str(tmp_path / "o2"))
    assert res.returncode == 2 and f"{bad}:7: field 'b': missing" in res.stderr


def test_sft_dry_run_prints_verl_sft_trainer(tmp_path):
    items, judgments = judgments_fixture(tmp_path)
    run_cli("train", "sft-prepare", str(judgments), "--items", str(items), "-o", str(tmp_path / "sft"))
    res = run_cli("train", "sft", "--model", "Qwen/Qwen2.5-7B-Instruct", "--data", str(tmp_path / "sft"),
                  "--output", str(tmp_path / "ck"), "--dry-run", "--gpus-per-node", "4")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "torch.distributed.run" in res.stdout and "--nproc_per_node=4" in res.stdout
    ov = dry_run_overrides(res.stdout, "verl.trainer.sft_trainer")
    assert "optim.lr=5e-06" in ov and "data.messages_key=messages" in ov and "trainer.n_gpus_per_node=4" in ov


def test_the_builtin_model_reaches_verl_as_its_directory(tmp_path):
    from tourney.models import builtin_spec

    items, judgments = judgments_fixture(tmp_path)
    run_cli("train", "sft-prepare", str(judgments), "--items", str(items), "-o", str(tmp_path / "sft"))
    where = builtin_spec("smollm2").path  # a dry run names the directory without converting the model
    res = run_cli("train", "sft", "--model", "smollm2", "--data", str(tmp_path / "sft"), "--output",
                  str(tmp_path / "ck"), "--dry-run")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"model.path={where}" in dry_run_overrides(res.stdout, "verl.trainer.sft_trainer")
    assert "model.path=smollm2" not in res.stdout


def test_train_stages_read_jsonl_as_rank_does(tmp_path):
    """prepare and sft-prepare accept a byte-order mark and name file and line for bad UTF-8 or JSON."""
    items, judgments = judgments_fixture(tmp_path)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + judgments.read_bytes())
    res = run_cli("train", "sft-prepare", str(bom), "--items", str(items), "-o", str(tmp_path / "s1"))
    assert res.returncode == 0, res.stderr
    pairs = write_pairs(tmp_path / "pairs.jsonl", n=2)
    for stage, src, extra in (
        ("sft-prepare", judgments, ["--items", str(items)]),
        ("prepare", pairs, []),
    ):
        tails = (
            (b"\xff\n", "invalid UTF-8 at byte 0"),
            (b"{oops\n", "malformed JSON"),
            (b"[" * 100000 + b"\n", "malformed JSON"),
        )
        for tail, msg in tails:
            bad = tmp_path / f"bad-{stage}.jsonl"
            data = src.read_bytes()
            bad.write_bytes(data + tail)
            line = data.count(b"\n") + 1
            out = tmp_path / f"o-{stage}"
            res = run_cli("train", stage, str(bad), *extra, "-o", str(out))
            assert res.returncode == 2
            assert res.stderr.startswith(f"tourney: error: {bad}:{line}:") and msg in res.stderr, res.stderr
            assert len(res.stderr.strip().splitlines()) == 1
            assert not out.exists() or not any(out.iterdir())


def test_one_split_rounds_in_rows_and_keeps_prompts_whole():
    from tourney.train.prepare import split_by_group

    rows = [(f"g{k % 7}", k) for k in range(20)]  # 7 groups: six of 3 rows, one of 2

    def group(row):
        return row[0]

    train, val = split_by_group(rows, group, 0.25, seed=1)
    assert {group(r) for r in train}.isdisjoint(group(r) for r in val) and sorted(train + val) == sorted(rows)
    assert train == [r for r in rows if r in train] and val == [r for r in rows if r in val]  # input order kept
    assert len(val) in (5, 6) and len({group(r) for r in val}) == 2  # >= round(20 * 0.25) = 5 rows, whole groups
    assert split_by_group(rows, group, 0.25, seed=1) == (train, val)
    assert {split_by_group(rows, group, 0.25, seed=s)[1][0][0] for s in range(8)} != {val[0][0]}  # the seed matters
    assert len({group(r) for r in split_by_group(rows, group, 0.01, seed=0)[1]}) == 1  # > 0 takes at least one group
    assert split_by_group(rows, group, 0.0, seed=0) == (rows, [])
    assert len({group(r) for r in split_by_group(rows, group, 0.99, seed=0)[0]}) == 1  # one group always trains
    assert split_by_group(rows[::7], group, 0.5, seed=0) == (rows[::7], [])  # a single group cannot be split


def test_sft_prepare_and_prepare_split_alike_and_write_the_umask_mode(tmp_path):
    import pyarrow.parquet as pq

    from tourney.train.prepare import split_by_group
    from tourney.train.sft import sft_prepare

    items, judgments = tmp_path / "items.jsonl", tmp_path / "judgments.jsonl"
    answers = [[{"text": str(k + 1), "quality": 1}, {"text": str(k + 2), "quality": 0}] for k in range(9)]
    items.write_text("".join(json.dumps({"id": f"p{k}", "prompt": f"{k}+1?", "responses": answers[k]}) + "\n"
                             for k in range(9)))  # fmt: skip
    recs = [{"id": f"p{k}", "a": 0, "b": 1, "vote": v, "verdict": "A", "forced": False, "raw": "<answer>[[A]]</answer>"}
            for k in range(9) for v in range(1 + k % 2)]  # fmt: skip
    judgments.write_text("".join(json.dumps(r) + "\n" for r in recs))
    mask = os.umask(0o027)
    try:
        report = sft_prepare(str(judgments), str(items), "rm-r1", str(tmp_path / "sft"), seed=5, val_fraction=0.3)
        pairs = read_pairs(str(write_pairs(tmp_path / "pairs.jsonl", n=9)))
        prepared = prepare(pairs, "rm-r1", str(tmp_path / "rl"), "pairs.jsonl", seed=5, val_fraction=0.3)
    finally:
        os.umask(mask)
    ids = [(r["id"], None) for r in recs]
    assert report["val"] == len(split_by_group(ids, lambda r: r[0], 0.3, seed=5)[1]) == 5  # >= round(13 * 0.3) = 4
    assert prepared["val"]["rows"] == 3  # round(9 * 0.3) = 3 rows of one-pair prompts
    assert pq.read_table(tmp_path / "sft" / "val.parquet").num_rows == report["val"]
    for path in (tmp_path / "sft" / "train.parquet", tmp_path / "rl" / "val.parquet"):
        assert path.stat().st_mode & 0o777 == 0o640  # the umask's mode, like every JSONL output


def test_pairs_rank_and_sample_rows_share_one_validator():
    from tourney.io import parse_line
    from tourney.sample import parse_prompt_line
    from tourney.train.pairs import parse_pair

    cases = [
        ({"prompt": 5}, "field 'prompt': expected a string or a list of chat messages"),
        ({"prompt": []}, "field 'prompt': empty message list"),
        ({"prompt": [{"role": "user"}]}, "field 'prompt[0].content': expected a string"),
        ({"prompt": ["hi"]}, "field 'prompt[0]': expected an object with role and content"),
        ({"prompt": "q", "id": True}, "field 'id': expected a string or an integer"),
    ]
    for fields, message in cases:
        pair = {"chosen": "a", "rejected": "b", **fields}
        errors = set()
        for parse, row in ((parse_line, {"responses": ["a"], **fields}), (parse_prompt_line, fields)):
            with pytest.raises(InputError) as err:
                parse(json.dumps(row), "f.jsonl", 3)
            errors.add(str(err.value))
        with pytest.raises(InputError) as err:
            parse_pair(pair, "f.jsonl", 3)
        assert errors | {str(err.value)} == {f"f.jsonl:3: {message}"}
    with pytest.raises(InputError, match="f.jsonl:3: expected a JSON object, got list"):
        parse_pair([1], "f.jsonl", 3)


@pytest.mark.parametrize("command", [["prepare", "pairs.jsonl"], ["sft-prepare", "j.jsonl", "--items", "i.jsonl"]])
def test_the_output_folder_is_required(command):
    # The shared -o declaration carries a default for the judge commands; a required -o must not inherit it.
    p = run_cli("train", *command)
    assert p.returncode == 2 and p.stderr.strip() == "tourney: error: Missing option '-o' / '--output'."


def test_every_train_option_has_help_true_to_its_command():
    import re

    from tourney.train.cli import train

    for name, command in train.commands.items():
        own = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            assert param.help, f"train {name} {param.opts[-1]} has no help"
            # An option's help may point only at options this command has (sft once advised rlvr's --engine trl).
            assert set(re.findall(r"--[a-z][a-z-]*", param.help)) <= own, (name, param.opts, param.help)
    assert "`tourney train sft-prepare`" in _option("sft", "--data").help
    assert "`tourney train prepare`" in _option("rlvr", "--data").help
    assert "5e-6" in _option("sft", "--lr").help


def _option(command, name):
    return next(p for p in _train_command(command).params if name in p.opts)


def test_sft_and_rlvr_point_at_their_own_stage_and_engines(tmp_path, data_dir):
    items, judgments = judgments_fixture(tmp_path)
    sft_dir = tmp_path / "sft"
    run_cli("train", "sft-prepare", str(judgments), "--items", str(items), "-o", str(sft_dir))
    sft = ["train", "sft", "--model", "Qwen/Qwen2.5-7B-Instruct", "--output", str(tmp_path / "ck"), "--dry-run"]
    rlvr = ["train", "rlvr", "--model", "Qwen/Qwen2.5-7B-Instruct", "--output", str(tmp_path / "ck"), "--dry-run"]
    res = run_cli(*sft, "--data", str(tmp_path / "none"))
    assert res.returncode == 2 and "missing: run `tourney train sft-prepare` first" in res.stderr
    res = run_cli(*sft, "--data", str(data_dir))  # prepare's RLHF rows are not SFT data
    assert res.returncode == 2 and "no 'messages' column: not written by `tourney train sft-prepare`" in res.stderr
    res = run_cli(*rlvr, "--data", str(sft_dir))
    assert res.returncode == 2 and "no 'reward_model' column: not written by `tourney train prepare`" in res.stderr
    if launcher.has_gpu():
        return
    # No GPU: each command's one line offers only what that command has (both have a CPU engine now).
    env = {"TOURNEY_TRAIN_PYTHON": sys.executable}
    res = run_cli(*sft[:-1], "--data", str(sft_dir), env=env)
    assert res.returncode == 1 and "needs a GPU" in res.stderr and "--dry-run" in res.stderr
    assert "--engine trl to train on the CPU" in res.stderr, res.stderr
    assert any("--engine" in p.opts for p in _train_command("sft").params)
    res = run_cli(*rlvr[:-1], "--data", str(data_dir), env=env)
    assert res.returncode == 1 and "--engine trl to train on the CPU" in res.stderr


def _train_command(name):
    from tourney.train.cli import train

    return train.commands[name]


def test_dry_runs_warn_about_too_few_rows_and_an_empty_validation_split(tmp_path):
    data = tmp_path / "data"
    assert run_cli("train", "prepare", str(write_pairs(tmp_path / "p.jsonl", n=1)), "-o", str(data)).returncode == 0
    base = ["train", "rlvr", "--model", "Qwen/Qwen2.5-7B", "--data", str(data), "--output", str(tmp_path / "ck")]
    res = run_cli(*base, "--dry-run")
    assert res.returncode == 0 and "verl.trainer.main_ppo" in res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("tourney: warning: ") for line in lines), res.stderr
    assert "1 training row but data.train_batch_size=1024:" in lines[0]  # one row: no "1 training rows"
    assert "ppo_mini_batch_size" in lines[0]
    assert "validation split is empty (0 rows in val.parquet): verl's GRPO trainer stops" in lines[1]
    res = run_cli(*base, "--dry-run", "--", "data.train_batch_size=1", "actor_rollout_ref.actor.ppo_mini_batch_size=1")
    assert res.returncode == 0 and "train_batch_size" not in res.stderr and "validation split is empty" in res.stderr

    items, judgments = judgments_fixture(tmp_path)  # two kept traces, both of one prompt: nothing to validate on
    run_cli("train", "sft-prepare", str(judgments), "--items", str(items), "-o", str(tmp_path / "sft"))
    res = run_cli("train", "sft", "--model", "Qwen/Qwen2.5-7B", "--data", str(tmp_path / "sft"), "--output",
                  str(tmp_path / "ck"), "--dry-run")  # fmt: skip
    assert res.returncode == 0 and "verl.trainer.sft_trainer" in res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("tourney: warning: ") for line in lines), res.stderr
    assert "2 training rows but data.train_batch_size=128:" in lines[0] and "ppo_mini" not in lines[0]
    assert "verl's SFT trainer will not validate; run `tourney train sft-prepare`" in lines[1]


def test_enough_rows_give_no_data_warning(data_dir, tmp_path):
    res = run_cli("train", "rlvr", "--model", "Qwen/Qwen2.5-7B", "--data", str(data_dir), "--output",
                  str(tmp_path / "ck"), "--dry-run", "--", "+data.train_batch_size=9")  # fmt: skip
    assert res.returncode == 0 and res.stderr == "", res.stderr  # 9 training rows, 1 validation row
    assert launcher.override_value(["data.train_batch_size=1024", "++data.train_batch_size=9"],
                                   "data.train_batch_size") == "9"  # fmt: skip


def test_sft_prepare_drops_traces_that_write_more_than_one_verdict(tmp_path):
    items = tmp_path / "items.jsonl"
    answers = [{"text": "4", "quality": 1}, {"text": "5", "quality": 0}]
    items.write_text(json.dumps({"id": "p1", "prompt": "2+2?", "responses": answers}) + "\n")
    traces = [
        "4 is right. <answer>[[A]]</answer>",  # kept
        "Is it [[A]] or [[B]]? 4 is right. <answer>[[A]]</answer>",  # the other verdict too
        "Tempted by <answer>[[B]]</answer>, but 4 is right. <answer>[[A]]</answer>",
        "[[A]] for sure. <answer>[[A]]</answer>",  # its own verdict twice
    ]
    recs = [{"id": "p1", "a": 0, "b": 1, "vote": k, "verdict": "A", "forced": False, "raw": raw}
            for k, raw in enumerate(traces)]  # fmt: skip
    judgments = tmp_path / "judgments.jsonl"
    judgments.write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = run_cli("train", "sft-prepare", str(judgments), "--items", str(items), "-o", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["kept"] == 1 and report["skipped_several_verdicts"] == 3 and report["train"] == 1
    assert [r["messages"][-1]["content"] for r in pq.read_table(tmp_path / "o" / "train.parquet").to_pylist()] == [
        traces[0]
    ]

    from tourney.train.sft import verdict_count

    assert verdict_count(FAMILIES["rrm"], "</think>\n\\boxed{Assistant 1}") == 1
    assert verdict_count(FAMILIES["rrm"], "\\boxed{Assistant 2}? No.</think>\n\\boxed{Assistant 1}") == 2


def test_options_the_chosen_engine_ignores_are_refused_before_anything_loads(data_dir, tmp_path):
    """verl takes its settings from the presets and Hydra overrides, TRL from its own options: an option for the other
    engine is an error, not silently dropped; an existing --output file fails before TRL loads the model."""
    base = ["train", "rlvr", "--model", "Qwen/Qwen2.5-7B", "--data", str(data_dir), "--output", str(tmp_path / "ck")]
    cases = [
        ([*base, "--dry-run", "--max-steps", "5"], "--max-steps only applies to --engine trl"),
        ([*base, "--dry-run", "--family", "rrm"], "--family only applies to --engine trl"),
        ([*base, "--engine", "trl", "--nnodes", "2"], "--nnodes only applies to --engine verl"),
        ([*base, "--engine", "trl", "--", "trainer.save_freq=5"], "Hydra overrides (trainer.save_freq=5) only apply"),
        ([*base, "--dry-run", "--format-penalty", "nan"], "expected a finite number, got nan"),
        (["train", "sft", "--model", "Qwen/Qwen2.5-7B", "--data", str(data_dir), "--output", str(tmp_path / "ck"),
          "--dry-run", "--seed", "3"], "--seed only applies to --engine trl"),
    ]  # fmt: skip
    for args, message in cases:
        res = run_cli(*args)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
    (tmp_path / "file").write_text("")
    res = run_cli(*base[:-1], str(tmp_path / "file"), "--engine", "trl")
    assert res.returncode == 2 and "file exists and is not a folder" in res.stderr and len(res.stderr.splitlines()) == 1
    assert run_cli(*base, "--dry-run").returncode == 0


def test_prepare_refuses_to_write_over_its_input_or_to_stdout(tmp_path):
    pairs = write_pairs(tmp_path / "p.jsonl", n=10)
    out = tmp_path / "out"
    assert run_cli("train", "prepare", str(pairs), "-o", str(out)).returncode == 0
    before = (out / "train.parquet").read_bytes()
    res = run_cli("train", "prepare", str(out / "train.parquet"), "-o", str(out))
    assert (
        res.returncode == 2
        and res.stderr
        == f"tourney: error: -o and INPUT name the same file ({out / 'train.parquet'}); write to another folder\n"
    )
    assert (out / "train.parquet").read_bytes() == before
    res = run_cli("train", "prepare", str(pairs), "-o", "-")
    assert res.returncode == 2 and "not stdout" in res.stderr and not os.path.exists("-")
