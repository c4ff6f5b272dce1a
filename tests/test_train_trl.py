"""The CPU training loops: TRL's GRPOTrainer on the prepared parquet with tourney's reward (forced verdict prefix),
and TRL's SFTTrainer on the sft-prepare parquet (``sft --engine trl``)."""

from __future__ import annotations

import json
import os

import pytest
from train_helpers import run_cli, write_pairs

from tourney.judges import FAMILIES
from tourney.train.sft_trl import prompt_completion, sft_line
from tourney.train.trl_loop import cut_at_verdict, eta, forced_prefix, make_reward, step_line

GOLD = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day.\n#### 18"
SLIP = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $17 every day.\n#### 17"


def test_forced_prefix_reward_reads_the_verdict_the_policy_completes():
    reward = make_reward(None, forced=True, format_penalty=None)
    completions = ["A]]</answer>\n\nAnd more text", "B]]</answer>", "C]]</answer>", "A]]", "A]]</answer>"]
    cols = {
        "ground_truth": ["A", "A", "A", "A", "B"],
        "data_source": ["tourney/rm-r1"] * 5,
        "family": ["rm-r1"] * 5,
    }
    # cut after the verdict (a stop string): right, wrong, no verdict, unfinished verdict, wrong
    assert reward([""] * 5, completions, **cols) == [1.0, -1.0, -1.0, -1.0, -1.0]
    rrm = FAMILIES["rrm"]
    assert forced_prefix(rrm).startswith("\n</think>") and forced_prefix(rrm).endswith("\\boxed{Assistant ")
    cols = {"ground_truth": ["B", "A"], "data_source": ["tourney/rrm"] * 2, "family": ["rrm"] * 2}
    assert reward(["", ""], ["2} done", "1}"], **cols) == [1.0, 1.0]
    shaped = make_reward(None, forced=True, format_penalty=-0.25)
    assert shaped([""], ["??"], ground_truth=["A"], data_source=["tourney/rm-r1"], family=["rm-r1"]) == [-0.25]
    assert cut_at_verdict("<answer>[[B]]</answer><answer>[[A]]</answer>", FAMILIES["rm-r1"]) == "<answer>[[B]]</answer>"


