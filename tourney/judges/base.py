"""A judge family as plain data: prompt templates, verdict strings and sampling defaults, with generic render/parse."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tourney.errors import InputError
from tourney.types import Prompt

Verdict = Literal["A", "B"]

THINK_END = "</think>"
# End-of-turn markers a backend may leave in the text (decoded without skip_special_tokens); they may follow a verdict.
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<｜end▁of▁sentence｜>", "<|end|>")
SINGLE_PLACEHOLDERS = ("question", "answer_a", "answer_b")
MULTI_PLACEHOLDERS = ("conversation_a", "conversation_b")


@dataclass(frozen=True)
class Family:
    """A judge family: how to lay out a pair for the judge model and how to read its final verdict.

    ``user`` holds ``{question}``, ``{answer_a}``, ``{answer_b}``; ``user_multi`` (None: single-turn only) holds
    ``{conversation_a}``, ``{conversation_b}``, each a transcript of the prompt turns plus one candidate, one
    ``"<label>: <content>"`` line per turn with ``labels`` = (user, assistant A, assistant B). ``verdicts`` are the
    exact strings that must END the judge's output for A and B. ``thinks``: the chat template opens ``<think>``
    itself, so a verdict counts only after the last ``</think>``, and an output without one has no verdict.
    """

    name: str
    system: str | None
    user: str
    verdicts: tuple[str, str]
    verdict_prefix: str
    choices: tuple[str, str]
    thinks: bool = False
    user_multi: str | None = None
    labels: tuple[str, str, str] = ("User", "Chatbot A", "Chatbot B")
    sampling: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        """Refuse a contradictory family (built-in or from a file) with one line naming the field."""
        for problem, fld in self.problems():
            raise InputError(f"judge family {self.name!r}: {problem}", field=fld)

    def problems(self) -> list[tuple[str, str]]:
        """Every inconsistency as (problem, field): placeholders, verdict strings, prefix and choices."""
        found = [(f"must contain the placeholder {{{ph}}}", "user") for ph in SINGLE_PLACEHOLDERS
                 if "{" + ph + "}" not in self.user]  # fmt: skip
        if self.user_multi is not None:
            found += [(f"must contain the placeholder {{{ph}}}", "user_multi") for ph in MULTI_PLACEHOLDERS
                      if "{" + ph + "}" not in self.user_multi]  # fmt: skip
        for fld, verdict in zip(("verdict_a", "verdict_b"), self.verdicts):
            if not verdict.strip():
                found.append(("must not be empty", fld))
        if self.verdicts[0] == self.verdicts[1]:
            found.append(("must differ from verdict_a", "verdict_b"))
        if len(self.choices) != 2 or not all(self.choices) or self.choices[0] == self.choices[1]:
            found.append(("must be two different non-empty strings", "choices"))
        elif not found:
            for fld, verdict, choice in zip(("verdict_a", "verdict_b"), self.verdicts, self.choices):
                if not verdict.startswith(self.verdict_prefix + choice):
                    found.append((f"{verdict!r} does not start with verdict_prefix + its choice "
                                  f"({self.verdict_prefix + choice!r})", fld))  # fmt: skip
        return found

    def render(self, prompt: Prompt, answer_a: str, answer_b: str) -> list[dict[str, str]]:
        """Return the chat messages (optional system, then one user turn) that ask the judge to compare A and B."""
        question = single_turn_question(prompt, self.name)
        if question is not None:
            user = fill(self.user, {"question": question, "answer_a": answer_a, "answer_b": answer_b})
        elif self.user_multi is None:
            raise InputError(f"{self.name} takes single-turn prompts; got a conversation of {len(prompt)} messages")
        else:
            turns = conversation_turns(prompt, self.name)
            user_label, label_a, label_b = self.labels
            user = fill(
                self.user_multi,
                {
                    "conversation_a": transcript(turns, answer_a, user_label, label_a),
                    "conversation_b": transcript(turns, answer_b, user_label, label_b),
                },
            )
        messages = [{"role": "system", "content": self.system}] if self.system is not None else []
        return messages + [{"role": "user", "content": user}]

    def parse(self, text: str, finished: bool = True, quoted: Sequence[str] = ()) -> Verdict | None:
        """Return the judge's final verdict, or None if it was cut off, does not end with one, or copies a candidate.

        ``quoted``: the candidate texts the judge was shown; an output that ends by copying the end of one of them
        (verdict string included) has not given a verdict of its own.
        """
        verdict = final_verdict(text, self.verdicts, self.thinks, finished)
        if verdict is not None and ends_by_quoting(text, quoted, self.verdicts[0 if verdict == "A" else 1]):
            return None
        return verdict

    def identity(self) -> dict[str, Any]:
        """Return everything that shapes the judge's input and the verdict read from it (for a cache key)."""
        return {
            "name": self.name,
            "system": self.system,
            "user": self.user,
            "user_multi": self.user_multi,
            "labels": list(self.labels),
            "verdicts": list(self.verdicts),
            "thinks": self.thinks,
            "verdict_prefix": self.verdict_prefix,
            "choices": list(self.choices),
        }


