"""The verifiable reward for RLVR of a pairwise judge, loadable by verl from this file's path.

``compute_score`` follows verl's custom-reward signature (verl docs, ``preparation/reward_function``) and RM-R1's
values (``rm_r1/verl/utils/reward_score/lm_as_judge.py``): +1 when the judge's final verdict names the known-better
answer, -1 when it names the other or none. Unlike RM-R1's check of the last 80 characters, the verdict is read by
``tourney.judges.parse_verdict``, the parser the engine uses at inference (only a verdict that ends the output
counts), so a judge is trained on exactly what will be read from it. ``format_penalty`` optionally gives an
unparseable output its own value (e.g. -0.5, or -2 to punish it more than a wrong verdict).

Imports only ``tourney.judges`` (pure Python): verl's process needs neither vLLM nor anything else of tourney.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tourney.judges import Family, get_family, parse_verdict

CORRECT, WRONG = 1.0, -1.0
DEFAULT_FAMILY = "rm-r1"
# RM-R1's data labels the better answer model_a / model_b; tourney's prepare writes A / B.
LABELS = {"A": "A", "B": "B", "model_a": "A", "model_b": "B"}


def family_of(data_source: str, extra_info: dict[str, Any] | None) -> str:
    """The judge family of a row: ``extra_info.family``, else the ``tourney/<family>`` data source, else rm-r1."""
    if extra_info and isinstance(extra_info.get("family"), str) and extra_info["family"]:
        return extra_info["family"]
    if isinstance(data_source, str) and data_source.startswith("tourney/"):
        return data_source.split("/", 1)[1]
    return DEFAULT_FAMILY


@lru_cache(maxsize=64)
def cached_family(name: str) -> Family:
    """A family by name or TOML path, loaded once per process (verl scores every rollout of every step)."""
    return get_family(name)


def judge_verdict(solution_str: str, family: str) -> str | None:
    """The judge's final verdict ("A", "B") in ``solution_str``, or None."""
    return parse_verdict(cached_family(family), solution_str)


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict[str, Any] | None = None,
    family: str | None = None,
    format_penalty: float | None = None,
) -> dict[str, float]:
    """Score one judge output: +1 right verdict, -1 wrong or none (``format_penalty`` for none, if given).

    Returns verl's dict form: ``score`` plus ``acc`` (1 right, 0 otherwise) and ``valid`` (1 if a verdict was read),
    which verl logs as reward extras.
    """
    if ground_truth not in LABELS:
        raise ValueError(f"ground_truth must be one of {sorted(LABELS)}, got {ground_truth!r}")
    verdict = judge_verdict(solution_str, family or family_of(data_source, extra_info))
    if verdict is None:
        score = WRONG if format_penalty is None else float(format_penalty)
    else:
        score = CORRECT if verdict == LABELS[ground_truth] else WRONG
    return {"score": score, "acc": float(verdict == LABELS[ground_truth]), "valid": float(verdict is not None)}
