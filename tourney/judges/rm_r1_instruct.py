"""RM-R1 *Instruct* checkpoints (gaotang/RM-R1-Qwen2.5-Instruct-*): the chain-of-rubrics system prompt.

The texts live in ``rm_r1_instruct.toml`` beside this file (byte for byte from the authors' repository), which is
also the worked example of a custom family file.
"""

from pathlib import Path

from tourney.judges.custom import load_custom

FAMILY = load_custom(Path(__file__).with_name("rm_r1_instruct.toml"))
