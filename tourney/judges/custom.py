"""Custom judge families from a TOML file. Keys (anything else is an error):

name            family name (default: the file name without .toml)
system          optional system prompt, used verbatim
user            user template; must contain {question}, {answer_a} and {answer_b}; other braces stay literal
user_multi      optional template for conversation prompts; must contain {conversation_a} and {conversation_b}
labels          optional [user, assistant A, assistant B] transcript labels (default ["User", "Chatbot A",
                "Chatbot B"]); each conversation turn is one "<label>: <content>" line
verdict_a       the exact string that ends the judge's output when A is better (required)
verdict_b       the same for B (required)
thinks          true if the chat template opens <think>: the verdict must follow the last </think>
verdict_prefix  text before the choice token, for forced verdicts by next-token log-probs
choices         [choice A, choice B]; prefix and choices default to the common prefix of the two verdicts
                and the parts where they differ
[sampling]      temperature (default 0), top_p (default 1), max_tokens (default 8192), and vLLM's
                repetition_penalty (1), presence_penalty (0), frequency_penalty (0), top_k (0: off), min_p (0)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tourney.errors import InputError
from tourney.judges.base import Family, split_verdicts
from tourney.sampling import INT_FIELDS, sampling_problem

KEYS = {
    "name",
    "system",
    "user",
    "user_multi",
    "labels",
    "verdict_a",
    "verdict_b",
    "thinks",
    "verdict_prefix",
    "choices",
    "sampling",
}
SAMPLING_DEFAULTS: dict[str, Any] = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 8192}


def load_custom(path: str | Path) -> Family:
    """Load a judge family from a TOML template file; any problem is an InputError naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read template: {e.strerror or e}", file=str(path)) from None
    except UnicodeDecodeError as e:
        raise InputError(f"template is not UTF-8 text (byte {e.start})", file=str(path)) from None
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"invalid TOML: {e}", file=str(path)) from None

    def fail(key: str, problem: str) -> InputError:
        """Build the one-line error for ``key``, pointing at its line when it can be found."""
        m = re.search(rf"^\s*\[?\s*{re.escape(key)}\s*[=\]]", text, re.MULTILINE)
        line = text.count("\n", 0, m.start()) + 1 if m else None
        return InputError(problem, file=str(path), line=line, field=key)

    def get(key: str, kind: type, default: Any = None, required: bool = False) -> Any:
        """Return ``data[key]`` checked against ``kind``."""
        if key not in data:
            if required:
                raise fail(key, "missing (required)")
            return default
        value = data[key]
        if not isinstance(value, kind):
            raise fail(key, f"must be a {kind.__name__}, not {type(value).__name__}")
        return value

    def pair(key: str, n: int, default: Any = None) -> Any:
        """Return ``data[key]`` as a tuple of ``n`` strings."""
        value = get(key, list, default)
        if value is None or isinstance(value, tuple):
            return value
        if len(value) != n or not all(isinstance(v, str) for v in value):
            raise fail(key, f"must be a list of {n} strings")
        return tuple(value)

    for key in data:
        if key not in KEYS:
            # repr keeps a quoted TOML key with a newline from breaking the one-line message
            raise fail(repr(key)[1:-1], f"unknown key; known keys: {', '.join(sorted(KEYS))}")

    user = get("user", str, required=True)
    user_multi = get("user_multi", str)
    verdict_a = get("verdict_a", str, required=True)
    verdict_b = get("verdict_b", str, required=True)
    prefix = get("verdict_prefix", str)
    choices = pair("choices", 2)
    if (prefix is None or choices is None) and verdict_a != verdict_b:
        derived = split_verdicts(verdict_a, verdict_b)
        if derived is None:
            raise fail("choices", "cannot be derived from verdict_a/verdict_b; set verdict_prefix and choices")
        prefix = derived[0] if prefix is None else prefix
        choices = derived[1] if choices is None else choices
    prefix, choices = prefix or "", choices or ("", "")

    table = get("sampling", dict, {})
    sampling = parse_sampling(table, lambda problem: fail("sampling", problem))

    try:
        return Family(
            name=get("name", str, path.stem),
            system=get("system", str),
            user=user,
            user_multi=user_multi,
            labels=pair("labels", 3, ("User", "Chatbot A", "Chatbot B")),
            verdicts=(verdict_a, verdict_b),
            verdict_prefix=prefix,
            choices=choices,
            thinks=get("thinks", bool, False),
            sampling=sampling,
            sampling_set=tuple(sorted(table)),
        )
    except InputError as err:  # the family's own checks: point at the field in the file
        raise fail(err.field or "user", err.message.split(": ", 1)[-1]) from None


def parse_sampling(table: dict[str, Any], fail: Callable[[str], InputError]) -> dict[str, Any]:
    """Check a ``[sampling]`` table and fill in the defaults."""
    sampling = dict(SAMPLING_DEFAULTS)
    for key, value in table.items():
        problem = sampling_problem(key, value)  # the keys are Sampling's field names (but the seed)
        if problem:
            raise fail(problem)
        sampling[key] = value if key in INT_FIELDS else float(value)
    return sampling
