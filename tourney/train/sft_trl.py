"""Distillation on the CPU with TRL's SFTTrainer, on the parquet ``tourney train sft-prepare`` writes for verl.

verl's SFT trainer (``tourney train sft``, GPUs) reads each row's ``messages``: the judge family's prompt turns, then
the trace as the assistant turn, with the loss on the assistant turn only. Here each row becomes TRL's
conversational prompt-completion form (``prompt`` = every turn but the last, ``completion`` = the assistant turn),
so TRL renders the model's own chat template and, with ``completion_only_loss=True``, masks the prompt's tokens out
of the loss (labels -100): the judge learns to write the trace and verdict, not to reproduce the pair it is shown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tourney.errors import InputError
from tourney.train.trl_loop import (
    _to_stderr,
    cpu_args,
    import_trl,
    load_policy,
    read_split,
    step_callbacks,
    train_and_save,
)


def sft_line(step: int, max_steps: int, logs: dict[str, Any], seconds: float) -> str:
    """One progress line: step k/K, the step's loss and mean token accuracy (on the trace tokens), its wall time."""
    loss, accuracy = logs.get("loss"), logs.get("mean_token_accuracy")
    loss_text = f"{loss:.4g}" if isinstance(loss, (int, float)) else "?"
    accuracy_text = f"{accuracy:.3f}" if isinstance(accuracy, (int, float)) else "?"
    return f"tourney: step {step}/{max_steps}: loss {loss_text}, token accuracy {accuracy_text}, {seconds:.1f} s"


def prompt_completion(rows: list[dict[str, Any]], data_dir: str) -> list[dict[str, Any]]:
    """``messages`` rows -> TRL's conversational prompt-completion rows (the last turn must be the assistant's)."""
    out = []
    for k, row in enumerate(rows):
        messages = row.get("messages")
        if not messages or messages[-1].get("role") != "assistant":
            raise InputError("no final assistant turn: not written by `tourney train sft-prepare`",
                             file=str(Path(data_dir) / "train.parquet"), line=k + 1, field="messages")  # fmt: skip
        out.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return out


def token_count(tokenizer: Any, row: dict[str, Any]) -> int:
    """Tokens of a prompt-completion row as the chat template renders it."""
    text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def train_sft_trl(
    model: str,
    data_dir: str,
    output: str | None,
    *,
    max_steps: int = 20,
    max_seconds: float | None = None,
    learning_rate: float = 5e-5,
    batch_size: int = 4,
    max_length: int = 2048,
    seed: int = 0,
    bf16: bool | None = None,
    policy: Any = None,
    tokenizer: Any = None,
    progress: Callable[[str], None] = _to_stderr,
) -> dict[str, Any]:
    """Fine-tune on the traces with TRL on the CPU; save the model and tokenizer to ``output`` (if given) as a HF
    folder; return per-step logs, timings and row counts. Rows longer than ``max_length`` tokens are left out (TRL
    would cut their end, which is where the verdict is). ``policy``/``tokenizer`` may be passed in already loaded.
    ``bf16``: bfloat16 autocast (None: where the CPU has it natively)."""
    import torch
    from datasets import Dataset

    SFTConfig, SFTTrainer = import_trl(("SFTConfig", "SFTTrainer"))

    torch.manual_seed(seed)
    if policy is None:
        policy, tokenizer, _ = load_policy(model)
    rows = prompt_completion(read_split(data_dir, "train"), data_dir)
    kept = [r for r in rows if token_count(tokenizer, r) <= max_length]
    if not kept:
        raise InputError(f"every training row is longer than --max-length {max_length} tokens", file=data_dir)
    started = time.monotonic()
    lines = step_callbacks(
        lambda state, logs, seconds: sft_line(state.global_step, state.max_steps, logs, seconds)
        if "loss" in logs and "train_loss" not in logs  # the end-of-training summary has train_loss, no step
        else None,
        progress, started, max_seconds,
    )  # fmt: skip
    args = SFTConfig(
        output_dir=output or str(Path(data_dir) / "trl-sft-run"),
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",  # a short CPU run: no warm-up or decay to tune
        max_steps=max_steps,
        max_length=max_length,
        completion_only_loss=True,  # loss on the assistant turn only, as verl's SFT trainer computes it
        packing=False,
        data_seed=seed,
        dataset_num_proc=None,
        **cpu_args(seed, bf16),
    )
    trainer = SFTTrainer(
        model=policy,
        args=args,
        train_dataset=Dataset.from_list(kept),
        processing_class=tokenizer,
        callbacks=lines,
    )
    seconds = train_and_save(trainer, tokenizer, output, started)
    logs = [h for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
    return {"steps": trainer.state.global_step, "seconds": round(seconds, 1), "log": logs, "rows": len(rows),
            "skipped_too_long": len(rows) - len(kept), "policy": trainer.model}  # fmt: skip
