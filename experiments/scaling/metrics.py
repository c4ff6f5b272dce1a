"""Per-prompt and per-judge metrics of a best-of-N run (pure functions: lists in, numbers out).

Baselines: *oracle* (some candidate is correct: the ceiling of any selector), *random pick* (the expected accuracy of
picking uniformly, i.e. the share of correct candidates), and *majority vote* over final answers (self-consistency,
Wang et al. 2023, arXiv:2203.11171; ties split the credit evenly, the expected accuracy of a random tie-break).
Judge quality is read from its own judgments: pairwise accuracy on correct-vs-wrong pairs, and position bias.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np


def best_of_n(correct: Sequence[bool], ranking: Sequence[int]) -> float:
    """1.0 when the selector's top candidate is correct."""
    return float(bool(correct[ranking[0]]))


def oracle(correct: Sequence[bool]) -> float:
    """1.0 when any candidate is correct (pass@N)."""
    return float(any(correct))


def random_pick(correct: Sequence[bool]) -> float:
    """The expected accuracy of a uniformly random pick: the share of correct candidates."""
    return float(np.mean([bool(c) for c in correct]))


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> float | None:
    """Expected accuracy of voting over final answers (no answer abstains); None when no candidate has an answer.

    The winning answer's credit is the share of correct candidates that gave it; tied answers split the credit.
    """
    groups: dict[str, list[bool]] = defaultdict(list)
    for answer, ok in zip(answers, correct):
        if answer is not None:
            groups[answer].append(bool(ok))
    if not groups:
        return None
    top = max(len(v) for v in groups.values())
    tied = [v for v in groups.values() if len(v) == top]
    return float(np.mean([np.mean(v) for v in tied]))


def judge_quality(records: Sequence[Any], correct: Sequence[Sequence[bool]]) -> dict[str, Any]:
    """Pairwise accuracy and position bias from judgment records (``a``, ``b``, ``p_a``), pooled over prompts.

    ``records[i]`` holds one prompt's records and ``correct[i]`` its labels. Only correct-vs-wrong pairs count;
    invalid judgments (``p_a`` None) are left out. ``pairwise_accuracy`` = mean P(the correct one wins);
    ``position_bias`` = ½(P(A wins | correct in A) + P(A wins | correct in B)) − ½, which is 0 for a judge without
    bias whatever mix of orders it saw, and +0.1 when it gives A ten points more than it should; ``pick_a`` = the raw
    share of valid judgments won by position A over all pairs.
    """
    right: list[float] = []
    a_when_a: list[float] = []
    a_when_b: list[float] = []
    all_a: list[float] = []
    for recs, labels in zip(records, correct):
        for r in recs:
            if r.p_a is None:
                continue
            all_a.append(r.p_a)
            ca, cb = bool(labels[r.a]), bool(labels[r.b])
            if ca == cb:
                continue
            right.append(r.p_a if ca else 1.0 - r.p_a)
            (a_when_a if ca else a_when_b).append(r.p_a)
    bias = 0.5 * (np.mean(a_when_a) + np.mean(a_when_b)) - 0.5 if a_when_a and a_when_b else None
    return {
        "pairwise_accuracy": _round(np.mean(right)) if right else None,
        "pairwise_pairs": len(right),
        "position_bias": _round(bias),
        "pick_a": _round(np.mean(all_a)) if all_a else None,
    }


def bootstrap_ci(values: Sequence[float | None], draws: int = 1000, seed: int = 0) -> list[float] | None:
    """95% percentile bootstrap interval of the mean over prompts (None values left out), or None if no values."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(draws, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [_round4(lo), _round4(hi)]


def mean(values: Sequence[float | None]) -> float | None:
    """Mean over prompts with None values left out (None if none are left)."""
    x = [v for v in values if v is not None]
    return _round(np.mean(x)) if x else None


def _round(x: Any) -> float | None:
    """Round to 4 decimals for stable, readable output; None stays None."""
    return None if x is None else _round4(x)


def _round4(x: float) -> float:
    """Round to 4 decimals (+ 0.0 turns -0.0 into 0.0)."""
    return round(float(x), 4) + 0.0
