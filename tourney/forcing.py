"""Forced verdicts, once for every backend: a soft P(A better) read from the judge's next-token log-probabilities.

When a judge's output has no readable verdict (``verdict="auto"``) or always (``"logprobs"``), the judge's own text is
fed back — cut before any verdict it began, with ``</think>`` closed for a thinking family still inside its block (a
verdict "written" in there is no verdict, so the whole reasoning is kept) — followed by the family's verdict prefix,
and the model is asked for ONE next token:

The forced prompt is rendered HERE with the judge's own tokenizer: the chat template on the judge's turns with the
generation prompt, then the ids of the judge's text, the closing ``</think>`` when needed and the verdict prefix (its
trailing space kept). It goes to the model as token ids (in-process, and ``/v1/completions`` on servers: a text prompt
would be tokenized again there, with BOS added and other merges at the seams), and the raw log-probabilities of exactly
the two choice tokens come back (``logprob_token_ids``; before temperature, top-p or any restriction), so
``P(A) = softmax(lp_A, lp_B)[0]`` is the model's own preference even when neither choice is in its top-k. When the
reasoning does not fit the context, its end is dropped; the prompt and the closing are kept.

It never goes through an assistant prefill rendered by the chat template: R1-style templates delete everything before
``</think>`` from an assistant turn (the reasoning vanishes) and strip the prefix's trailing space. Without the
judge's tokenizer (a served name that is no local folder or hub id), forcing is refused with one line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tourney.backends.base import BackendBase
from tourney.errors import BackendError, InputError
from tourney.judges import Family

THINK_START = "<think>"
THINK_END = "</think>"
THINK_CLOSE = "\n</think>\n\n"
VERDICT_MODES = ("auto", "logprobs", "parse")  # auto: force when unparseable; logprobs: always; parse: never


def check_verdict(verdict: str) -> str:
    """Return ``verdict`` when it is a verdict mode; otherwise an InputError naming it (the one check of it)."""
    if verdict not in VERDICT_MODES:
        raise InputError(f"verdict must be one of {', '.join(VERDICT_MODES)}; got {verdict!r}", field="--verdict")
    return verdict


def forced_text(family: Family, prefix: str, text: str) -> tuple[str, str]:
    """Split what a forced call appends into the judge's kept text and the closing (``</think>``, verdict prefix)."""
    end = text.rfind(THINK_END)
    if family.thinks and end < 0:  # still thinking: close the block; a verdict "written" inside it is no verdict
        return text, THINK_CLOSE + prefix
    cut = text.rfind(prefix, max(end, 0)) if prefix else -1  # the judge began a verdict: force from there
    body = text[:cut] if cut >= 0 else text
    return body, ("\n" if body and not body[-1].isspace() else "") + prefix


async def verdict_tokens(backend: BackendBase, family: Family) -> tuple[str, tuple[int, int]] | None:
    """Return (prefix to write, (choice A id, choice B id)), or None when the backend has no token ids.

    The choices must be ONE token right after the prefix. A trailing space of the prefix may join the choice token:
    byte-level BPE writes ``"Assistant 1"`` as ``Assistant`` + `` 1``; the forced prompt then ends with
    ``"\\boxed{Assistant"`` and the choices are `` 1``/`` 2``.
    """
    for prefix in dict.fromkeys((family.verdict_prefix, family.verdict_prefix.rstrip())):
        gap = family.verdict_prefix[len(prefix) :]
        base = await backend.tokenize_if_able(prefix)
        if base is None:
            return None
        ids = []
        for choice in family.choices:
            full = await backend.tokenize(prefix + gap + choice)
            if full[: len(base)] == base and len(full) == len(base) + 1:
                ids.append(full[-1])
        if len(ids) == 2 and ids[0] != ids[1]:
            return prefix, (ids[0], ids[1])
    raise BackendError(
        f"family {family.name}: choices {family.choices} are not single tokens after {family.verdict_prefix!r} "
        "for this model's tokenizer; use verdict='parse'"
    )


async def forced_prompt(backend: BackendBase, prompt: Sequence[int], body: str, closing: str) -> list[int]:
    """Prompt ids + the ids of body and closing; the end of the body is dropped when the context cannot hold it."""
    tail = await backend.tokenize(body + closing)
    budget = backend.max_model_len - len(prompt) - 1
    if backend.max_model_len and len(tail) > budget:
        close_ids = await backend.tokenize(closing)
        tail = (await backend.tokenize(body))[: max(budget - len(close_ids), 0)] + close_ids
    return [*prompt, *tail]


def two_way(lp_a: float | None, lp_b: float | None) -> float | None:
    """P(A) = softmax(lp_a, lp_b)[0]; None when either is missing or both are -inf."""
    if lp_a is None or lp_b is None or (math.isinf(lp_a) and math.isinf(lp_b)):
        return None
    return 1.0 / (1.0 + math.exp(min(lp_b - lp_a, 700.0)))
