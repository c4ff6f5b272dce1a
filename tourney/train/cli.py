"""``tourney train``: prepare data for verl, launch verl (GRPO / SFT) or train on the CPU with TRL (GRPO / SFT).

Exit codes: 2 for bad input or options (one ``tourney: error: ...`` line), 1 when the environment cannot run the
step (no training environment with verl, no GPU for verl, no TRL), otherwise the trainer's own exit code.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tourney.cli import CONSOLE, options
from tourney.train import launcher
from tourney.train.teacher import TEACHERS

FAMILY_HELP = "Judge family whose prompt and verdict are trained: rm-r1, rrm, rm-r1-instruct or a .toml template."
OUT_DIR = "Directory for train.parquet and val.parquet."


# Options one engine reads and the other never does: given to the other, they are refused, not ignored.
VERL_ONLY = ("nnodes", "gpus_per_node", "python", "size")
RLVR_TRL_ONLY = ("family", "max_steps", "max_minutes", "batch_size", "num_generations", "max_completion_tokens",
                 "no_forced_prefix", "seed")  # fmt: skip
SFT_TRL_ONLY = ("max_steps", "max_minutes", "batch_size", "max_length", "seed")


def _check_engine_options(o: dict[str, Any], trl_only: tuple[str, ...]) -> None:
    """Refuse what the chosen ``--engine`` would ignore; for trl, also an existing ``--output`` that is not a folder
    (found before the model loads, not when the trainer saves)."""
    import os

    from tourney.cli.checks import clash, given_options

    given = given_options()
    if o["engine"] == "verl":
        for name in trl_only:
            if name in given:
                raise clash(name, "--engine trl (verl takes its settings from the presets and -- overrides)",
                            "only applies to")  # fmt: skip
        return
    for name in VERL_ONLY:
        if name in given:
            raise clash(name, "--engine verl", "only applies to")
    if o["overrides"]:
        raise click.UsageError(f"Hydra overrides ({o['overrides'][0]}) only apply to --engine verl")
    if o["dry_run"]:
        raise click.UsageError("--dry-run prints verl's command; --engine trl trains right here")
    if os.path.exists(o["output"]) and not os.path.isdir(o["output"]):
        raise click.BadParameter(f"{o['output']} exists and is not a folder", param_hint="--output")


def _check_out_dir(out_dir: str, *inputs: str | None) -> None:
    """``-o`` of the prepare commands: a folder (not stdout), whose train/val parquet is none of the inputs."""
    import os

    from tourney.errors import InputError

    if out_dir == "-":
        raise click.BadParameter("a folder for train.parquet and val.parquet, not stdout", param_hint="-o")
    for name in ("train.parquet", "val.parquet"):
        out = os.path.join(out_dir, name)
        for given in inputs:
            if (
                given
                and given != "-"
                and os.path.isfile(out)
                and os.path.exists(given)
                and os.path.samefile(out, given)
            ):
                raise InputError(f"-o and INPUT name the same file ({out}); write to another folder")


def _env_failure(err: Exception) -> None:
    """One line, exit 1: the environment, not the input, is what is missing."""
    raise click.ClickException(str(err))  # exit code 1; tourney's main prints "tourney: error: ..."


@click.group()
def train() -> None:
    """Train judges: verl parquet from pairs (or a teacher's traces), verl GRPO/SFT launchers, TRL loops for the CPU."""


@train.command()
@click.argument("pairs_path", metavar="PAIRS")
@options.OUTPUT("out_dir", required=True, help=OUT_DIR)
@options.FAMILY(default="rm-r1", show_default=True, help=FAMILY_HELP)
@options.VAL_FRACTION()
@options.SEED(help="Split and A/B placement.")
def prepare(pairs_path: str, out_dir: str, family: str, val_fraction: float, seed: int) -> None:
    """Preference pairs (JSONL or parquet: prompt, chosen, rejected) -> verl RLHF parquet; prints the report."""
    from tourney.judges import get_family
    from tourney.train.pairs import read_pairs
    from tourney.train.prepare import prepare as run_prepare

    get_family(family)  # an unknown family fails before the input is read
    _check_out_dir(out_dir, pairs_path)
    report = run_prepare(read_pairs(pairs_path), family, out_dir, pairs_path, seed=seed, val_fraction=val_fraction)
    click.echo(json.dumps(report))


MODEL_NAMES = "a local directory, a hub id, or smollm2 (the built-in SmolLM2-135M-Instruct)"


def launch_options(data_help: str, lr_help: str, nnodes_help: str, nnodes_default: int | None = None) -> Any:
    """The options ``rlvr`` and ``sft`` share, with the help texts (and node default) that differ between them."""
    return options.apply_to(
        [
            click.option("--model", required=True, help=f"Model to train: {MODEL_NAMES}."),
            click.option("--data", "data_dir", required=True, help=data_help),
            click.option("--output", required=True, help="Checkpoint directory."),
            click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help=lr_help),
            click.option("--nnodes", type=click.IntRange(min=1), default=nnodes_default,
                         show_default=nnodes_default is not None, help=nnodes_help),
            click.option("--gpus-per-node", type=click.IntRange(min=1), default=8, show_default=True,
                         help="GPUs per node for verl (trainer.n_gpus_per_node)."),
            click.option("--python", "python", default=None,
                         help="Interpreter with verl (default: $TOURNEY_TRAIN_PYTHON, else .venv-train/bin/python)."),
            options.DRY_RUN(help="Print the verl command; run nothing."),
            click.argument("overrides", nargs=-1, metavar="[-- HYDRA_OVERRIDES...]"),
        ]
    )  # fmt: skip


