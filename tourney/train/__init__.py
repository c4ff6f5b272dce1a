"""Training judges: preference pairs -> verl parquet, the verifiable reward, and the verl/TRL launchers.

RM-R1 (Chen et al., 2025, arXiv 2505.02387) and RRM (Guo et al., 2025, arXiv 2505.14674) train pairwise judges by
distilling reasoning traces, then by RL with verifiable rewards (GRPO; +1 when the judge prefers the known-better
answer, -1 otherwise). This package feeds stock verl the same prompt templates and verdict parser the engine uses.

Nothing here imports torch, vLLM or verl at module level: ``reward`` runs inside verl's own environment.
"""
