"""Test-time compute scaling experiments: ``python -m experiments.scaling CONFIG.toml [--out DIR] [--dry-run]``.

A config (``experiments/configs/*.toml``) names the candidate sets (GSM8K, synthetic or sampled), one or more judges
and a sweep over N, k (votes), strategy, rating, judge max tokens and budget. Every cell is one engine run over all
prompts; its row in ``results.jsonl`` holds best-of-N accuracy beside the oracle, random-pick and majority-vote
baselines, the judge's pairwise accuracy and position bias, and the cost (judgments, tokens, time). Judgments go
through tourney's cache, so a killed run resumes where it stopped and a re-run judges nothing.
"""
