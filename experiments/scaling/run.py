"""Run a checked config: load the candidate sets, build each judge once, judge every cell, measure it."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments import gsm8k
from experiments.scaling import metrics
from experiments.scaling.config import MODEL_KINDS, Cell, Config, JudgeSpec
from tourney.errors import InputError
from tourney.io import Item


@dataclass
class Candidates:
    """One prompt's candidate pool in a fixed, seeded order (a cell with N candidates takes the first N)."""

    id: Any
    prompt: Any
    texts: list[str]
    correct: list[bool]
    answers: list[str | None]


@dataclass
class Data:
    """The prompts of a run and what to call them in outputs."""

    prompts: list[Candidates]
    label: str
    synthetic: bool


def load_data(cfg: Config) -> Data:
    """Build or read the candidate sets the config asks for; N larger than a pool fails here, before any judging."""
    from tourney.tournament import derive_seed

    d = cfg.data
    if d["source"] == "synthetic":
        problems = gsm8k.load(d["prompts"], d["start"])
        rows = gsm8k.synthetic(problems, d["pool"], d["p_correct"], d["distractors"], seed=cfg.seed)
        last = d["start"] + d["prompts"] - 1
        label = (f"SYNTHETIC candidates: GSM8K test questions {d['start']}-{last}, {d['pool']} perturbed/reworded "
                 f"gold solutions each, mean share correct {d['p_correct']:g}")  # fmt: skip
        synthetic = True
    else:
        rows = _read_jsonl(cfg)
        synthetic = any(r.get("synthetic") for r in rows)
        label = f"{'SYNTHETIC ' if synthetic else ''}candidates from {d['path']}"
    prompts = []
    for row in rows:
        resp = [r if isinstance(r, dict) else {"text": r} for r in row["responses"]]
        order = np.random.default_rng(derive_seed(cfg.seed, row["id"], "order")).permutation(len(resp))
        resp = [resp[int(i)] for i in order]
        answers = [r.get("answer") if "answer" in r else gsm8k.extract_answer(r["text"], d["answer"]) for r in resp]
        prompts.append(Candidates(row["id"], row["prompt"], [r["text"] for r in resp],
                                  [bool(r["correct"]) for r in resp], answers))  # fmt: skip
    smallest = min(prompts, key=lambda p: len(p.texts))
    for k, block in enumerate(cfg.sweep):
        if max(block["n"]) > len(smallest.texts):
            key = "sweep.n" if len(cfg.sweep) == 1 else f"sweep[{k}].n"
            raise cfg.error(key, f"N={max(block['n'])} is more than the {len(smallest.texts)} candidates of "
                                 f"prompt {smallest.id!r}")  # fmt: skip
    return Data(prompts, label, synthetic)


def _read_jsonl(cfg: Config) -> list[dict[str, Any]]:
    """Read a JSONL of candidate sets; label it by GSM8K answer match, or require ``correct`` on every response."""
    from tourney.io import read_items

    d = cfg.data
    items = read_items(d["path"])
    if d["prompts"] is not None:
        items = items[: d["prompts"]]
    if not items:
        raise InputError("no prompts", file=d["path"])
    rows = []
    golds = gsm8k.gold_by_id() if d["label"] else {}
    for item in items:
        row = {**item.row, "id": item.id}
        if d["label"]:
            row = gsm8k.label_row(row, golds, d["answer"], d["path"], item.line)
        else:
            for k, resp in enumerate(row["responses"]):
                if not isinstance(resp, dict) or not isinstance(resp.get("correct"), bool):
                    raise InputError("missing: set correct per response, or data.label = true for GSM8K rows",
                                     file=d["path"], line=item.line, field=f"responses[{k}].correct")  # fmt: skip
        rows.append(row)
    return rows


def build_judge(spec: JudgeSpec) -> Any:
    """Build a judge once; the simulator's tau follows from the stated accuracy (quality 1 correct, 0 wrong)."""
    o = spec.options
    if spec.kind == "simulated":
        from tourney.simulated import SimulatedJudge

        # P(correct wins) = σ((1 − 0)/τ) at zero position bias, so τ = 1 / logit(accuracy).
        tau = 1.0 / math.log(o["accuracy"] / (1.0 - o["accuracy"]))
        return SimulatedJudge(tau, o["position_bias"], o["invalid_rate"])
    from tourney.config import JudgeConfig, make_judge

    keys = ("max_tokens", "temperature", "top_p", "dtype", "max_model_len", "seed", "verdict", "tensor_parallel_size",
            "gpu_memory_utilization", "replicas", "ray_address", "replica_timeout")  # fmt: skip
    kwargs = {k: o[k] for k in keys if k in o}
    engine = dict(o.get("engine_args", {})) | ({"enforce_eager": o["enforce_eager"]} if "enforce_eager" in o else {})
    if engine:
        kwargs["engine_kwargs"] = engine
    backend = "ray" if spec.kind == "ray" else "vllm"
    return make_judge(JudgeConfig(o["model"], backend=backend, family=o.get("family"), mode=o.get("mode", "lockstep"),
                                  **kwargs))  # fmt: skip