@pytest.mark.slow
def test_trl_engine_runs_grpo_steps_on_the_cpu(tmp_path, smollm2_dir):
    data = tmp_path / "data"
    assert run_cli("train", "prepare", str(write_pairs(tmp_path / "p.jsonl", n=4)), "-o", str(data)).returncode == 0
    out = tmp_path / "ckpt"
    res = run_cli(
        "train", "rlvr", "--engine", "trl", "--model", "smollm2", "--data", str(data), "--output", str(out),
        "--max-steps", "2", "--batch-size", "2", "--num-generations", "2", "--max-completion-tokens", "3",
        env={"HF_HUB_OFFLINE": "1", "TOURNEY_CACHE_DIR": str(smollm2_dir.parents[1])},  # `smollm2` = the fixture's copy
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(res.stdout.splitlines()) == 1  # the report only: transformers' per-step log dicts stay off stdout
    report = json.loads(res.stdout)
    assert report["engine"] == "trl" and report["steps"] == 2 and len(report["reward_per_step"]) == 2
    assert all(-1.0 <= r <= 1.0 for r in report["reward_per_step"])
    assert (out / "config.json").is_file() and (out / "tokenizer_config.json").is_file()
    assert any(out.glob("*.safetensors"))
    steps = [line for line in res.stderr.splitlines() if line.startswith("tourney: step ")]
    assert [s.split(":")[1] for s in steps] == [" step 1/2", " step 2/2"] and "reward mean " in steps[0], res.stderr
    assert ", eta " in steps[0] and ", eta " not in steps[1]  # the time left, until the last step
    assert res.stderr.count("TRL currently supports vLLM") <= 1 and "Triton is installed" not in res.stderr
    assert not any(bar in res.stderr for bar in ("Loading weights", "Tokeniz", "Writing model shards", "it/s]"))


def test_one_progress_line_per_step():
    line = step_line(3, 20, {"loss": 0.0123456, "reward": -0.25, "step_time": 9.9}, 181.04)
    assert line == "tourney: step 3/20: reward mean -0.250, loss 0.01235, 181.0 s"
    assert step_line(1, 2, {}, 0.5) == "tourney: step 1/2: reward mean ?, loss ?, 0.5 s"


def test_eta_from_the_mean_step_capped_by_the_time_left():
    assert eta(2, 10, 30.0) == ", eta 2m00s"  # 15 s a step, 8 steps left
    assert eta(1, 3, 61.4) == ", eta 2m03s"
    assert eta(2, 10, 30.0, seconds_left=45.4) == ", eta 0m45s"  # a --max-minutes cap ends it sooner
    assert eta(2, 10, 30.0, seconds_left=-3.0) == ", eta 0m00s"
    assert eta(10, 10, 30.0) == "" and eta(0, 10, 0.0) == ""


def test_trl_engine_bad_options(tmp_path):
    data = tmp_path / "data"
    run_cli("train", "prepare", str(write_pairs(tmp_path / "p.jsonl", n=4)), "-o", str(data))
    base = ["train", "rlvr", "--engine", "trl", "--model", "smollm2", "--output", str(tmp_path / "o")]
    res = run_cli(*base, "--data", str(data), "--batch-size", "5", "--num-generations", "2")
    assert res.returncode == 2 and "--batch-size" in res.stderr
    res = run_cli(*base, "--data", str(tmp_path / "none"))
    assert res.returncode == 2 and "train.parquet: missing" in res.stderr
    res = run_cli(*base, "--data", str(data), "--family", "nope")
    assert res.returncode == 2 and "unknown judge family" in res.stderr


def _teacher_data(tmp_path, n=3):
    """sft-prepare --teacher on n prompts (two orders each): the traces sft trains on."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Janet, day {k}?", "chosen": GOLD, "rejected": SLIP}) + "\n"
                             for k in range(n)))  # fmt: skip
    data = tmp_path / "sft"
    res = run_cli("train", "sft-prepare", str(pairs), "--teacher", "arithmetic", "-o", str(data), "--val-fraction", "0")
    assert res.returncode == 0, res.stderr
    return data


@pytest.mark.slow
def test_sft_trl_engine_trains_a_few_steps_and_saves_a_loadable_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tourney.testing import build_tiny_model

    # Its own tiny model: the session's one carries a sampling-only generation config that saving refuses (issue 17).
    tiny_model_dir = build_tiny_model(tmp_path / "tiny")
    data = _teacher_data(tmp_path)
    out = tmp_path / "ckpt"
    res = run_cli("train", "sft", "--engine", "trl", "--model", str(tiny_model_dir), "--data", str(data), "--output",
                  str(out), "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(res.stdout.splitlines()) == 1  # the JSON report only
    report = json.loads(res.stdout)
    assert report["engine"] == "trl" and report["steps"] == 2 and len(report["loss_per_step"]) == 2
    assert all(0 <= a <= 1 for a in report["token_accuracy_per_step"]) and len(report["token_accuracy_per_step"]) == 2
    assert report["rows"] == 6 and report["skipped_too_long"] == 0
    steps = [line for line in res.stderr.splitlines() if line.startswith("tourney: step ")]
    assert [s.split(":")[1] for s in steps] == [" step 1/2", " step 2/2"] and "token accuracy " in steps[0], res.stderr
    assert ", eta " in steps[0] and ", eta " not in steps[1]
    assert res.stderr.count("TRL currently supports vLLM") <= 1 and "Triton is installed" not in res.stderr
    assert not any(bar in res.stderr for bar in ("Loading weights", "Tokeniz", "Writing model shards", "it/s]"))
    model = AutoModelForCausalLM.from_pretrained(out)  # what `rlvr --engine trl --model DIR` and `rank --judge` load
    assert AutoTokenizer.from_pretrained(out).chat_template and model.config.num_hidden_layers == 2
    mask = os.umask(0)
    os.umask(mask)
    assert {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()}["model.safetensors"] == 0o666 & ~mask
    res = run_cli("train", "sft", "--engine", "trl", "--model", str(tiny_model_dir), "--data", str(data), "--output",
                  str(tmp_path / "o2"), "--max-length", "16")  # fmt: skip
    assert res.returncode == 2 and "longer than --max-length 16 tokens" in res.stderr


@pytest.mark.slow
def test_sft_trl_learns_only_the_trace(tmp_path, tiny_model_dir):
    """completion_only_loss: the labels of the judge prompt's tokens are masked (-100), the trace's are not."""
    import pyarrow.parquet as pq
    from datasets import Dataset
    from transformers import AutoTokenizer

    from tourney.train.trl_loop import import_trl

    SFTConfig, SFTTrainer = import_trl(("SFTConfig", "SFTTrainer"))
    data = _teacher_data(tmp_path, n=1)
    rows = prompt_completion(pq.read_table(data / "train.parquet").to_pylist(), str(data))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = SFTConfig(output_dir=str(tmp_path / "o"), use_cpu=True, completion_only_loss=True, report_to=[])
    trainer = SFTTrainer(model=str(tiny_model_dir), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)  # fmt: skip
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = [t for t in batch["labels"][0].tolist() if t != -100]
    trace = rows[0]["completion"][0]["content"]
    assert trace in tokenizer.decode(labels) and "Chatbot A's Response" not in tokenizer.decode(labels)


def test_sft_progress_line_and_rows():
    line = sft_line(3, 20, {"loss": 1.23456, "mean_token_accuracy": 0.61234}, 95.04)
    assert line == "tourney: step 3/20: loss 1.235, token accuracy 0.612, 95.0 s"
    assert sft_line(1, 2, {}, 0.5) == "tourney: step 1/2: loss ?, token accuracy ?, 0.5 s"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "t"}]
    assert prompt_completion([{"messages": msgs}], "d") == [{"prompt": msgs[:1], "completion": msgs[1:]}]
    with pytest.raises(Exception, match="no final assistant turn"):
        prompt_completion([{"messages": msgs[:1]}], "d")


def test_sft_trl_engine_bad_options(tmp_path):
    data = _teacher_data(tmp_path, n=1)
    base = ["train", "sft", "--engine", "trl", "--model", "smollm2", "--output", str(tmp_path / "o")]
    res = run_cli(*base, "--data", str(data), "--dry-run")
    assert res.returncode == 2 and "--dry-run prints verl's command" in res.stderr
    res = run_cli(*base, "--data", str(tmp_path / "none"))
    assert res.returncode == 2 and "train.parquet: missing: run `tourney train sft-prepare` first" in res.stderr
