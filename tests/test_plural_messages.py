"""Counts in tourney's own lines read "1 prompt", "2 prompts" (``tourney.console.plural``), never "1 prompts"."""

from __future__ import annotations

import json
import re

from clirun import tourney

ONE_PLURAL = re.compile(r"(?<![\d.])1 (prompts|pairs|judgments|attempts|rows)\b")


def test_one_prompt_is_one_prompt_in_rank_and_pairs(tmp_path):
    src = tmp_path / "one.jsonl"
    answers = [{"text": "4", "quality": 1}, {"text": "5", "quality": 0}]
    src.write_text(json.dumps({"id": "q", "prompt": "2+2?", "responses": answers}) + "\n")
    sim = ["--judge", "simulated", "--no-cache"]
    res = tourney("rank", src, "-o", tmp_path / "r.jsonl", *sim, "--sim-invalid-rate", "1")
    assert res.returncode == 0, res.stderr
    assert "tourney: warning: 1 prompt got no verdict at all" in res.stderr, res.stderr
    res = tourney("pairs", src, "-o", tmp_path / "p.jsonl", *sim)
    assert res.returncode == 0, res.stderr
    assert "from 1 prompt;" in res.stderr and not ONE_PLURAL.search(res.stderr), res.stderr
