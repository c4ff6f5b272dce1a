"""RLVR of a pairwise judge on the CPU with TRL's GRPOTrainer, on the same parquet and the same reward as verl.

verl is the engine for real training (it needs GPUs for a GRPO step); this loop is the CPU stand-in that runs the
whole thing end to end here. GRPO (Shao et al., 2024, arXiv 2402.03300) samples a group of judgments per prompt and
moves the policy toward those whose reward beats the group mean.

Forced verdict prefix: a small model (SmolLM2-135M) almost never writes the family's verdict string on its own, so
every reward is -1 and every group advantage is 0. With ``forced=True`` the policy prompt ends with the family's
verdict prefix (``<answer>[[`` for RM-R1; ``</think>`` then ``\\boxed{Assistant `` for RRM), the completion is cut
right after the first full verdict string (what a stop string does at generation), and the reward is
``compute_score`` on prefix + completion: the model learns which answer to name, the reward stays RM-R1's +1/-1.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tourney.console import silenced
from tourney.judges import Family, get_family
from tourney.train.reward import cached_family, compute_score, family_of

THINK_CLOSE = "\n</think>\n\n"


def forced_prefix(family: Family) -> str:
    """What the forced policy prompt ends with: ``</think>`` for thinking families, then the verdict prefix."""
    return (THINK_CLOSE if family.thinks else "") + family.verdict_prefix


def cut_at_verdict(text: str, family: Family) -> str:
    """Cut ``text`` right after its first full verdict string, as a stop string would; unchanged if none."""
    ends = [i + len(v) for v in family.verdicts if (i := text.find(v)) >= 0]
    return text[: min(ends)] if ends else text


def read_split(data_dir: str, split: str) -> list[dict[str, Any]]:
    """The rows of ``train.parquet`` or ``val.parquet`` written by ``tourney train prepare``."""
    import pyarrow.parquet as pq

    return pq.read_table(str(Path(data_dir) / f"{split}.parquet")).to_pylist()


def policy_prompt(tokenizer: Any, messages: list[dict[str, str]], prefix: str) -> str:
    """The judge's chat prompt as text (template + generation prompt), plus the forced prefix if any."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prefix


def load_policy(model: str) -> tuple[Any, Any, str]:
    """Load a causal LM and its tokenizer in float32 on the CPU; ``smollm2`` is the built-in SmolLM2-135M."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tourney.models import resolve_model

    path = resolve_model(model).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # TRL pads generation batches; SmolLM2's own end-of-turn token serves
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return policy, tokenizer, path


def make_reward(family_override: str | None, forced: bool, format_penalty: float | None) -> Any:
    """A TRL reward function (batch of completions -> list of floats) wrapping ``compute_score``."""

    def judge_reward(prompts: list[Any], completions: list[str], **columns: Any) -> list[float]:
        scores = []
        for k, completion in enumerate(completions):
            name = family_override or family_of(columns["data_source"][k], {"family": columns["family"][k]})
            family = cached_family(name)
            text = cut_at_verdict(forced_prefix(family) + completion, family) if forced else completion
            out = compute_score(columns["data_source"][k], text, columns["ground_truth"][k], None, name, format_penalty)
            scores.append(out["score"])
        return scores

    judge_reward.__name__ = "tourney_verdict"
    return judge_reward


# TRL checks the installed vLLM's version at import, once per module that asks (five times for TRL 1.16). This loop
# generates with transformers and never uses vLLM, so the check says nothing about it.
VLLM_VERSION_WARNING = r"TRL currently supports vLLM versions"


def import_trl(names: tuple[str, str] = ("GRPOConfig", "GRPOTrainer")) -> tuple[Any, Any]:
    """TRL's config and trainer classes (GRPO's by default), imported without its vLLM-version warnings and the vLLM
    import's banner ("Triton is installed, ..."); any other warning of the import is shown once."""
    with silenced(), warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("ignore", message=VLLM_VERSION_WARNING)
        import trl

        # trl imports a trainer's module lazily, at this first attribute access: its checks warn here, not later
        classes = getattr(trl, names[0]), getattr(trl, names[1])
    quiet_library_bars()
    shown = set()
    for w in caught:
        if (w.category, str(w.message)) not in shown:
            shown.add((w.category, str(w.message)))
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return classes


