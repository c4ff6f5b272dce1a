"""Judge families: the prompt layout a pairwise judge model was trained on, and how to read its final verdict.

Built-in families: ``rm-r1`` (RM-R1 DeepSeek-distilled reasoning checkpoints), ``rm-r1-instruct`` (RM-R1 Instruct
checkpoints, chain-of-rubrics system prompt) and ``rrm`` (RRM-7B/32B). A TOML file gives a custom family (see
``tourney/judges/custom.py``; worked example: ``tourney/judges/rm_r1_instruct.toml``).

Adding a built-in family takes one file: create ``tourney/judges/<name>.py`` that defines a module-level
``FAMILY = Family(...)`` (see ``base.Family``: system prompt, user template with ``{question}``, ``{answer_a}``,
``{answer_b}``, verdict strings, sampling defaults). Every module of this package with a ``FAMILY`` is registered
in ``FAMILIES`` at import; nothing else needs editing. Add a rule to ``detect_family`` if model names should map
to it automatically.

Verdicts are injection-resistant: only the verdict string that ENDS the judge's output counts (after the last
``</think>``; followed by nothing but whitespace, end-of-turn tokens, punctuation, markdown emphasis or math
delimiters, see ``base.TRAILING``), so verdicts, ``</think>`` or template delimiters inside a candidate that the judge
quotes while reasoning never decide, and an output that ends by copying a candidate's ending has none. Truncated outputs
have no verdict.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Sequence
from pathlib import Path

from tourney.errors import InputError
from tourney.judges.base import Family, Verdict
from tourney.judges.custom import load_custom
from tourney.types import Prompt

__all__ = [
    "FAMILIES",
    "Family",
    "Verdict",
    "detect_family",
    "family_from_name",
    "get_family",
    "load_custom",
    "parse_verdict",
    "render",
]

_NOT_FAMILIES = {"base", "custom"}


def _discover() -> dict[str, Family]:
    """Import every family module of this package and collect its ``FAMILY``."""
    found: dict[str, Family] = {}
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name in _NOT_FAMILIES or mod.name.startswith("_"):
            continue
        family = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "FAMILY", None)
        if isinstance(family, Family):
            if family.name in found:
                raise RuntimeError(f"two judge families are named {family.name!r}")
            found[family.name] = family
    return found


FAMILIES: dict[str, Family] = _discover()


def get_family(name_or_toml_path: str | Path | Family) -> Family:
    """Return a built-in family by name, or load a custom one from a ``.toml`` path."""
    if isinstance(name_or_toml_path, Family):
        return name_or_toml_path
    key = str(name_or_toml_path)
    if key in FAMILIES:
        return FAMILIES[key]
    if key.endswith(".toml") or Path(key).is_file():
        return load_custom(key)
    known = ", ".join(sorted(FAMILIES))
    raise InputError(f"unknown judge family '{key}'; known: {known}, or the path of a .toml template")


def family_from_name(model_name: str) -> str | None:
    """The family a model name says it belongs to (RRM, RM-R1, RM-R1 Instruct), or None when it says none."""
    # Word-bounded and case-insensitive so local paths like /models/rrm-32b match but "ferrmo" does not.
    if re.search(r"(?<![a-z0-9])rrm(?![a-z])", model_name, re.IGNORECASE):
        return "rrm"
    if re.search(r"(?<![a-z0-9])rm[-_]?r1(?![0-9])", model_name, re.IGNORECASE):
        return "rm-r1-instruct" if re.search("instruct", model_name, re.IGNORECASE) else "rm-r1"
    return None


def detect_family(model_name: str) -> str:
    """Guess the family from a model name or path: RRM -> "rrm", RM-R1 + Instruct -> "rm-r1-instruct", else "rm-r1".

    The generic default is "rm-r1": its plain pairwise prompt ending in ``<answer>[[A]]</answer>`` is the most
    model-agnostic one. As the authors' evaluation does, "Instruct" in an RM-R1 name selects the chain-of-rubrics
    prompt those checkpoints were trained with.
    """
    return family_from_name(model_name) or "rm-r1"


def render(family: str | Family, prompt: Prompt, answer_a: str, answer_b: str) -> list[dict[str, str]]:
    """Return the chat messages asking ``family``'s judge to compare ``answer_a`` (A) with ``answer_b`` (B)."""
    return get_family(family).render(prompt, answer_a, answer_b)


def parse_verdict(family: str | Family, text: str, finished: bool = True, quoted: Sequence[str] = ()) -> Verdict | None:
    """Return "A", "B" or None (cut off, no final verdict, or a copy of a ``quoted`` candidate's ending)."""
    return get_family(family).parse(text, finished, quoted)