def fit_context(cfg: Config, data: Data, name: str, judge: Any) -> None:
    """Size a model judge's engine for its largest cell (most candidates, largest budget) before its first cell: the
    engine starts once, so a context fitted to the first cell alone would cut the thinking of later ones."""
    from tourney.api import check_context

    mine = [c for c in cfg.cells if c.judge == name]
    if cfg.judges[name].kind not in MODEL_KINDS or not mine:
        return
    max_tokens = max(c.max_tokens or judge.sampling.max_tokens for c in mine)
    check_context(items_for(data, max(c.n for c in mine)), judge.with_max_tokens(max_tokens),
                  warn=lambda m: log(f"tourney: warning: {m}"))  # fmt: skip


def items_for(data: Data, n: int) -> list[Item]:
    """Each prompt with its first ``n`` candidates; ``quality`` (1 correct, 0 wrong) is read only by the simulator."""
    out = []
    for line, c in enumerate(data.prompts, start=1):
        fields = [{"quality": 1.0 if ok else 0.0, "correct": ok} for ok in c.correct[:n]]
        out.append(Item(id=c.id, line=line, prompt=c.prompt, texts=c.texts[:n], fields=fields))
    return out


def run_cell(cfg: Config, data: Data, cell: Cell, judge: Any, cache: Any) -> dict[str, Any]:
    """Judge one cell through ``tourney.rank`` and measure it; returns its results row."""
    from tourney import rank

    spec = cfg.judges[cell.judge]
    max_tokens = None
    if spec.kind in MODEL_KINDS:
        # A cell without a sweep value gets the judge's own budget; another budget is another identity (cache key).
        max_tokens = cell.max_tokens or judge.sampling.max_tokens
        judge = judge.with_max_tokens(max_tokens)
    items = items_for(data, cell.n)
    run = rank(items, judge=judge, tournament=cell.tournament(cfg.seed), cache=cache, keep_records=True,
               mode=spec.options.get("mode", "lockstep"))  # fmt: skip
    results = run.results
    correct = [c.correct[: cell.n] for c in data.prompts]
    answers = [c.answers[: cell.n] for c in data.prompts]
    best = [metrics.best_of_n(ok, r.ranking) for ok, r in zip(correct, results)]
    orc = [metrics.oracle(ok) for ok in correct]
    rnd = [metrics.random_pick(ok) for ok in correct]
    maj = [metrics.majority_vote(a, ok) for a, ok in zip(answers, correct)]
    stats = run.stats
    # Tokens of every judgment used, cached ones included, so a resumed run counts them all.
    prompt_tokens = sum(r.prompt_tokens for r in results)
    completion_tokens = sum(r.completion_tokens for r in results)
    p = len(items)
    row: dict[str, Any] = {
        "config": cfg.name, "data": data.label, "synthetic": data.synthetic,
        "judge": cell.judge, "judge_desc": spec.describe(), "strategy": cell.strategy, "rating": cell.rating,
        "n": cell.n, "votes": cell.votes, "max_tokens": max_tokens, "budget": cell.budget, "prompts": p,
    }  # fmt: skip
    for name, values in (("best_of_n", best), ("oracle", orc), ("random", rnd), ("majority", maj)):
        row[name] = metrics.mean(values)
        row[f"{name}_ci"] = metrics.bootstrap_ci(values, cfg.bootstrap, seed=cfg.seed)
    row.update(metrics.judge_quality([r.records for r in results], correct))
    row.update({
        "judgments": stats.judgments, "judgments_per_prompt": round(stats.judgments / p, 3), "cached": stats.cached,
        "invalid": stats.invalid, "forced": stats.forced, "ties": stats.ties, "backend_calls": stats.backend_calls,
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "tokens_per_prompt": round((prompt_tokens + completion_tokens) / p, 1),
        "judge_s": round(stats.judge_s, 3), "wall_s": round(stats.wall_s, 3),
    })  # fmt: skip
    return row


def run(cfg: Config, data: Data, report: Callable[[int, Cell, dict[str, Any] | None], None] | None = None) -> list:
    """Run every cell, judge by judge (each built once, closed after its cells); return the rows in cell order."""
    from tourney.cache import Cache, default_cache_path

    cache = None
    if cfg.cache is not None:
        cache = Cache(default_cache_path() if cfg.cache == "default" else cfg.cache)
    rows: list[dict[str, Any]] = []
    judge, judge_name = None, None
    try:
        for k, cell in enumerate(cfg.cells):
            if cell.judge != judge_name:
                if judge is not None:
                    judge.close()
                judge, judge_name = build_judge(cfg.judges[cell.judge]), cell.judge
                fit_context(cfg, data, cell.judge, judge)
            if report:
                report(k, cell, None)
            t0 = time.perf_counter()
            row = run_cell(cfg, data, cell, judge, cache)
            rows.append(row)
            if report:
                report(k, cell, {**row, "cell_s": time.perf_counter() - t0})
    finally:
        if judge is not None:
            judge.close()
        if cache is not None:
            cache.close()
    return rows


def log(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)
