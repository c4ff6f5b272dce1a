"""Build the stock-verl commands for the two training stages of a reasoning judge: GRPO (RLVR) and SFT (distillation).

Defaults are RM-R1's published settings (``rm_r1/scripts/RLVR/*``; research digest §2.4): GRPO with 7 rollouts at
temperature 1, KL loss 0.001 (low_var_kl) and no KL in the reward, clip 0.2, no entropy bonus, one PPO epoch, a
constant learning rate with no warm-up, batch 1024 / mini-batch 128, prompts up to 4096 and responses up to 8192
tokens, vLLM rollout with tensor parallel 4, greedy validation. The learning rate, node count and micro-batch depend
on the model size. The distillation stage follows RM-R1's OpenRLHF SFT (lr 5e-6, batch 128, one epoch, 12288 tokens)
on verl's own SFT trainer (config ``sft_trainer_engine.yaml``).

Overrides are verl 0.9.1 keys (the custom reward moved under ``reward.custom_reward_function`` in that version); the
tests compose verl's own Hydra config with exactly these lists.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tourney.errors import InputError

ENV_DIR = ".venv-train"
SETUP_HINT = "bash scripts/setup_train.sh"


@dataclass(frozen=True)
class Preset:
    """RM-R1's per-size settings: learning rate, nodes of 8 GPUs, micro-batch per GPU."""

    lr: float
    nnodes: int
    micro_batch: int


# RM-R1's scripts. 14B: the local script's 1e-6 (its slurm script uses 7e-7 for the instruct model).
PRESETS = {
    "7b": Preset(1e-6, 1, 4),
    "14b": Preset(1e-6, 2, 1),
    "32b": Preset(8e-7, 4, 1),  # DeepSeek-distilled 32B
    "32b-instruct": Preset(5e-7, 4, 1),
}


class NoTrainingEnv(Exception):
    """The training environment (verl) or the hardware it needs is missing; ``str`` is the one line shown."""


def model_size(model: str, size: str | None = None) -> str | None:
    """The preset key for a model: ``size`` if given (e.g. "7b"), else the "<N>B" in its name; None if unknown."""
    raw = size or ""
    if not raw:
        m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", Path(model).name if os.sep in model else model)
        if m is None:
            m = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])", model)
        raw = f"{m.group(1)}b" if m else ""
    key = raw.lower().replace(" ", "")
    if not key:
        return None
    if key == "32b" and re.search("instruct", model, re.IGNORECASE):
        key = "32b-instruct"
    return key


def resolve_preset(model: str, size: str | None, lr: float | None) -> tuple[str | None, Preset]:
    """The size key and the preset to use; a size with no preset needs an explicit ``lr`` (InputError otherwise)."""
    key = model_size(model, size)
    preset = PRESETS.get(key or "")
    if preset is not None:
        return key, Preset(lr if lr is not None else preset.lr, preset.nnodes, preset.micro_batch)
    if lr is None:
        known = ", ".join(k for k in PRESETS)
        what = f"model size {key}" if key else f"the size of model '{model}' (no '<N>B' in its name; set --size)"
        raise InputError(f"no RM-R1 preset for {what}; presets: {known}. Pass --lr explicitly", field="--lr")
    return key, Preset(lr, 1, 1)


def reward_path() -> str:
    """Absolute path of ``tourney/train/reward.py``, which verl loads by path."""
    return str(Path(__file__).with_name("reward.py").resolve())


def repo_root() -> Path:
    """The checkout holding this package (where ``scripts/setup_train.sh`` creates ``.venv-train``)."""
    return Path(__file__).resolve().parents[2]


def train_python(explicit: str | None = None) -> str | None:
    """The verl interpreter: --python or $TOURNEY_TRAIN_PYTHON if set, else .venv-train, else this one (if verl)."""
    chosen = explicit or os.environ.get("TOURNEY_TRAIN_PYTHON")
    if chosen:
        return chosen if Path(chosen).is_file() and os.access(chosen, os.X_OK) else None
    local = repo_root() / ENV_DIR / "bin" / "python"
    if local.is_file():
        return str(local)
    return sys.executable if importlib.util.find_spec("verl") is not None else None


def require_train_python(explicit: str | None = None) -> str:
    """The interpreter with verl, or NoTrainingEnv with the one line that says how to create it."""
    python = train_python(explicit)
    if python is None:
        raise NoTrainingEnv(f"no training environment with verl: run `{SETUP_HINT}` (creates {ENV_DIR}/ with verl) "
                            "or pass --python")  # fmt: skip
    return python