def _python_or_placeholder(explicit: str | None, dry_run: bool) -> str:
    """The verl interpreter; a dry run without one prints the command for ``.venv-train/bin/python``; one asked for
    (--python, $TOURNEY_TRAIN_PYTHON) that is not there is refused, dry run or not."""
    bad = launcher.asked_python(explicit)
    if bad:
        raise click.UsageError(bad)
    try:
        return launcher.require_train_python(explicit)
    except launcher.NoTrainingEnv as err:
        if dry_run:
            return f"{launcher.ENV_DIR}/bin/python"
        _env_failure(err)
        raise  # unreachable: _env_failure exits


def _verl_model(name: str, dry_run: bool) -> str:
    """What verl's ``model.path`` gets: the built-in ``smollm2`` as its converted directory (converted now unless
    this is a dry run; verl does not know the name), any other name as given (it may live on the cluster only)."""
    from tourney.models import builtin_spec, resolve_model

    return resolve_model(name, convert=not dry_run).path if builtin_spec(name) else name


@train.command()
@launch_options(
    "Directory written by `tourney train prepare`.",
    "Learning rate (default: RM-R1's for the model size; 1e-5 for --engine trl).",
    "Nodes for verl (default: RM-R1's for the model size).",
)
@click.option(
    "--size", default=None, help="Model size for the presets (7b, 14b, 32b, 32b-instruct); default: from the name."
)
@click.option(
    "--format-penalty",
    type=options.FINITE,
    default=None,
    help="Reward for an output with no verdict (default: -1, the same as a wrong verdict, as in RM-R1).",
)
@click.option(
    "--engine",
    type=click.Choice(["verl", "trl"]),
    default="verl",
    show_default=True,
    help="verl: the real trainer (GPUs); trl: TRL's GRPOTrainer on the CPU, same data and reward.",
)
@options.apply_to([
    options.FAMILY(help="trl engine: override the family stored in the data."),
    click.option("--max-steps", type=click.IntRange(min=1), default=20, show_default=True, help="trl engine: steps."),
    click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="trl engine: stop after this much training time."),
    click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
                 help="trl engine: completions per step (a multiple of --num-generations)."),
    click.option("--num-generations", type=click.IntRange(min=2), default=4, show_default=True,
                 help="trl engine: GRPO group size."),
    click.option("--max-completion-tokens", type=click.IntRange(min=1), default=8, show_default=True,
                 help="trl engine: new tokens per judgment."),
    click.option("--no-forced-prefix", is_flag=True,
                 help="trl engine: let the judge write freely (a small model then rarely writes a verdict at all)."),
    options.SEED(help="trl engine seed."),
])  # fmt: skip
def rlvr(**o: Any) -> None:
    """GRPO with verifiable rewards: print or run verl's main_ppo (RM-R1 settings), or run TRL on the CPU."""
    _check_engine_options(o, RLVR_TRL_ONLY)
    if o["engine"] == "trl":
        _run_trl(o)
        return
    _, preset = launcher.resolve_preset(o["model"], o["size"], o["lr"])
    overrides = launcher.rlvr_overrides(
        _verl_model(o["model"], o["dry_run"]), o["data_dir"], o["output"], preset, nnodes=o["nnodes"],
        gpus_per_node=o["gpus_per_node"], format_penalty=o["format_penalty"], extra=o["overrides"],
    )  # fmt: skip
    nodes = o["nnodes"] or preset.nnodes
    cmd = launcher.rlvr_command(_python_or_placeholder(o["python"], o["dry_run"]), overrides)
    warnings = launcher.data_warnings(o["data_dir"], overrides, "rlvr")
    _print_or_run(cmd, nodes, o["dry_run"], warnings, cpu_hint=", or --engine trl to train on the CPU")