def quiet_library_bars() -> None:
    """Turn off transformers', datasets' and the hub's own progress bars (loading weights, tokenizing the dataset,
    writing shards): the loops print one line per step, and a log file or pipe would get the bars' every redraw."""
    import datasets
    import huggingface_hub
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()


def step_line(step: int, max_steps: int, logs: dict[str, Any], seconds: float) -> str:
    """One progress line of the loop: step k/K, the step's mean reward and loss, and its wall time."""
    reward, loss = logs.get("reward"), logs.get("loss")
    reward_text = f"{reward:+.3f}" if isinstance(reward, (int, float)) else "?"
    loss_text = f"{loss:.4g}" if isinstance(loss, (int, float)) else "?"
    return f"tourney: step {step}/{max_steps}: reward mean {reward_text}, loss {loss_text}, {seconds:.1f} s"


def eta(done: int, total: int, elapsed: float, seconds_left: float | None = None) -> str:
    """Time left after ``done`` of ``total`` steps took ``elapsed`` seconds, as ", eta 4m05s" (the mean step so far
    times the steps left, no later than a time cap ``seconds_left`` away); "" once done."""
    if done <= 0 or done >= total:
        return ""
    left = elapsed / done * (total - done)
    if seconds_left is not None:
        left = min(left, max(seconds_left, 0.0))
    minutes, secs = divmod(round(left), 60)
    return f", eta {minutes}m{secs:02d}s"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def step_callbacks(
    line_of: Callable[[Any, dict[str, Any], float], str | None],
    progress: Callable[[str], None],
    started: float,
    max_seconds: float | None,
) -> list[Any]:
    """Trainer callbacks shared by the TRL loops: stop after ``max_seconds`` of training (checked at each step end),
    and one ``progress`` line per step, ``line_of(state, logs, step seconds)`` for each log that gives one
    (logging_steps=1: every step logs), with the time left (``eta``, from the first step on: loading is not a step)."""
    from transformers import TrainerCallback

    class Deadline(TrainerCallback):
        """Stop after ``max_seconds`` of training (checked at each step end)."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                control.should_training_stop = True
            return control

    class StepLines(TrainerCallback):
        """One ``progress`` line per step, from the step's log."""

        def __init__(self) -> None:
            self.step_started = time.monotonic()
            self.first_step: float | None = None  # when step 1 began: the ETA leaves out loading

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.step_started = time.monotonic()
            if self.first_step is None:
                self.first_step = self.step_started
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
            now = time.monotonic()
            line = line_of(state, logs, now - self.step_started) if logs else None
            if line is not None:
                cap = None if max_seconds is None else max_seconds - (now - started)
                began = self.step_started if self.first_step is None else self.first_step
                progress(line + eta(state.global_step, state.max_steps, now - began, cap))
            return control

    return [Deadline(), StepLines()]


