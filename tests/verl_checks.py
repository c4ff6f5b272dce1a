"""Checks that run INSIDE the training environment (.venv-train, stock verl 0.9.1); tests/test_train_verl.py calls them.

    .venv-train/bin/python tests/verl_checks.py JOBS_JSON_FILE

JOBS: a list of [check, args...] with check one of ``compose CONFIG_NAME OVERRIDES``, ``dataset PARQUET
TOKENIZER_DIR``, ``reward OVERRIDES TOKENIZER_DIR CASES``. All run in ONE process (verl's import costs ~10 s);
the last stdout line is the JSON list of results, a failed composition giving {"error": ..., "message": ...}.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def config_dir() -> str:
    """verl's own trainer config folder, from the installed package."""
    import verl

    return str(Path(verl.__file__).parent / "trainer" / "config")


def compose(name: str, overrides: list[str]):  # noqa: ANN201
    """verl's Hydra config composed with ``overrides``, as ``python -m verl.trainer.<entry>`` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        return hydra_compose(config_name=name, overrides=overrides)


def cmd_compose(name: str, overrides: list[str]) -> dict:
    """Compose and report the values the launcher sets."""
    from omegaconf import OmegaConf

    try:
        cfg = compose(name, overrides)
    except Exception as err:  # Hydra raises ConfigCompositionException and friends
        return {"error": type(err).__name__, "message": str(err).splitlines()[0]}
    return {"config": OmegaConf.to_container(cfg, resolve=False)}


def cmd_dataset(parquet: str, tokenizer_dir: str) -> dict:
    """Load the prepared parquet with verl's RLHFDataset and a real tokenizer; report what the trainer would see."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = OmegaConf.create(
        {"max_prompt_length": 4096, "filter_overlong_prompts": True, "truncation": "error", "prompt_key": "prompt"}
    )
    ds = RLHFDataset(parquet, tokenizer, cfg)
    rows = []
    for k in range(len(ds)):
        row = ds[k]
        ids = tokenizer.apply_chat_template(row["raw_prompt"], add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        rows.append(
            {
                "raw_prompt": [dict(m) for m in row["raw_prompt"]],
                "index": int(row["index"]),
                "ground_truth": row["reward_model"]["ground_truth"],
                "data_source": row["data_source"],
                "extra_info": {k2: v for k2, v in dict(row["extra_info"]).items() if k2 in ("id", "family", "split")},
                "prompt_tokens": len(ids),
            }
        )
    return {"len": len(ds), "rows": rows}


def cmd_reward(overrides: list[str], tokenizer_dir: str, cases: list[dict]) -> dict:
    """Score judge outputs with verl's own reward manager (loading tourney's reward by path), then GRPO advantages.

    ``cases``: list of {"group": int, "response": str, "ground_truth": "A"|"B", "family": str}.
    """
    import numpy as np
    import torch
    from transformers import AutoTokenizer
    from verl import DataProto
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.reward import load_reward_manager

    cfg = compose("ppo_trainer", overrides)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    manager = load_reward_manager(cfg, tokenizer)
    prompt_ids = tokenizer("Judge these.", add_special_tokens=False)["input_ids"]
    encoded = [tokenizer(c["response"], add_special_tokens=False)["input_ids"] for c in cases]
    width = max(len(e) for e in encoded) + 1
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    responses = torch.tensor([e + [pad] * (width - len(e)) for e in encoded])
    response_mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
    prompts = torch.tensor([prompt_ids] * len(cases))
    attention = torch.cat([torch.ones_like(prompts), response_mask], dim=1)
    batch = DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": attention},
        non_tensors={
            "data_source": np.array([f"tourney/{c['family']}" for c in cases], dtype=object),
            "reward_model": np.array(
                [{"style": "rule", "ground_truth": c["ground_truth"]} for c in cases], dtype=object
            ),
            "extra_info": np.array([{"family": c["family"], "index": c["group"]} for c in cases], dtype=object),
        },
    )
    outs = [manager.loop.run_until_complete(manager.run_single(batch[k : k + 1])) for k in range(len(cases))]
    scores = [o["reward_score"] for o in outs]
    rm_scores = manager.assemble_rm_scores(batch, scores)
    advantages, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=rm_scores,
        response_mask=response_mask,
        index=np.array([c["group"] for c in cases], dtype=object),
    )
    return {
        "manager": type(manager).__name__,
        "scores": scores,
        "extras": [{k: float(v) for k, v in o["reward_extra_info"].items()} for o in outs],
        "rm_scores_sum": rm_scores.sum(dim=1).tolist(),
        "advantage": [float(a[m.bool()][0]) for a, m in zip(advantages, response_mask)],
    }


def main() -> None:
    """Run every job of the JSON file named on the command line; print the JSON list of results."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    checks = {"compose": cmd_compose, "dataset": cmd_dataset, "reward": cmd_reward}
    jobs = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps([checks[name](*args) for name, *args in jobs], default=str))


if __name__ == "__main__":
    main()
