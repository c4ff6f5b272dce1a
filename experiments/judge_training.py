"""A judge that learns here: SmolLM2-135M distilled from a verifier (SFT), then RLVR (GRPO), on this CPU.

    python -m experiments.judge_training --out judge-training-results

One seeded command: data, three judges (base, after SFT, after GRPO), each evaluated by tourney itself, a table
(``results.json``, ``table.md``) and a plot (``accuracy.png``) in ``--out``.

Task (what the judge must learn): GSM8K questions whose reference solution has at most two calculations; every
candidate keeps the reference working, every step right, and a wrong candidate only ends on a final ``####`` answer
that its own last step does not give (``experiments/gsm8k.py synthetic --mistake final``, distractor answers from
small slips: off by a little, a slipped digit, a factor of ten). Telling them apart needs reading both solutions to
their end and matching the answer to the working: a real check a small model can learn (the issue's "an answer
inconsistent with its own last step"). Questions are split once, seeded: held-out questions are never trained on.

Stages (``tourney.train``, as a user runs them):
1. SFT: the arithmetic teacher (``tourney/train/teacher.py``, a verifier, not a model: it knows the two texts and
   which is right) writes a short rationale for both orders of each training pair, ending with RM-R1's verdict;
   TRL's SFTTrainer learns it (``tourney train sft --engine trl``, 51 steps of 4 rows).
2. GRPO: ``tourney train rlvr --engine trl`` on the same pairs, the judge writing its rationale and verdict
   (not forced), rewarded by the project's ``compute_score`` (+1 right verdict, -1 otherwise); 5 steps of 2 pairs x 4
   samples. Each stage is its own process (the README's commands); about 40 minutes in all on the 2-core machine.

Evaluation, each judge through the ``tourney`` command on vLLM (family rm-r1, greedy, ``--max-tokens`` 256, a verdict
forced from log-probabilities when none is written): every held-out pair judged in both orders (``rank --strategy
round-robin --votes 2 --judgments``): accuracy, "A" share, order consistency, 95 % bootstrap intervals resampling
questions (two pairs per question). Then ``best-of-n`` over held-out synthetic candidate sets (N=4, the default
knockout, the same for both judges): top-1 (the pick is correct) of the base and the trained judge.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments import gsm8k
from experiments.args import Parser, non_negative, out_dir, positive, positive_float
from experiments.scaling import metrics

FAMILY = "rm-r1"
MAX_STEPS = 2  # calculations in a reference solution: short traces keep a CPU training step short
MAX_TOKENS = 256  # the judge's budget for rationale + verdict at evaluation (the teacher's traces need ~200)
REPS = 2000  # bootstrap resamples
# Steps, not minutes, so that a seed gives the same judges anywhere: what 15 and 8 minutes of this machine train.
SFT_STEPS = 51
GRPO_STEPS = 5


@functools.cache
def short_questions() -> tuple[gsm8k.Problem, ...]:
    """GSM8K test questions with at most MAX_STEPS calculations, in the dataset's order (read once a process: the
    option check and the data both need them)."""
    return tuple(p for p in gsm8k.load() if len(gsm8k.STEP.findall(p.solution)) <= MAX_STEPS)


def problems(seed: int, held_out: int) -> tuple[list[gsm8k.Problem], list[gsm8k.Problem]]:
    """Short GSM8K test questions (``short_questions``), shuffled by ``seed``: (train, held out)."""
    pool = short_questions()
    order = np.random.default_rng(seed).permutation(len(pool))
    short = [pool[i] for i in order]
    return short[held_out:], short[:held_out]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows as JSONL; return the path."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def make_data(out: Path, opts: argparse.Namespace) -> dict[str, Any]:
    """Training pairs, held-out pair items (response 0 is the right one) and held-out best-of-N sets."""
    train, held = problems(opts.seed, opts.held_out)
    synth = lambda probs, pool, seed: gsm8k.synthetic(probs, pool=pool, seed=seed, mistake="final")  # noqa: E731
    train_pairs = gsm8k.pairs(synth(train, 8, opts.seed), per_prompt=opts.pairs_per_question, seed=opts.seed)
    held_pairs = gsm8k.pairs(synth(held, 8, opts.seed + 1), per_prompt=2, seed=opts.seed + 1)
    items = [{"id": p["id"], "prompt": p["prompt"], "responses": [p["chosen"], p["rejected"]]} for p in held_pairs]
    sets = synth(held, opts.n, opts.seed + 2)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    return {
        "train_pairs": write_jsonl(data / "train-pairs.jsonl", train_pairs),
        "held_pairs": write_jsonl(data / "held-out-pairs.jsonl", items),
        "sets": write_jsonl(data / "best-of-n.jsonl", sets),
        "counts": {
            "train_questions": len(train),
            "held_out_questions": len(held),
            "train_pairs": len(train_pairs),
            "held_out_pairs": len(items),
            "best_of_n_sets": len(sets),
        },  # fmt: skip
    }


def tourney(args: list[str], log: Path) -> None:
    """Run the ``tourney`` command (this interpreter); its stderr goes to ``log``; stop with its error if it fails."""
    cmd = [sys.executable, "-m", "tourney", *args]
    # vLLM's CPU backend keeps one core for its front end; here nothing else runs meanwhile: 1.5x faster on both
    env = {"VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, sorted(os.sched_getaffinity(0))))} | dict(os.environ)
    with open(log, "a") as err:
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    if done.returncode != 0:
        raise SystemExit(f"judge_training: `tourney {' '.join(args)}` failed (exit {done.returncode}); see {log}")


def judge_args(judge: str, seed: int) -> list[str]:
    """The options every evaluation shares: the judge, its family, its budget, no cache (a retrained folder at the
    same path must not reuse old judgments), bfloat16 (2.3x faster than float32 here: AMX), eager (every judge is a
    new folder: vLLM would compile each for ~90 s), quiet."""
    return ["--judge", judge, "--family", FAMILY, "--max-tokens", str(MAX_TOKENS), "--seed", str(seed), "--no-cache",
            "--dtype", "bfloat16", "--engine-arg", "enforce_eager=true", "-q"]  # fmt: skip


def p_chosen(judgments: Path) -> tuple[list[str], np.ndarray]:
    """From a ``--judgments`` file of the held-out pairs: the pair ids and P(the right response wins) per pair, shape
    (n, 2); column 0: the right one shown as A, column 1: shown as B. A written verdict counts 1 or 0; a forced one
    its probability."""
    rows: dict[str, list[float]] = {}
    for line in judgments.read_text().splitlines():
        j = json.loads(line)
        p_a = j["p_a"] if j["p_a"] is not None else {"A": 1.0, "B": 0.0}.get(j["verdict"], 0.5)
        slot = rows.setdefault(j["id"], [np.nan, np.nan])
        slot[0 if j["a"] == 0 else 1] = p_a if j["a"] == 0 else 1.0 - p_a
    return list(rows), np.array(list(rows.values()))


def interval(values: np.ndarray, seed: int, groups: list[str] | None = None) -> dict[str, Any]:
    """Mean and 95 % bootstrap interval of per-unit values, resampling whole ``groups`` (pairs of one question
    together: they share its solutions) when given."""
    keys = groups if groups is not None else list(range(len(values)))
    _, inverse = np.unique(np.array(keys, dtype=object).astype(str), return_inverse=True)
    sums, counts = np.bincount(inverse, weights=values), np.bincount(inverse)
    idx = np.random.default_rng(seed).integers(0, len(sums), size=(REPS, len(sums)))
    low, high = np.percentile(sums[idx].sum(1) / counts[idx].sum(1), [2.5, 97.5])
    return {"mean": round(float(values.mean()), 4), "ci95": [round(float(low), 4), round(float(high), 4)]}


def pair_metrics(p: np.ndarray, seed: int, groups: list[str] | None = None) -> dict[str, Any]:
    """Accuracy, "A" share and order consistency over pairs judged in both orders (``p_chosen``'s array); intervals
    resample ``groups`` (the pairs' questions) when given.

    A judgment is right when the right response has P > 0.5 (a tie, P = 0.5, is wrong); it says "A" when the response
    shown first has P > 0.5; a pair is consistent when both orders pick the same response.
    """
    right = p > 0.5
    says_a = np.stack([p[:, 0] > 0.5, p[:, 1] < 0.5], axis=1)
    picked_same = right[:, 0] == right[:, 1]
    ties = (p == 0.5).any(1)
    return {
        "accuracy": interval(right.mean(1), seed, groups),
        "a_share": interval(says_a.mean(1), seed, groups),
        "order_consistency": interval((picked_same & ~ties).astype(float), seed, groups),
        "pairs": len(p),
    }


def evaluate(judge: str, name: str, data: dict[str, Any], out: Path, seed: int) -> dict[str, Any]:
    """Every held-out pair in both orders through ``tourney rank``; metrics, plus how many verdicts were written."""
    path = out / f"judgments-{name}.jsonl"
    tourney(["rank", str(data["held_pairs"]), *judge_args(judge, seed), "--strategy", "round-robin", "--votes", "2",
             "--judgments", str(path), "-o", os.devnull], out / "tourney.log")  # fmt: skip
    written = [json.loads(line)["forced"] is False for line in path.read_text().splitlines()]
    ids, p = p_chosen(path)
    questions = [i.split("/")[0] for i in ids]  # gsm8k.pairs ids: <question id>/<i>-<j>
    return {**pair_metrics(p, seed, questions), "questions": len(set(questions)),
            "verdicts_written": round(float(np.mean(written)), 4)}  # fmt: skip


def best_of_n(judge: str, name: str, data: dict[str, Any], out: Path, seed: int) -> dict[str, Any]:
    """``tourney best-of-n`` over the held-out candidate sets; top-1 = the pick is a correct solution."""
    path = out / f"best-of-n-{name}.jsonl"
    tourney(["best-of-n", str(data["sets"]), *judge_args(judge, seed), "-o", str(path)], out / "tourney.log")
    sets = [json.loads(line) for line in Path(data["sets"]).read_text().splitlines()]
    picks = [json.loads(line) for line in path.read_text().splitlines()]
    correct = [[r["correct"] for r in s["responses"]] for s in sets]
    top1 = np.array([metrics.best_of_n(c, [p["best_index"]]) for c, p in zip(correct, picks)])
    return {
        "top1": interval(top1, seed),
        "sets": len(sets),
        "oracle": round(float(np.mean([metrics.oracle(c) for c in correct])), 4),
        "random": round(float(np.mean([metrics.random_pick(c) for c in correct])), 4),
    }


def train(data: dict[str, Any], out: Path, opts: argparse.Namespace, log: Any) -> dict[str, Any]:
    """The README's training commands, each its own process (a GRPO process ends holding ~14 GB that vLLM needs
    next): the teacher's traces, SFT, RLVR data, GRPO from the SFT judge; their JSON reports."""
    seed = ["--seed", str(opts.seed)]
    taught = train_cli(["sft-prepare", str(data["train_pairs"]), "--teacher", "arithmetic", "-o", str(out / "sft-data"),
                        "--family", FAMILY, "--val-fraction", "0", *seed], out, log)  # fmt: skip
    log(f"teacher: {taught['kept']} pairs backed, {taught['skipped_unverified']} not -> {taught['train']} SFT rows")
    log(f"SFT: {opts.sft_steps} steps of {opts.batch} rows (tourney train sft --engine trl)")
    sft = train_cli(["sft", "--engine", "trl", "--model", "smollm2", "--data", str(out / "sft-data"), "--output",
                     str(out / "sft"), "--max-steps", str(opts.sft_steps), *cap(opts.sft_minutes),
                     "--batch-size", str(opts.batch), "--lr", str(opts.sft_lr), "--max-length", "1024", *seed],
                    out, log)  # fmt: skip
    log(f"SFT: {sft['steps']} steps in {sft['seconds']} s")
    train_cli(["prepare", str(data["train_pairs"]), "-o", str(out / "rlvr-data"), "--family", FAMILY,
               "--val-fraction", "0", *seed], out, log)  # fmt: skip
    log(f"GRPO: {opts.grpo_steps} steps of {opts.grpo_batch} samples (tourney train rlvr --engine trl)")
    grpo = train_cli(["rlvr", "--engine", "trl", "--model", str(out / "sft"), "--data", str(out / "rlvr-data"),
                      "--output", str(out / "grpo"), "--family", FAMILY, "--max-steps", str(opts.grpo_steps),
                      *cap(opts.grpo_minutes), "--lr", str(opts.grpo_lr), "--batch-size",
                      str(opts.grpo_batch), "--num-generations", str(opts.generations), "--max-completion-tokens",
                      str(MAX_TOKENS), "--no-forced-prefix", *seed], out, log)  # fmt: skip
    log(f"GRPO: {grpo['steps']} steps in {grpo['seconds']} s")
    return {"teacher": taught, "sft": sft, "grpo": grpo}


def cap(minutes: float | None) -> list[str]:
    """``--max-minutes`` when a time cap is given (by default a fixed number of steps: same seed, same judge)."""
    return [] if minutes is None else ["--max-minutes", str(minutes)]


def train_cli(args: list[str], out: Path, log: Any) -> dict[str, Any]:
    """``tourney train ARGS``: its step lines go to ``log`` as they come, its JSON report (stdout) is returned."""
    cmd = [sys.executable, "-m", "tourney", "train", *args]
    with open(out / "train.log", "a", buffering=1) as err:  # line by line: a user may tail it
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stderr:
            err.write(line)
            if line.startswith("tourney: step"):
                log(line.rstrip())
        report = proc.stdout.read()
    if proc.wait() != 0:
        raise SystemExit(f"judge_training: `tourney train {' '.join(args)}` failed (exit {proc.returncode}); "
                         f"see {out / 'train.log'}")  # fmt: skip
    return json.loads(report)


def plot(result: dict[str, Any], path: Path) -> None:
    """Accuracy per training step, SFT then GRPO: held-out pairwise accuracy (95 % intervals) where evaluated, SFT's
    token accuracy on the teacher's traces and GRPO's share of rewarded samples (both on training rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    sft, grpo = result["training"]["sft"], result["training"]["grpo"]
    ax.plot([k + 1 for k in range(sft["steps"])], [np.nan if a is None else a for a in sft["token_accuracy_per_step"]],
            ".", color="tab:green", alpha=0.6, label="SFT: token accuracy on the teacher's traces (train)")  # fmt: skip
    ax.plot([sft["steps"] + k + 1 for k in range(grpo["steps"])], [(r + 1) / 2 for r in grpo["reward_per_step"]],
            ".", color="tab:orange", alpha=0.6, label="GRPO: share of samples rewarded +1 (train)")  # fmt: skip
    evals = result["curve"]
    ys = np.array([e["accuracy"]["mean"] for e in evals])
    cis = np.array([e["accuracy"]["ci95"] for e in evals])
    ax.errorbar([e["step"] for e in evals], ys, yerr=[ys - cis[:, 0], cis[:, 1] - ys], marker="o", capsize=3,
                color="tab:blue", label="held-out pairwise accuracy, both orders (95% bootstrap)")  # fmt: skip
    ax.axvline(sft["steps"] + 0.5, color="grey", linestyle=":")
    ax.axhline(0.5, color="grey", linewidth=0.5)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"training step (SFT 1-{sft['steps']}, then GRPO)")
    ax.set_ylabel("accuracy")
    ax.set_title("SmolLM2-135M learning to judge (GSM8K, wrong final answers)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(result: dict[str, Any]) -> str:
    """The README's table: one row per judge."""
    fmt = lambda m: f"{m['mean']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"  # noqa: E731
    lines = ["| judge | accuracy | \"A\" share | order consistency | verdicts written | best-of-4 top-1 |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name in ("base", "sft", "grpo"):
        e = result["judges"][name]
        bon = result["best_of_n"].get(name)
        lines.append(f"| {name} | {fmt(e['accuracy'])} | {fmt(e['a_share'])} | {fmt(e['order_consistency'])} | "
                     f"{e['verdicts_written']:.2f} | {fmt(bon['top1']) if bon else '-'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run everything; print the table; write results.json, table.md and accuracy.png to ``--out``."""
    ap = Parser(prog="python -m experiments.judge_training", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    ap.add_argument("--out", type=out_dir, default="judge-training-results",
                    help="folder for data, judges, judgments and results")  # fmt: skip
    ap.add_argument("--seed", type=non_negative, default=0, help="the split, the pairs, training and evaluation")
    ap.add_argument("--held-out", type=positive, default=100, help="held-out questions (pairs and best-of-N sets)")
    ap.add_argument("--pairs-per-question", type=positive, default=2, help="correct-vs-wrong pairs per question")
    ap.add_argument("--n", type=positive, default=4, help="candidates per best-of-N set")
    ap.add_argument("--sft-steps", type=positive, default=SFT_STEPS, help="SFT steps (stage 1)")
    ap.add_argument("--sft-minutes", type=positive_float, default=None, help="cap SFT at this many minutes")
    ap.add_argument("--sft-lr", type=positive_float, default=1e-4, help="SFT learning rate")
    ap.add_argument("--batch", type=positive, default=4, help="SFT rows per step")
    ap.add_argument("--grpo-steps", type=positive, default=GRPO_STEPS, help="GRPO steps (stage 2)")
    ap.add_argument("--grpo-minutes", type=positive_float, default=None, help="cap GRPO at this many minutes")
    ap.add_argument("--grpo-lr", type=positive_float, default=1e-5, help="GRPO learning rate")
    ap.add_argument("--grpo-batch", type=positive, default=8, help="GRPO samples per step (pairs x generations)")
    ap.add_argument("--generations", type=positive, default=4, help="GRPO samples per pair")
    opts = ap.parse_args(argv)
    if opts.grpo_batch % opts.generations:  # checked by `tourney train rlvr` too, but only after SFT
        ap.error("--grpo-batch must be a multiple of --generations")
    short = len(short_questions())
    if opts.held_out >= short:
        ap.error(f"--held-out must leave questions to train on (there are {short})")
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    log = lambda msg: print(f"[{time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = make_data(out, opts)
    log(f"data: {data['counts']}")
    training = train(data, out, opts, log)
    folders = {"base": "smollm2", "sft": str(out / "sft"), "grpo": str(out / "grpo")}
    judges: dict[str, Any] = {}
    for name, judge in folders.items():
        log(f"{name}: judging {data['counts']['held_out_pairs']} held-out pairs in both orders (tourney rank)")
        judges[name] = evaluate(judge, name, data, out, opts.seed)
        log(f"{name}: {json.dumps(judges[name])}")
    bon = {}
    for name in ("base", "grpo"):
        log(f"{name}: best-of-{opts.n} over {data['counts']['best_of_n_sets']} held-out sets (tourney best-of-n)")
        bon[name] = best_of_n(folders[name], name, data, out, opts.seed)
        log(f"{name} best-of-{opts.n}: {json.dumps(bon[name])}")
    sft_steps = training["sft"]["steps"]
    curve = [{"step": 0, **judges["base"]}, {"step": sft_steps, **judges["sft"]},
             {"step": sft_steps + training["grpo"]["steps"], **judges["grpo"]}]  # fmt: skip
    result = {"model": "SmolLM2-135M-Instruct", "family": FAMILY, "seed": opts.seed, "options": vars(opts),
              "data": data["counts"], "judges": judges, "best_of_n": bon, "curve": curve, "training": training,
              "wall_minutes": round((time.monotonic() - t0) / 60, 1)}  # fmt: skip
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "table.md").write_text(table(result))
    plot(result, out / "accuracy.png")
    print(table(result), end="")
    log(f"done in {result['wall_minutes']} min: {out}/results.json, table.md, accuracy.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