def train_trl(
    model: str,
    data_dir: str,
    output: str | None,
    *,
    family: str | None = None,
    max_steps: int = 10,
    max_seconds: float | None = None,
    learning_rate: float = 1e-5,
    batch_size: int = 8,
    num_generations: int = 4,
    max_completion_tokens: int = 8,
    forced: bool = True,
    format_penalty: float | None = None,
    seed: int = 0,
    bf16: bool | None = None,
    policy: Any = None,
    tokenizer: Any = None,
    progress: Callable[[str], None] = _to_stderr,
) -> dict[str, Any]:
    """Run GRPO with TRL on the CPU; save the model to ``output`` (if given); return per-step logs and timings.

    ``policy``/``tokenizer`` may be passed in already loaded (the experiment evaluates the same object before/after).
    ``progress`` gets one line per step (``step_line``; default: stderr): a CPU step can take minutes. ``bf16``:
    bfloat16 autocast (None: where the CPU has it natively).
    """
    import torch
    from datasets import Dataset

    GRPOConfig, GRPOTrainer = import_trl()

    torch.manual_seed(seed)
    if policy is None:
        policy, tokenizer, _ = load_policy(model)
    rows = read_split(data_dir, "train")
    records = []
    for r in rows:
        name = family or family_of(r["data_source"], r["extra_info"])
        prefix = forced_prefix(get_family(name)) if forced else ""
        records.append(
            {
                "prompt": policy_prompt(tokenizer, r["prompt"], prefix),
                "ground_truth": r["reward_model"]["ground_truth"],
                "data_source": r["data_source"],
                "family": name,
            }
        )
    started = time.monotonic()
    lines = step_callbacks(
        lambda state, logs, seconds: step_line(state.global_step, state.max_steps, logs, seconds)
        if "reward" in logs  # the end-of-training summary log has no reward
        else None,
        progress, started, max_seconds,
    )  # fmt: skip
    args = GRPOConfig(
        output_dir=output or str(Path(data_dir) / "trl-run"),
        per_device_train_batch_size=batch_size,
        num_generations=num_generations,
        max_completion_length=max_completion_tokens,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",  # RM-R1: constant learning rate, no warm-up
        beta=0.0,  # no reference model: halves the CPU cost; RM-R1's KL (0.001) barely binds in a short run
        temperature=1.0,  # RM-R1's rollout temperature
        max_steps=max_steps,
        **cpu_args(seed, bf16),
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=[make_reward(family, forced, format_penalty)],
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        callbacks=lines,
    )
    seconds = train_and_save(trainer, tokenizer, output, started)
    logs = [h for h in trainer.state.log_history if "reward" in h]
    return {"steps": trainer.state.global_step, "seconds": round(seconds, 1), "log": logs, "policy": trainer.model}


def native_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AMX tiles or AVX-512 BF16): autocast then runs a training step
    about 1.6x faster than float32 (measured on SmolLM2-135M, 2 cores, Xeon with AMX); elsewhere it would be slower."""
    import torch

    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def cpu_args(seed: int, bf16: bool | None = None) -> dict[str, Any]:
    """The training arguments both CPU loops (GRPO, SFT) share: seeded, a log (and a step line) every step, no
    checkpoints, reports, worker processes or bars; bfloat16 autocast (float32 weights) where the CPU has it
    natively (``bf16=None``) or as asked."""
    bf16 = native_bf16() if bf16 is None else bf16
    return {"use_cpu": True, "logging_steps": 1, "report_to": [], "save_strategy": "no", "seed": seed, "bf16": bf16,
            "dataloader_num_workers": 0, "disable_tqdm": True,
            # TRL turns it on by default; on the CPU it only costs time (135M fits).
            "gradient_checkpointing": False}  # fmt: skip


def train_and_save(trainer: Any, tokenizer: Any, output: str | None, started: float) -> float:
    """Train (no log dicts on stdout), then save the model and tokenizer to ``output`` if given; the seconds since
    ``started``. Shared by the GRPO and SFT loops."""
    from transformers import PrinterCallback

    # With tqdm off, transformers prints every log dict to stdout, where the command's one JSON report goes.
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    seconds = time.monotonic() - started
    if output:
        trainer.save_model(output)
        tokenizer.save_pretrained(output)
        umask_modes(output)
    return seconds


def umask_modes(folder: str) -> None:
    """Give the saved files the umask's mode: transformers writes the weights through a private temp file (0600), so
    another user of a shared judge folder could not load them."""
    from tourney.io import umask

    mode = 0o666 & ~umask()
    for path in Path(folder).rglob("*"):
        if path.is_file() and path.stat().st_mode & 0o777 == 0o600:
            path.chmod(mode)