def _print_or_run(cmd: list[str], nodes: int, dry_run: bool, warnings: list[str], cpu_hint: str = "") -> None:
    """Dry run: print the command. Otherwise run it (GPU required; ``cpu_hint`` ends the no-GPU line) and exit with
    its code. ``warnings`` (about the data) show first, unless the run fails for want of a GPU (one line then)."""
    if not dry_run:
        try:
            launcher.require_gpu(cpu_hint)
        except launcher.NoTrainingEnv as err:
            _env_failure(err)
    for message in warnings:
        CONSOLE.warn(message)
    if dry_run:
        click.echo(launcher.format_command(cmd, nodes))
    else:
        sys.exit(launcher.run(cmd))


def _require_trl() -> None:
    """Exit 1 with one line when TRL (or its datasets) is not installed."""
    import importlib.util

    if importlib.util.find_spec("trl") is None or importlib.util.find_spec("datasets") is None:
        _env_failure(RuntimeError("--engine trl needs TRL: pip install -e '.[train]' (bash scripts/setup.sh does)"))


def _run_trl(o: dict[str, Any]) -> None:
    """``--engine trl``: TRL's GRPOTrainer on the CPU, on the prepared parquet and tourney's reward."""
    _require_trl()
    if o["batch_size"] % o["num_generations"]:
        raise click.BadParameter("must be a multiple of --num-generations", param_hint="--batch-size")
    launcher.check_data(o["data_dir"], ("train.parquet",))
    from tourney.judges import get_family
    from tourney.train.trl_loop import train_trl

    if o["family"]:
        get_family(o["family"])
    result = train_trl(
        o["model"], o["data_dir"], o["output"], family=o["family"], max_steps=o["max_steps"],
        max_seconds=o["max_minutes"] * 60 if o["max_minutes"] else None, learning_rate=o["lr"] or 1e-5,
        batch_size=o["batch_size"], num_generations=o["num_generations"],
        max_completion_tokens=o["max_completion_tokens"], forced=not o["no_forced_prefix"],
        format_penalty=o["format_penalty"], seed=o["seed"], progress=CONSOLE.line,
    )  # fmt: skip
    rewards = [round(h["reward"], 4) for h in result["log"]]
    click.echo(json.dumps({"engine": "trl", "steps": result["steps"], "seconds": result["seconds"],
                           "reward_per_step": rewards, "output": o["output"]}))  # fmt: skip


@train.command("sft-prepare")
@click.argument("judgments_path", metavar="JUDGMENTS|PAIRS")
@click.option(
    "--items",
    "items_path",
    default=None,
    help="The input JSONL the judgments were made on (required without --teacher).",
)
@click.option(
    "--teacher",
    type=click.Choice(TEACHERS),
    default=None,
    help="Write the traces with a teacher instead: the argument is then preference pairs (prompt, chosen, "
    "rejected); arithmetic recomputes the calculations of GSM8K-style solutions and writes both "
    "orders of every pair it can back.",
)
@options.OUTPUT("out_dir", required=True, help=OUT_DIR)
@options.FAMILY(default="rm-r1", show_default=True, help="Family of the judge that wrote (or learns) the rationales.")
@options.VAL_FRACTION(help="Share of judged prompts held out for validation.")
@options.SEED(help="Split seed.")
def sft_prepare(
    judgments_path: str,
    items_path: str | None,
    teacher: str | None,
    out_dir: str,
    family: str,
    val_fraction: float,
    seed: int,
) -> None:
    """Judgment records (--judgments JSONL) with correct, judge-written verdicts -> verl SFT parquet; or, with
    --teacher, preference pairs -> the teacher's traces as the same parquet."""
    from tourney.judges import get_family
    from tourney.train.sft import sft_prepare as run
    from tourney.train.sft import teacher_prepare

    get_family(family)
    _check_out_dir(out_dir, judgments_path, items_path)
    if teacher:
        if items_path is not None:
            raise click.UsageError("--items is for judgments; --teacher reads preference pairs")
        report = teacher_prepare(judgments_path, family, out_dir, seed=seed, val_fraction=val_fraction)
    elif items_path is None:
        raise click.UsageError("Missing option '--items' (or --teacher with preference pairs).")
    else:
        report = run(judgments_path, items_path, family, out_dir, seed=seed, val_fraction=val_fraction)
    click.echo(json.dumps(report))


