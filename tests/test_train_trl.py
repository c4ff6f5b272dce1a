"""The CPU training loop: TRL's GRPOTrainer on the prepared parquet with tourney's reward (forced verdict prefix)."""

from __future__ import annotations

import json

import pytest
from train_helpers import run_cli, write_pairs

from tourney.judges import FAMILIES
from tourney.train.trl_loop import cut_at_verdict, forced_prefix, make_reward, step_line


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
    assert res.stderr.count("TRL currently supports vLLM") <= 1 and "Triton is installed" not in res.stderr


def test_one_progress_line_per_step():
    line = step_line(3, 20, {"loss": 0.0123456, "reward": -0.25, "step_time": 9.9}, 181.04)
    assert line == "tourney: step 3/20: reward mean -0.250, loss 0.01235, 181.0 s"
    assert step_line(1, 2, {}, 0.5) == "tourney: step 1/2: reward mean ?, loss ?, 0.5 s"


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
