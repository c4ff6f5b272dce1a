"""Helpers shared by the tourney train tests: run the CLI, write pairs and judgment fixtures, parse --dry-run."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from clirun import tourney


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``tourney ...`` in-process (``env``: variables set for the run only)."""
    return tourney(*args, env=env)


def write_pairs(path: Path, n: int = 20, identical: int = 0) -> Path:
    """n distinct pairs (tourney `pairs` rows) plus ``identical`` pairs whose chosen == rejected."""
    rows = [
        {"id": f"q{k}", "prompt": f"What is {k}+1?", "chosen": str(k + 1), "rejected": str(k + 2), "margin": 1.0}
        for k in range(n)
    ]
    rows += [{"id": f"same{k}", "prompt": "Same?", "chosen": "x", "rejected": "x"} for k in range(identical)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dry_run_overrides(stdout: str, entry: str) -> list[str]:
    """The Hydra overrides of a printed command (everything after ``-m <entry>``)."""
    args = shlex.split("\n".join(line for line in stdout.splitlines() if not line.startswith("#")).replace("\\\n", ""))
    return args[args.index(entry) + 1 :]


def judgments_fixture(tmp_path: Path) -> tuple[Path, Path]:
    """An items file with qualities, and judgment records: right, wrong, forced, unparseable, unlabeled."""
    items = tmp_path / "items.jsonl"
    rows = [
        {"id": "p1", "prompt": "2+2?", "responses": [{"text": "4", "quality": 1}, {"text": "5", "quality": 0}]},
        {"id": "p2", "prompt": "3+3?", "responses": [{"text": "6", "correct": True}, {"text": "7", "correct": False}]},
        {"id": "p3", "prompt": "?", "responses": ["x", "y"]},
    ]
    items.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def rec(pid, a, b, verdict, raw, forced=False, vote=0):
        return {"id": pid, "a": a, "b": b, "vote": vote, "verdict": verdict, "p_a": None, "forced": forced, "raw": raw}

    recs = [
        rec("p1", 0, 1, "A", "4 is right. <answer>[[A]]</answer>"),  # kept
        rec("p1", 1, 0, "B", "B wins <answer>[[B]]</answer>"),  # kept
        rec("p2", 0, 1, "B", "<answer>[[B]]</answer>"),  # wrong: 6 is correct
        rec("p2", 1, 0, "B", "hmm", forced=True),  # forced from log-probs: no rationale of its own
        rec("p2", 1, 0, "B", "[[B]] maybe", vote=1),  # the raw text does not end with the verdict
        rec("p3", 0, 1, "A", "<answer>[[A]]</answer>"),  # no label to check it against
    ]
    judgments = tmp_path / "judgments.jsonl"
    judgments.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return items, judgments