def asked_python(explicit: str | None) -> str | None:
    """Why the interpreter asked for (--python, else $TOURNEY_TRAIN_PYTHON) cannot be used, or None (none was
    asked for, or it is an executable file)."""
    if explicit:
        where = f"option --python: {explicit}"
    elif os.environ.get("TOURNEY_TRAIN_PYTHON"):
        where = f"$TOURNEY_TRAIN_PYTHON: {os.environ['TOURNEY_TRAIN_PYTHON']}"
    else:
        return None
    return None if train_python(explicit) else f"{where}: no executable file there"


def has_gpu() -> bool:
    """True when ``nvidia-smi -L`` lists a GPU (verl has no CPU platform for a training step)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        return subprocess.run([exe, "-L"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


# The column that tells each stage's parquet apart (prepare: verl's RLHF rows; sft-prepare: chat messages).
STAGE_COLUMN = {"prepare": "reward_model", "sft-prepare": "messages"}


def check_data(
    data_dir: str, files: tuple[str, ...] = ("train.parquet", "val.parquet"), stage: str = "prepare"
) -> tuple[str, ...]:
    """Absolute paths of the files ``tourney train <stage>`` wrote; InputError naming the first that is missing, or
    that another stage wrote (the trainer would fail on it much later, on a GPU node)."""
    import pyarrow.parquet as pq

    for name in files:
        p = str(Path(data_dir) / name)  # as the user named the folder; verl gets the absolute paths
        if not Path(p).is_file():
            raise InputError(f"missing: run `tourney train {stage}` first", file=p)
        try:
            names = pq.read_schema(p).names
        except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError, its IO errors OSErrors
            raise InputError(f"not a parquet file: run `tourney train {stage}` to write it", file=p) from None
        if STAGE_COLUMN[stage] not in names:
            raise InputError(f"no '{STAGE_COLUMN[stage]}' column: not written by `tourney train {stage}`", file=p)
    return tuple(str((Path(data_dir) / name).resolve()) for name in files)


def split_rows(data_dir: str) -> tuple[int, int]:
    """Rows of ``train.parquet`` and ``val.parquet`` (from the files' footers; no row is read)."""
    import pyarrow.parquet as pq

    train, val = (pq.read_metadata(Path(data_dir) / f"{split}.parquet").num_rows for split in ("train", "val"))
    return train, val


def override_value(overrides: list[str], key: str) -> str | None:
    """The value the last override of ``key`` sets (Hydra's ``+key``/``++key`` too; the last one wins)."""
    found = None
    for item in overrides:
        name, sep, value = item.partition("=")
        if sep and name.lstrip("+") == key:
            found = value
    return found


def data_warnings(data_dir: str, overrides: list[str], trainer: str) -> list[str]:
    """One-line warnings about splits verl cannot use: fewer training rows than one batch, an empty validation set.

    ``trainer``: "rlvr" (verl's GRPO trainer) or "sft" (verl's SFT trainer); ``overrides``: the command's own.
    """
    from tourney.console import plural

    train, val = split_rows(data_dir)
    out = []
    batch = override_value(overrides, "data.train_batch_size")
    if batch is not None and batch.isdigit() and train < int(batch):
        # Both verl trainers drop an incomplete last batch, so fewer rows than one batch leave no step at all.
        mini = " and actor_rollout_ref.actor.ppo_mini_batch_size" if trainer == "rlvr" else ""  # verl: mini <= batch
        out.append(f"{plural(train, 'training row')} but data.train_batch_size={batch}: verl drops an incomplete "
                   f"batch and has nothing to train on; add data or lower data.train_batch_size{mini} "
                   "after --")  # fmt: skip
    if val == 0:
        # verl's GRPO trainer asserts a non-empty validation dataloader; its SFT trainer skips validation.
        then, stage = ("verl's GRPO trainer stops at start-up", "prepare") if trainer == "rlvr" else (
            "verl's SFT trainer will not validate", "sft-prepare")  # fmt: skip
        out.append(f"the validation split is empty (0 rows in val.parquet): {then}; run `tourney train {stage}` "
                   "with a larger --val-fraction or more prompts")  # fmt: skip
    return out


def rlvr_overrides(
    model: str,
    data_dir: str,
    output: str,
    preset: Preset,
    *,
    nnodes: int | None = None,
    gpus_per_node: int = 8,
    format_penalty: float | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """verl ``main_ppo`` Hydra overrides for GRPO with RM-R1's settings; ``extra`` (user overrides) go last."""
    train, val = check_data(data_dir)
    nodes = nnodes if nnodes is not None else preset.nnodes
    tp = min(4, gpus_per_node)
    micro = preset.micro_batch
    out = [
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        f"data.train_files={train}",
        f"data.val_files={val}",
        "data.train_batch_size=1024",
        "data.max_prompt_length=4096",
        "data.max_response_length=8192",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        f"actor_rollout_ref.actor.optim.lr={preset.lr:g}",
        "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.0",
        "actor_rollout_ref.actor.optim.lr_scheduler_type=constant",
        "actor_rollout_ref.actor.ppo_mini_batch_size=128",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        "actor_rollout_ref.actor.ppo_epochs=1",
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.actor.clip_ratio=0.2",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.n=7",
        "actor_rollout_ref.rollout.temperature=1.0",
        "actor_rollout_ref.rollout.top_p=1.0",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={tp}",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.5",
        "actor_rollout_ref.rollout.max_num_batched_tokens=12288",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro}",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=False",
        "actor_rollout_ref.rollout.val_kwargs.temperature=0",
        f"reward.custom_reward_function.path={reward_path()}",
        "reward.custom_reward_function.name=compute_score",
    ]
    if format_penalty is not None:
        out.append(f"+reward.custom_reward_function.reward_kwargs.format_penalty={format_penalty:g}")
    out += [
        "trainer.project_name=tourney",
        f"trainer.experiment_name={Path(output).name or 'rlvr'}",
        f"trainer.default_local_dir={Path(output).resolve()}",
        f"trainer.nnodes={nodes}",
        f"trainer.n_gpus_per_node={gpus_per_node}",
        "trainer.total_epochs=1",
        "trainer.logger=[console]",
    ]
    return out + list(extra)


def sft_overrides(
    model: str,
    data_dir: str,
    output: str,
    *,
    lr: float = 5e-6,
    nnodes: int = 1,
    gpus_per_node: int = 8,
    max_length: int = 12288,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """verl ``sft_trainer`` overrides (``sft_trainer_engine.yaml``) with RM-R1's distillation settings."""
    train, val = check_data(data_dir, stage="sft-prepare")
    return [
        f"data.train_files={train}",
        f"data.val_files={val}",
        "data.messages_key=messages",
        "data.train_batch_size=128",
        f"data.max_length={max_length}",
        "data.truncation=error",
        f"model.path={model}",
        f"optim.lr={lr:g}",
        "trainer.project_name=tourney-sft",
        f"trainer.experiment_name={Path(output).name or 'sft'}",
        f"trainer.default_local_dir={Path(output).resolve()}",
        f"trainer.nnodes={nnodes}",
        f"trainer.n_gpus_per_node={gpus_per_node}",
        "trainer.total_epochs=1",
        "trainer.logger=[console]",
    ] + list(extra)


def rlvr_command(python: str, overrides: list[str]) -> list[str]:
    """``python -m verl.trainer.main_ppo <overrides>`` (verl starts Ray itself, or joins a running cluster)."""
    return [python, "-m", "verl.trainer.main_ppo", *overrides]


def sft_command(python: str, overrides: list[str], nnodes: int, gpus_per_node: int) -> list[str]:
    """``torchrun ... -m verl.trainer.sft_trainer <overrides>`` (verl's SFT trainer is launched by torchrun)."""
    launcher = [python, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc_per_node={gpus_per_node}"]
    return [*launcher, "-m", "verl.trainer.sft_trainer", *overrides]


def format_command(cmd: list[str], nnodes: int = 1) -> str:
    """The command as a copy-pasteable shell line, one override per line; multi-node steps as comments first."""
    head = []
    if nnodes > 1 and "verl.trainer.main_ppo" in cmd:
        head = [
            f"# {nnodes} nodes: start Ray first, then run this on the head node (verl joins the running cluster)",
            "#   head:   ray start --head --port=6379",
            "#   others: ray start --address=<head-ip>:6379",
        ]
    elif nnodes > 1:
        head = [f"# {nnodes} nodes: run this on every node, adding --node_rank=<i> --master_addr=<head-ip> to torchrun"]
    return "\n".join(head + [" \\\n  ".join(shlex.quote(c) for c in cmd)])


def require_gpu(cpu_hint: str = "") -> None:
    """NoTrainingEnv unless a GPU is visible; its line ends with ``cpu_hint``, the command's own way to train on the
    CPU, if it has one."""
    if not has_gpu():
        raise NoTrainingEnv(
            "verl needs a GPU for a training step and none was found (nvidia-smi); "
            f"use --dry-run to print the command for a GPU machine{cpu_hint}"
        )


def run(cmd: list[str]) -> int:
    """Execute the command (after ``require_gpu``); its exit code."""
    return subprocess.run(cmd).returncode
