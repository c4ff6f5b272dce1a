"""tourney: rank many candidate LLM responses with a pairwise reasoning judge.

    from tourney import JudgeConfig, Tournament, rank, read_items

    run = rank(read_items("samples.jsonl"), judge=JudgeConfig("smollm2"), tournament=Tournament("knockout"))
    best = [r.ranking[0] for r in run.results]; print(run.stats.judgments)

Where things go: ``strategies/`` (top level) holds the pure tournament algorithms; ``tourney.judges`` the judge
families (prompt template + verdict parser); ``tourney.backends`` what runs a judge (vLLM in-process, OpenAI-
compatible servers); ``tourney.engine`` batches, caches and counts; ``tourney.api.rank`` is the entry point;
``tourney.cli`` holds one module per command. Names are imported on first use, so ``import tourney`` is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "tourney.api": ("rank",),
    "tourney.tournament": ("Tournament",),
    "tourney.config": ("JudgeConfig", "SimConfig", "make_judge"),
    "tourney.engine": ("Engine", "Run", "Result"),
    "tourney.io": ("Item", "read_items"),
    "tourney.cache": ("Cache",),
    "tourney.errors": ("InputError", "BackendError"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Import ``name`` from its module on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module 'tourney' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
