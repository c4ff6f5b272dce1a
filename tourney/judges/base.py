"""A judge family as plain data: prompt templates, verdict strings and sampling defaults, with generic render/parse."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
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
    itself, so a verdict counts only after the last ``</think>``, and an output without one has no verdict (a judge
    also reads this from its model's template, ``tourney.judge``, and turns it on when the template opens one).
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
    sampling_set: tuple[str, ...] = ()  # the keys a custom family's file sets (they beat a built-in model's defaults)

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
        answer = after_thinking(text, self.thinks) if finished else None
        found = verdict_end(answer, verdict_forms(self.verdicts)) if answer is not None else None
        if found is None or ends_by_quoting(text, quoted, found[1]):
            return None
        return found[2]

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


# What may follow a final verdict besides whitespace and end tokens: sentence punctuation, markdown emphasis and code
# marks, LaTeX math delimiters ("**\boxed{Assistant 1}**.", "$\boxed{Assistant 2}$"). Never letters or digits, so
# "\boxed{Assistant 1} ok" stays without a verdict.
TRAILING = ".!,;:*_`$"


def endings(text: str) -> Iterator[str]:
    """``text``, then ``text`` with one more tolerated layer (whitespace, an end token, a TRAILING mark) cut off.

    Every stage is offered, so a custom verdict that itself ends with a tolerated mark (``"FINAL: A."``) still matches
    before that mark is cut.
    """
    while True:
        yield text
        stripped = strip_end(text)
        if stripped == text and text and text[-1] in TRAILING:
            stripped = text[:-1]
        if stripped == text:
            return
        text = stripped


# A string that ends an output with a verdict, its side, and for a bare core: the rival core and the opening tag,
# either of which voids it ("[[A]] or [[B]]"; "<answer>[[A]]" is an unfinished verdict, not a bare one).
Form = tuple[str, Verdict, str, str]


def verdict_forms(verdicts: tuple[str, str]) -> list[Form]:
    """The strings that end an output with a verdict, longest first.

    The family's verdict strings, and for verdicts wrapped in one tag pair (RM-R1's ``<answer>[[A]]</answer>``) the
    bare core too: RM-R1's own evaluation reads ``[[A]]`` without the tags. As there, a bare core is void when the
    other side's core appears anywhere in the answer ("[[A]] or [[B]]" decides nothing), and when it follows its own
    opening tag (``<answer>[[A]]`` is a verdict left unfinished).
    """
    forms: list[Form] = [(verdicts[0], "A", "", ""), (verdicts[1], "B", "", "")]
    cores = [re.fullmatch(r"<([A-Za-z_]\w*)>(.+)</\1>", v, re.DOTALL) for v in verdicts]
    if cores[0] and cores[1] and cores[0].group(2) != cores[1].group(2):
        a, b = cores[0].group(2), cores[1].group(2)
        forms += [(a, "A", b, f"<{cores[0].group(1)}>"), (b, "B", a, f"<{cores[1].group(1)}>")]
    return sorted(forms, key=lambda f: -len(f[0]))  # one form may end another: the longer one is what was written


def verdict_end(text: str, forms: Sequence[Form]) -> tuple[str, str, Verdict] | None:
    """(text up to the end of its final verdict, the verdict's form, the verdict), or None when it has none.

    Only the very end counts: at each stage of ``endings`` the longest form ending it wins.
    """
    for tail in endings(text):
        for form, side, rival, opener in forms:
            if tail.endswith(form):
                void = (rival and rival in text) or (opener and tail[: -len(form)].endswith(opener))
                return None if void else (tail, form, side)
    return None


def after_thinking(text: str, thinks: bool) -> str | None:
    """The text after the last ``</think>``; None when a thinking judge never closed its block (no answer yet)."""
    cut = text.rfind(THINK_END)
    if cut >= 0:
        return text[cut + len(THINK_END) :]
    return None if thinks else text


def final_verdict(text: str, verdicts: tuple[str, str], thinks: bool, finished: bool = True) -> Verdict | None:
    """Read the verdict that ends ``text`` (after the last ``</think>`` if any); anything else is None.

    Only the very end counts, so verdict strings quoted earlier (e.g. from an injected candidate) are ignored; what
    may follow it is whitespace, end tokens and TRAILING marks.
    """
    answer = after_thinking(text, thinks) if finished else None
    found = verdict_end(answer, verdict_forms(verdicts)) if answer is not None else None
    return found[2] if found else None


QUOTE_CONTEXT = 16  # characters before a verdict that must also match a candidate for the verdict to be a copy


def ends_by_quoting(text: str, candidates: Sequence[str], form: str) -> bool:
    """True when ``text`` ends with a candidate's closing verdict ``form`` AND the characters leading up to it.

    A judge writing its own verdict after its own words shares at most the verdict string with a candidate that ends
    the same way; one that shares the verdict plus the preceding ``QUOTE_CONTEXT`` characters (or the whole of a
    shorter candidate, such as a fake ``</think>`` and a verdict) is copying. Both ends are read the same tolerant
    way, so a candidate ending with ``[[A]].`` cannot slip its verdict past the check with the period.
    """
    found = verdict_end(text, [(form, "A", "", "")])
    if found is None:
        return False
    tail = found[0]
    for cand in candidates:
        own = verdict_end(cand, [(form, "A", "", "")])
        if own is None or len(own[0]) == len(form):
            continue  # a candidate that IS the bare verdict cannot be told apart from the judge writing it
        ctail = own[0]
        # Short candidates (e.g. "</think>\boxed{Assistant 1}") are compared whole, longer ones by their ending.
        if tail.endswith(ctail[-(len(form) + QUOTE_CONTEXT) :]):
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
