"""A pairwise judge = a judge family (prompt + verdict parser) + a backend (an LLM client).

The family renders each pair as chat messages; the backend generates the judge's reasoning; the family's parser reads
the verdict that ends it; unparseable outputs are forced from log-probabilities (``tourney.forcing``). A backend that
batches (vLLM's ``LLM.generate``) gets a whole batch per call, once for the generations and once for the verdicts to
force; the others (vLLM's async engine, servers) get one request at a time, each forced as soon as it finishes.

Whether the judge thinks is read from its chat template once the backend's tokenizer is known: a generation prompt
that opens ``<think>`` without closing it (the DeepSeek-R1-Distill templates of RM-R1 distilled and RRM) makes the
judge's family a thinking one for parsing, forcing and the cache key, whatever the family declares for its texts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from tourney.aio import gather_all
from tourney.backends.base import BackendBase, Chat, Generation, Sampling, Scored
from tourney.errors import BackendError
from tourney.forcing import THINK_END, THINK_START, check_verdict, forced_prompt, forced_text, two_way, verdict_tokens
from tourney.judges import Family
from tourney.types import JudgeBase, Judgment, Prompt, Request

Forced = tuple[float | None, Scored]


class PairwiseJudge(JudgeBase):
    """Judges pairs with the family's prompts on the backend; ``sampling`` (seed unused) applies to every request."""

    def __init__(self, family: Family, backend: BackendBase, sampling: Sampling, verdict: str = "auto") -> None:
        """Keep the parts; nothing loads until the first judgment that is not cached."""
        self.family, self.backend, self.sampling, self.verdict = family, backend, sampling, check_verdict(verdict)
        self._choices: tuple[str, tuple[int, int]] | None = None  # verdict prefix and choice token ids
        self._ready = False
        self._thinking_read = False  # whether the template was asked if it opens <think> (see _read_thinking)
        self._ready_lock = asyncio.Lock()
        self.status: Callable[[str], None] | None = None  # told when the model starts loading, e.g. a progress bar
        self.notice: Callable[[str], None] | None = None  # told when a server does not answer yet at start-up
        if getattr(backend, "pool", None) is not None:  # servers: retries before the first judgment are shown
            backend.pool.on_retry = self._retrying  # type: ignore[attr-defined]

    def identity(self) -> dict[str, Any]:
        """The backend's model identity plus the family's texts, the sampling and the verdict mode.

        The family's ``thinks`` is the one read from the template, so thinking and non-thinking runs never share a
        cache entry (a server judge may ask its server where the model's tokenizer is).
        """
        if not self._thinking_read:
            self.backend.loop.run(self._read_thinking())
        return self.backend.identity() | {
            "family": self.family.identity(),
            "sampling": self.sampling.identity(),  # every field: a penalty or top-k changes the verdicts
            "verdict": self.verdict,
        }

    def describe(self) -> str:
        """The model's name as the user gave it."""
        return self.backend.describe()

    def prompt_tokens(self, prompt: Prompt, a: str, b: str) -> int:
        """How many tokens the judge prompt for (a, b) takes (the backend's tokenizer; vLLM servers are asked)."""
        return len(self.backend.loop.run(self.backend.chat_ids(self.family.render(prompt, a, b))))

    def start(self) -> None:
        """Load the model (or check the servers) now; otherwise that happens on the first judgment not cached."""
        self.backend.loop.run(self._ensure_ready())

    def judge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Judge a batch from plain code; results in request order."""
        return self.backend.loop.run(self._judge(list(requests)))

    async def ajudge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Judge a batch from any event loop; concurrent calls share the backend."""
        return await self.backend.loop.wrap(self._judge(list(requests)))

    def retries(self) -> int:
        """The backend's retried calls so far."""
        return self.backend.retries

    def _retrying(self, text: str) -> None:
        """A server call is retried: say so while nothing is judged yet (a server still loading, a wrong URL)."""
        if not self._ready and self.notice is not None:
            self.notice(text)

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()

    def with_max_tokens(self, max_tokens: int) -> PairwiseJudge:
        """The same judge on the same backend (the model loads once) with another token budget, and so another
        identity: a sweep over budgets shares one engine and caches each budget's judgments apart."""
        other = PairwiseJudge(self.family, self.backend, replace(self.sampling, max_tokens=max_tokens), self.verdict)
        other.status, other.notice, other._thinking_read = self.status, self.notice, self._thinking_read
        return other

    # ---- on the backend's loop ---------------------------------------------------------------------------------

    async def _judge(self, requests: list[Request]) -> list[Judgment]:
        """Render every request (input errors first), then judge them as one batch or one by one."""
        messages = [self.family.render(r.prompt, r.a, r.b) for r in requests]
        if not requests:
            return []
        await self._ensure_ready()
        if self.backend.batched:
            return await self._batch(requests, messages)
        parts = await gather_all([self._batch([r], [m], offset=i) for i, (r, m) in enumerate(zip(requests, messages))])
        return [j for part in parts for j in part]

    async def _ensure_ready(self) -> None:
        """Start the backend and find the verdict's choice tokens, once."""
        async with self._ready_lock:
            if self._ready:
                return
            if self.status is not None:
                self.status(f"starting {self.backend.label()} ({self.describe()})")
            await self.backend.start()
            await self._read_thinking()
            if self.verdict != "parse":
                self._choices = await verdict_tokens(self.backend, self.family)
                if self._choices is None and self.verdict == "logprobs":
                    raise BackendError(self._no_tokenizer())
            self._ready = True
            if self.status is not None:
                self.status("judging")  # the engine is up: the bar says so before the first batch comes back

    async def _read_thinking(self) -> None:
        """Once: when the template's generation prompt opens ``<think>`` and leaves it open, the judge thinks."""
        if self._thinking_read:
            return
        tokenizer = await backend_tokenizer(self.backend)
        if tokenizer is not None and not self.family.thinks:
            if template_thinks(tokenizer, self.family.render("?", "a", "b")):
                self.family = replace(self.family, thinks=True)
        self._thinking_read = True

    def _no_tokenizer(self) -> str:
        """The one line refusing to force without the judge's tokenizer (forced prompts are rendered locally)."""
        why = getattr(self.backend, "tokenizer_missing", "") or "the backend has no tokenizer"
        return (f"forced verdicts need the judge's tokenizer (the forced prompt is rendered here, never through a chat "
                f"prefill), and {why}; use --verdict parse, or serve the model under its local folder or hub id "
                "(vLLM: --served-model-name) so tourney can load its tokenizer")  # fmt: skip

    async def _batch(self, requests: list[Request], messages: Sequence[Chat], offset: int = 0) -> list[Judgment]:
        """Generate for every request, then force the verdicts that need it, in one backend call each."""
        params = [replace(self.sampling, seed=r.seed) for r in requests]
        try:
            gens = await self.backend.generate(messages, params)
        except BackendError as err:
            raise located(err, offset) from None
        todo = [i for i, (g, r) in enumerate(zip(gens, requests)) if self._should_force(g, r)]
        try:
            forced = dict(zip(todo, await self._force([messages[i] for i in todo], [gens[i] for i in todo])))
        except BackendError as err:
            raise located(err, offset, todo) from None
        return [self._judgment(g, r, forced.get(i)) for i, (g, r) in enumerate(zip(gens, requests))]

    async def _force(self, messages: list[Chat], gens: list[Generation]) -> list[Forced]:
        """P(A) for each generation from the next-token log-probs after its text and the verdict prefix."""
        if not gens:
            return []
        if self._choices is None:
            # Never prefill an assistant turn through the template instead: R1-style templates drop the reasoning.
            raise BackendError(self._no_tokenizer())
        prefix, ids = self._choices
        prompts = []
        for m, g in zip(messages, gens):
            prompt = g.prompt_ids if g.prompt_ids is not None else await self.backend.chat_ids(m)
            prompts.append(await forced_prompt(self.backend, prompt, *forced_text(self.family, prefix, g.text)))
        scored = await self.backend.next_token_logprobs(prompts, ids)
        return [(two_way(*s.logprobs), s) for s in scored]

    def _should_force(self, gen: Generation, request: Request) -> bool:
        """Force when asked always, or (auto) when the output has no readable verdict."""
        if self.verdict != "auto":
            return self.verdict == "logprobs"
        return self.family.parse(gen.text, gen.finish_reason == "stop", (request.a, request.b)) is None

    def _judgment(self, gen: Generation, request: Request, forced: Forced | None) -> Judgment:
        """Turn the judge's output, and the forced verdict if any, into one Judgment."""
        if forced is None:
            verdict = self.family.parse(gen.text, gen.finish_reason == "stop", (request.a, request.b))
            p_a = None if verdict is None else (1.0 if verdict == "A" else 0.0)
            return Judgment(verdict, p_a, gen.text, gen.finish_reason, gen.prompt_tokens, gen.completion_tokens)
        p_a, cost = forced
        soft = None if p_a is None or p_a == 0.5 else ("A" if p_a > 0.5 else "B")
        return Judgment(soft, p_a, gen.text, gen.finish_reason, gen.prompt_tokens + cost.prompt_tokens,
                        gen.completion_tokens + cost.completion_tokens, forced=True)  # fmt: skip


def located(err: BackendError, offset: int, positions: Sequence[int] | None = None) -> BackendError:
    """Point a backend error at its request in the judge's batch (``positions`` maps a sub-batch's indices)."""
    if err.index is None:
        return err
    index = offset + (positions[err.index] if positions is not None else err.index)
    return BackendError(f"request {index}: {err}", index)


async def backend_tokenizer(backend: BackendBase) -> Any:
    """The backend's Hugging Face tokenizer (a server backend may have to look for it), or None."""
    find = getattr(backend, "find_tokenizer", None)
    if find is not None:
        return await find()
    return getattr(backend, "tokenizer", None)


def template_thinks(tokenizer: Any, messages: Chat) -> bool:
    """Whether the chat template's generation prompt opens a ``<think>`` block it does not close."""
    with_prompt = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=False)
    # The generation prompt is what the flag adds; a template that renders otherwise is read whole.
    added = with_prompt[len(without) :] if with_prompt.startswith(without) else with_prompt
    return added.rfind(THINK_START) > added.rfind(THINK_END)