def fill(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``{name}`` placeholders in ONE pass, so text inside a value (``"{answer_b}"``) stays literal."""
    pattern = re.compile("|".join(re.escape("{" + k + "}") for k in values))
    return pattern.sub(lambda m: values[m.group(0)[1:-1]], template)


def single_turn_question(prompt: Prompt, family: str | None = None) -> str | None:
    """Return the question of a single-turn prompt (a string or one user message); None for a conversation."""
    if isinstance(prompt, str):
        return prompt
    turns = conversation_turns(prompt, family)
    return turns[0]["content"] if len(turns) == 1 else None


def conversation_turns(prompt: Prompt, family: str | None) -> list[dict[str, str]]:
    """Check a message-list prompt (user/assistant turns ending with a user turn) and return it as plain dicts.

    A leading ``system`` message is dropped: the judge compares answers to the user's turns, and neither RM-R1's
    transcript nor RRM's query has a place for the policy's system prompt.
    """
    where = f"{family}: " if family else ""
    if isinstance(prompt, str) or not isinstance(prompt, Sequence) or not prompt:
        raise InputError(f"{where}a prompt must be a string or a non-empty list of {{role, content}} messages")
    turns = []
    for i, m in enumerate(prompt):
        if i == 0 and isinstance(m, Mapping) and m.get("role") == "system" and len(prompt) > 1:
            continue  # the policy's system prompt: no judge family was trained with a place for it (see README)
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError(f"{where}prompt message {i} is not a {{role, content}} pair of strings")
        if m["role"] not in ("user", "assistant"):
            # RM-R1's transcript has no place for other roles (its converter asserts user/assistant).
            raise InputError(f"{where}prompt message {i} has role '{m['role']}'; only user/assistant turns are judged")
        turns.append({"role": m["role"], "content": m["content"]})
    if turns[-1]["role"] != "user":
        raise InputError(f"{where}a conversation prompt must end with a user turn")
    return turns


def transcript(turns: Sequence[Mapping[str, str]], answer: str, user_label: str, assistant_label: str) -> str:
    """Render the turns plus the final ``answer`` as RM-R1 does: ``"<label>: <content>"`` joined by newlines."""
    lines = [f"{user_label if t['role'] == 'user' else assistant_label}: {t['content']}" for t in turns]
    return "\n".join(lines + [f"{assistant_label}: {answer}"])


def strip_end(text: str) -> str:
    """Drop trailing whitespace and end-of-turn tokens, the only things allowed after a final verdict."""
    while True:
        stripped = text.rstrip()
        for tok in END_TOKENS:
            if stripped.endswith(tok):
                stripped = stripped[: -len(tok)]
        if stripped == text:
            return text
        text = stripped


def final_verdict(text: str, verdicts: tuple[str, str], thinks: bool, finished: bool = True) -> Verdict | None:
    """Read the verdict string that ends ``text`` (after the last ``</think>`` if any); anything else is None.

    Only the very end counts, so verdict strings quoted earlier (e.g. from an injected candidate) are ignored.
    """
    if not finished:
        return None
    cut = text.rfind(THINK_END)
    if cut >= 0:
        text = text[cut + len(THINK_END) :]
    elif thinks:
        return None  # still inside the think block the template opened: no answer yet
    tail = strip_end(text)
    a, b = tail.endswith(verdicts[0]), tail.endswith(verdicts[1])
    if a and b:  # one verdict string is a suffix of the other: the longer one is what was written
        return "A" if len(verdicts[0]) > len(verdicts[1]) else "B"
    return "A" if a else "B" if b else None


QUOTE_CONTEXT = 16  # characters before a verdict that must also match a candidate for the verdict to be a copy


def ends_by_quoting(text: str, candidates: Sequence[str], verdict: str) -> bool:
    """True when ``text`` ends with a candidate's closing verdict AND the characters leading up to it.

    A judge writing its own verdict after its own words shares at most the verdict string with a candidate that ends
    the same way; one that shares the verdict plus the preceding ``QUOTE_CONTEXT`` characters (or the whole of a
    shorter candidate, such as a fake ``</think>`` and a verdict) is copying.
    """
    tail = strip_end(text)
    for cand in candidates:
        ctail = strip_end(cand)
        if not ctail.endswith(verdict) or len(ctail) == len(verdict):
            continue  # a candidate that IS the bare verdict cannot be told apart from the judge writing it
        # Short candidates (e.g. "</think>\boxed{Assistant 1}") are compared whole, longer ones by their ending.
        if tail.endswith(ctail[-(len(verdict) + QUOTE_CONTEXT) :]):
            return True
    return False


def split_verdicts(verdict_a: str, verdict_b: str) -> tuple[str, tuple[str, str]] | None:
    """Derive (prefix, (choice_a, choice_b)) from two verdict strings: common prefix, differing middles."""
    n = 0
    while n < min(len(verdict_a), len(verdict_b)) and verdict_a[n] == verdict_b[n]:
        n += 1
    a, b = verdict_a[n:], verdict_b[n:]
    s = 0
    while s < min(len(a), len(b)) and a[len(a) - 1 - s] == b[len(b) - 1 - s]:
        s += 1
    a, b = a[: len(a) - s], b[: len(b) - s]
    return (verdict_a[:n], (a, b)) if a and b else None