@train.command()
@launch_options(
    "Directory written by `tourney train sft-prepare`.",
    "Learning rate (default: 5e-6, RM-R1's distillation rate; 5e-5 for --engine trl).",
    "Nodes for verl.",
    nnodes_default=1,
)
@click.option(
    "--engine",
    type=click.Choice(["verl", "trl"]),
    default="verl",
    show_default=True,
    help="verl: the real trainer (GPUs); trl: TRL's SFTTrainer on the CPU, same data, loss on the trace only.",
)
@options.apply_to([
    click.option("--max-steps", type=click.IntRange(min=1), default=20, show_default=True, help="trl engine: steps."),
    click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="trl engine: stop after this much training time."),
    click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
                 help="trl engine: traces per step."),
    click.option("--max-length", type=click.IntRange(min=16), default=2048, show_default=True,
                 help="trl engine: longest row in tokens (prompt + trace); longer rows are left out."),
    options.SEED(help="trl engine seed."),
])  # fmt: skip
def sft(**o: Any) -> None:
    """Distillation: print or run verl's SFT trainer (sft_trainer_engine.yaml; GPUs) with RM-R1's settings, or run
    TRL's SFTTrainer on the CPU."""
    _check_engine_options(o, SFT_TRL_ONLY)
    if o["engine"] == "trl":
        _run_sft_trl(o)
        return
    nodes = o["nnodes"]
    overrides = launcher.sft_overrides(
        _verl_model(o["model"], o["dry_run"]), o["data_dir"], o["output"], lr=o["lr"] or 5e-6, nnodes=nodes,
        gpus_per_node=o["gpus_per_node"], extra=o["overrides"],
    )  # fmt: skip
    cmd = launcher.sft_command(_python_or_placeholder(o["python"], o["dry_run"]), overrides, nodes, o["gpus_per_node"])
    _print_or_run(cmd, nodes, o["dry_run"], launcher.data_warnings(o["data_dir"], overrides, "sft"),
                  cpu_hint=", or --engine trl to train on the CPU")  # fmt: skip


def _run_sft_trl(o: dict[str, Any]) -> None:
    """``sft --engine trl``: TRL's SFTTrainer on the CPU, on the sft-prepare parquet."""
    _require_trl()
    launcher.check_data(o["data_dir"], ("train.parquet",), stage="sft-prepare")
    from tourney.train.sft_trl import train_sft_trl

    result = train_sft_trl(
        o["model"], o["data_dir"], o["output"], max_steps=o["max_steps"],
        max_seconds=o["max_minutes"] * 60 if o["max_minutes"] else None, learning_rate=o["lr"] or 5e-5,
        batch_size=o["batch_size"], max_length=o["max_length"], seed=o["seed"], progress=CONSOLE.line,
    )  # fmt: skip
    losses = [round(h["loss"], 4) for h in result["log"]]
    accuracy = [round(a, 4) if isinstance(a := h.get("mean_token_accuracy"), float) else None for h in result["log"]]
    click.echo(json.dumps({"engine": "trl", "steps": result["steps"], "seconds": result["seconds"],
                           "loss_per_step": losses, "token_accuracy_per_step": accuracy, "rows": result["rows"],
                           "skipped_too_long": result["skipped_too_long"], "output": o["output"]}))  # fmt: skip
