"""In-process vLLM judge: one engine per run, one batched generate per judge call, optional forced verdicts.

vLLM (and torch) are imported lazily inside the class, so ``import tourney.backends.vllm`` stays light.

Forced verdicts: when the judge's output has no parseable verdict (``verdict="auto"``) or always
(``verdict="logprobs"``), a second batched call feeds back prompt + the judge's own text (cut before any verdict it
already wrote; a ``</think>`` closed for thinking families) + the family's ``verdict_prefix`` and asks for ONE
token with ``logprob_token_ids=[choice A, choice B]``. vLLM returns *raw* log-probabilities for exactly those ids
(``logprobs_mode="raw_logprobs"``, the default: before temperature, top-p or any token restriction), so
``p_a = softmax(lp_A, lp_B)[0]`` is the model's own preference between the two choices, even when neither is in
the top-k. (``allowed_token_ids`` would not do: the raw log-probs ignore it, and the processed ones are
renormalized over the restricted set.)
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from tourney.errors import BackendError
from tourney.judges import Family, get_family
from tourney.models import ModelSpec, resolve_model
from tourney.types import JudgeBase, Judgment, Request

THINK_END = "</think>"
THINK_CLOSE = "\n</think>\n\n"
VERDICT_MODES = ("auto", "logprobs", "parse")
MODES = ("lockstep", "pipelined")
CPU_KVCACHE_GIB = 2
FALLBACK_SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 4096}


class VLLMJudge(JudgeBase):
    """A pairwise judge run by an in-process vLLM engine (``LLM`` for lockstep, ``AsyncLLM`` for pipelined)."""

    def __init__(
        self,
        model: str,
        family: Family | str | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        verdict: str = "auto",
        dtype: str = "auto",
        max_model_len: int | None = None,
        mode: str = "lockstep",
        seed: int = 0,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Resolve the model, start ONE engine, and fix the sampling defaults (argument > built-in > family)."""
        if verdict not in VERDICT_MODES:
            raise BackendError(f"verdict must be one of {', '.join(VERDICT_MODES)}; got {verdict!r}")
        if mode not in MODES:
            raise BackendError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.spec: ModelSpec = resolve_model(model)
        self.family = get_family(family if family is not None else (self.spec.family or "rm-r1"))
        fam = {**FALLBACK_SAMPLING, **self.family.sampling}
        self.temperature = float(temperature if temperature is not None else fam["temperature"])
        self.top_p = float(top_p if top_p is not None else fam["top_p"])
        self.max_tokens = int(max_tokens or self.spec.max_tokens or fam["max_tokens"])
        self.verdict = verdict
        self.dtype = self.spec.dtype if dtype == "auto" else dtype
        self.mode, self.seed = mode, seed
        self._llm: Any = None
        self._async: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count()
        self._lock = threading.Lock()  # LLM is not thread-safe; ajudge in lockstep mode runs judge in threads
        self._engine_args = (max_model_len or self.spec.max_model_len, dict(engine_kwargs or {}))
        self._closed = False
        # The tokenizer is enough for identity, prompts and verdict tokens; the engine starts on the first judgment
        # that is not cached, so a fully cached re-run never pays vLLM's start-up.
        self.tokenizer = load_tokenizer(self.spec)
        if not getattr(self.tokenizer, "chat_template", None):
            raise BackendError(f"judge model {self.spec.name!r} has no chat template in its tokenizer")
        self._prefix_text, self._choice_ids = ("", None)
        if verdict != "parse":
            self._prefix_text, self._choice_ids = verdict_tokens(self.tokenizer, self.family)

    def start(self) -> None:
        """Start the engine now (it otherwise starts on the first judgment); safe to call again."""
        with self._lock:
            if self._closed:
                raise BackendError("the vLLM judge is closed")
            if self._llm is None and self._async is None:
                self._start_engine(*self._engine_args)

    # ---- engine life cycle -------------------------------------------------------------------------------------

    def _start_engine(self, max_model_len: int | None, extra: dict[str, Any]) -> None:
        """Build the engine; any failure to load becomes a one-line BackendError."""
        try:
            args: dict[str, Any] = {
                "model": self.spec.path,
                "dtype": self.dtype,
                "seed": self.seed,
                # Same-prompt requests are adjacent and share the judge preamble; vLLM's CPU platform supports it.
                "enable_prefix_caching": True,
                **({"max_model_len": max_model_len} if max_model_len else {}),
                **cpu_scheduling(self.spec.path, max_model_len, extra),
                **self.spec.extra,
                **extra,
            }
            if self.mode == "lockstep":
                from vllm import LLM

                self._llm = LLM(**args)
                self.max_model_len = int(self._llm.llm_engine.model_config.max_model_len)
            else:
                self._start_async(args)
        except BackendError:
            raise
        except Exception as err:  # vLLM raises many kinds here (OSError, ValueError, RuntimeError from the child)
            self._shutdown()
            raise BackendError(f"cannot load judge model {self.spec.name!r}: {one_line(err)}") from err

    def _start_async(self, args: dict[str, Any]) -> None:
        """Start AsyncLLM on a private event-loop thread, so callers on any loop (or none) can submit to it."""
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args.setdefault("disable_log_stats", True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tourney-vllm", daemon=True)
        self._thread.start()

        async def build() -> Any:
            return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))

        self._async = self._submit(build()).result()
        self.max_model_len = int(self._async.model_config.max_model_len)

    def _submit(self, coro: Any) -> Future:
        """Run a coroutine on the engine's own loop; returns a concurrent future."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def close(self) -> None:
        """Shut the engine (and its child process, and the pipelined loop thread) down; safe to call twice."""
        self._closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        """Stop whatever part of the engine is running."""
        llm, self._llm = self._llm, None
        if llm is not None:
            engine = llm.llm_engine
            for part in (getattr(engine, "renderer", None), getattr(engine, "engine_core", None)):
                if part is not None:
                    part.shutdown()
        eng, self._async = self._async, None
        loop, self._loop = self._loop, None
        if loop is not None:
            if eng is not None:
                asyncio.run_coroutine_threadsafe(_shutdown_async(eng), loop).result(timeout=120)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=30)
            loop.close()
        del llm, eng
        import gc

        gc.collect()

    def __enter__(self) -> VLLMJudge:
        """Use the judge as a context manager that closes the engine."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the engine."""
        self.close()

    # ---- identity ----------------------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """Return everything that shapes the output: model, chat template, family, sampling, verdict mode, dtype."""
        template = getattr(self.tokenizer, "chat_template", "") or ""
        return {
            "backend": "vllm",
            "model": {"name": self.spec.name, "basename": Path(self.spec.path).name},
            "chat_template": hashlib.sha256(template.encode()).hexdigest()[:16],
            "family": self.family.identity(),
            "sampling": {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens},
            "verdict": self.verdict,
            "dtype": self.dtype,
            "max_model_len": self._engine_args[0],  # cuts long forced-verdict prompts, so it can change P(A)
        }

    # ---- judging -----------------------------------------------------------------------------------------------

    def judge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Judge a batch with ONE batched generate (plus one for forced verdicts); results in request order."""
        self._ensure_started()
        if self.mode == "pipelined":
            return self._submit(self._ajudge(self.prompt_ids(requests), requests)).result()
        texts = self.prompt_texts(requests)
        if not texts:
            return []
        with self._lock:
            return self._judge_locked(requests, texts)

    def _judge_locked(self, requests: Sequence[Request], texts: list[str]) -> list[Judgment]:
        """The lockstep body of judge(): one generate for all, then one for the verdicts to force."""
        params = [self.sampling(r) for r in requests]
        # Text prompts: vLLM tokenizes each one just before adding it, while the engine process already works on
        # the ones before it (token ids made up front would serialize tokenizing and generating). The template
        # already wrote BOS and friends, so the tokenizer must not add them again.
        outs = self._llm.generate([{"prompt": t} for t in texts], params, use_tqdm=False,
                                  tokenization_kwargs={"add_special_tokens": False})  # fmt: skip
        prompts = [list(o.prompt_token_ids or ()) for o in outs]
        firsts = [first_result(o) | {"quoted": (r.a, r.b)} for o, r in zip(outs, requests)]
        todo = [i for i, f in enumerate(firsts) if self._should_force(f)]
        forced: dict[int, Any] = {}
        if todo:
            fprompts = [self.forced_prompt(prompts[i], firsts[i]["text"]) for i in todo]
            fouts = self._llm.generate(
                [tokens_prompt(p) for p in fprompts], [self.forced_sampling()] * len(todo), use_tqdm=False
            )
            forced = dict(zip(todo, fouts))
        return [self._judgment(f, forced.get(i)) for i, f in enumerate(firsts)]

    async def ajudge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Judge a batch on the async engine; concurrent calls share the engine (pipelined mode only)."""
        if self.mode != "pipelined":
            return await asyncio.to_thread(self.judge, list(requests))
        self._ensure_started()
        prompts = self.prompt_ids(requests)
        return await asyncio.wrap_future(self._submit(self._ajudge(prompts, requests)))

    async def _ajudge(self, prompts: list[list[int]], requests: Sequence[Request]) -> list[Judgment]:
        """On the engine loop: submit every request at once; each forces its own verdict as soon as it finishes."""
        return list(await asyncio.gather(*(self._one(p, r) for p, r in zip(prompts, requests))))

    async def _one(self, prompt: list[int], request: Request) -> Judgment:
        """Generate one judgment (and its forced verdict if needed) on the async engine."""
        first = first_result(await self._agenerate(prompt, self.sampling(request))) | {"quoted": (request.a, request.b)}
        forced = None
        if self._should_force(first):
            forced = await self._agenerate(self.forced_prompt(prompt, first["text"]), self.forced_sampling())
        return self._judgment(first, forced)

    async def _agenerate(self, prompt: list[int], params: Any) -> Any:
        """Run one request to completion on AsyncLLM and return its final RequestOutput."""
        from vllm.sampling_params import RequestOutputKind

        params.output_kind = RequestOutputKind.FINAL_ONLY
        final = None
        async for out in self._async.generate(tokens_prompt(prompt), params, request_id=f"tourney-{next(self._ids)}"):
            final = out
        return final

    def _ensure_started(self) -> None:
        """Refuse to judge after close(); start the engine on first use."""
        if self._llm is None and self._async is None:
            self.start()

    # ---- prompts and sampling ----------------------------------------------------------------------------------

    def prompt_texts(self, requests: Sequence[Request]) -> list[str]:
        """Render each request with the family and the judge's own chat template; reject prompts that cannot fit."""
        texts = [
            self.tokenizer.apply_chat_template(self.family.render(r.prompt, r.a, r.b), tokenize=False,
                                               add_generation_prompt=True)
            for r in requests
        ]  # fmt: skip
        for i, text in enumerate(texts):
            # A token covers at least one UTF-8 byte, so only texts longer in bytes than the context need counting.
            if len(text.encode()) + 1 > self.max_model_len:
                self.check_length(i, self.encode(text))
        return texts

    def prompt_ids(self, requests: Sequence[Request]) -> list[list[int]]:
        """Render and tokenize each request (one batched tokenizer call); reject prompts that cannot fit."""
        texts = self.prompt_texts(requests)
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        return [list(ids) for ids in encoded]

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (the template already wrote BOS etc., so add no special tokens)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def check_length(self, index: int, ids: list[int]) -> None:
        """Raise a BackendError naming the request when its prompt leaves no room to generate."""
        if len(ids) + 1 > self.max_model_len:
            raise BackendError(
                f"request {index}: judge prompt has {len(ids)} tokens, more than the context allows "
                f"(max_model_len {self.max_model_len}, at least 1 token to generate)",
                index=index,
            )

    def sampling(self, request: Request) -> Any:
        """Per-request sampling parameters; the request's own seed makes its output independent of the batch."""
        from vllm import SamplingParams

        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=request.seed if self.temperature > 0 else None,  # greedy needs no generator
        )

    def forced_sampling(self) -> Any:
        """One greedy token with the raw log-probs of exactly the two choice tokens."""
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=list(self._choice_ids or ()))

    def forced_prompt(self, prompt: list[int], text: str) -> list[int]:
        """Prompt + the judge's text up to any verdict it began + ``</think>`` if still thinking + verdict prefix."""
        body, closing = forced_text(self.family, self._prefix_text, text)

        def enc(part: str) -> list[int]:
            return list(self.tokenizer.encode(part, add_special_tokens=False))

        tail = enc(body + closing)
        budget = self.max_model_len - len(prompt) - 1
        if len(tail) > budget:  # keep the prompt and the closing; drop the end of the reasoning that does not fit
            close_ids = enc(closing)
            tail = enc(body)[: max(budget - len(close_ids), 0)] + close_ids
        return prompt + tail

    # ---- results -----------------------------------------------------------------------------------------------

    def _should_force(self, first: dict[str, Any]) -> bool:
        """Force when asked always, or (auto) when the output has no readable verdict."""
        if self.verdict == "logprobs":
            return True
        return (
            self.verdict == "auto"
            and self.family.parse(first["text"], first["finished"], first.get("quoted", ())) is None
        )

    def _judgment(self, first: dict[str, Any], forced: Any) -> Judgment:
        """Combine the judge's output and the optional forced-verdict output into one Judgment."""
        verdict = self.family.parse(first["text"], first["finished"], first.get("quoted", ()))
        common = {"raw": first["text"], "finish_reason": first["finish_reason"]}
        if forced is None:
            p_a = None if verdict is None else (1.0 if verdict == "A" else 0.0)
            return Judgment(
                verdict,
                p_a,
                prompt_tokens=first["prompt_tokens"],
                completion_tokens=first["completion_tokens"],
                **common,
            )
        p_a = choice_probability(forced.outputs[0].logprobs, self._choice_ids)
        soft = None if p_a is None or p_a == 0.5 else ("A" if p_a > 0.5 else "B")
        return Judgment(
            soft,
            p_a,
            prompt_tokens=first["prompt_tokens"] + len(forced.prompt_token_ids or ()),
            completion_tokens=first["completion_tokens"] + len(forced.outputs[0].token_ids),
            forced=True,
            **common,
        )


def load_tokenizer(spec: ModelSpec) -> Any:
    """Load the judge's own tokenizer (the one vLLM uses) without starting an engine."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(spec.path)
    except Exception as err:  # missing files, no hub access, unknown repo: all one line
        raise BackendError(f"cannot load judge model {spec.name!r}: {one_line(err)}") from err


def cpu_scheduling(path: str, max_model_len: int | None, extra: dict[str, Any]) -> dict[str, Any]:
    """On vLLM's CPU platform, turn chunked prefill off: seeded sampling plus a split prefill kills the engine.

    (vLLM 0.32 rewinds a seeded request's generator after a partial-prefill step with ``Generator.set_offset``,
    which CPU generators lack: "CPU Generator does not use offset".) Whole prompts then need a batch budget of at
    least the context length.
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    # vLLM's CPU default is to claim ~92% of the node's memory for the KV cache, which fails as soon as anything
    # else holds memory; a judge of prompts this size needs a few GiB. VLLM_CPU_KVCACHE_SPACE (GiB) overrides it.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KVCACHE_GIB))
    if "enable_chunked_prefill" in extra:
        return {}
    if max_model_len is None:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(path)
        max_model_len = int(getattr(cfg.get_text_config(), "max_position_embeddings", 0) or 0)
    return {"enable_chunked_prefill": False, "max_num_batched_tokens": max(max_model_len, 4096)}


def verdict_tokens(tokenizer: Any, family: Family) -> tuple[str, tuple[int, int]]:
    """Return (prefix to write, (choice A id, choice B id)): the choices must be ONE token right after the prefix.

    A trailing space of the prefix may join the choice token: byte-level BPE writes ``"Assistant 1"`` as
    ``Assistant`` + `` 1``; the forced prompt then ends with ``"\\boxed{Assistant"``, the choices are `` 1``/`` 2``.
    """
    for prefix in dict.fromkeys((family.verdict_prefix, family.verdict_prefix.rstrip())):
        gap = family.verdict_prefix[len(prefix) :]
        base = list(tokenizer.encode(prefix, add_special_tokens=False))
        ids = []
        for choice in family.choices:
            full = list(tokenizer.encode(prefix + gap + choice, add_special_tokens=False))
            if full[: len(base)] == base and len(full) == len(base) + 1:
                ids.append(full[-1])
        if len(ids) == 2 and ids[0] != ids[1]:
            return prefix, (ids[0], ids[1])
    raise BackendError(
        f"family {family.name}: choices {family.choices} are not single tokens after {family.verdict_prefix!r} "
        "for this model's tokenizer; use verdict='parse'"
    )


def forced_text(family: Family, prefix: str, text: str) -> tuple[str, str]:
    """Split what a forced call appends into the judge's kept text and the closing (``</think>``, verdict prefix)."""
    end = text.rfind(THINK_END)
    if family.thinks and end < 0:  # still thinking: close the block; a verdict "written" inside it is no verdict
        return text, THINK_CLOSE + prefix
    cut = text.rfind(prefix, max(end, 0))  # the judge began a verdict (maybe an invalid one): force from there
    body = text[:cut] if cut >= 0 else text
    return body, ("\n" if body and not body[-1].isspace() else "") + prefix


async def _shutdown_async(engine: Any) -> None:
    """Shut AsyncLLM down from its own loop (its output handler task lives there)."""
    engine.shutdown()


def tokens_prompt(ids: list[int]) -> dict[str, Any]:
    """Wrap token ids as a vLLM TokensPrompt (a TypedDict, so a plain dict)."""
    return {"prompt_token_ids": ids}


def first_result(out: Any) -> dict[str, Any]:
    """Pull what a Judgment needs from a vLLM RequestOutput."""
    comp = out.outputs[0]
    reason = comp.finish_reason or "length"
    return {
        "text": comp.text,
        "finish_reason": reason,
        "finished": reason == "stop",
        "prompt_tokens": len(out.prompt_token_ids or ()),
        "completion_tokens": len(comp.token_ids),
    }


def choice_probability(logprobs: Any, choice_ids: tuple[int, int] | None) -> float | None:
    """P(A) = softmax over the two choices' raw log-probs at the single forced position; None if missing."""
    if not logprobs or choice_ids is None:
        return None
    step = logprobs[0]
    lp = [step[t].logprob if t in step else None for t in choice_ids]
    if lp[0] is None or lp[1] is None or (math.isinf(lp[0]) and math.isinf(lp[1])):
        return None
    return 1.0 / (1.0 + math.exp(min(lp[1] - lp[0], 700.0)))


def one_line(err: BaseException) -> str:
    """The first non-empty line of an exception message (vLLM's can be long), with the type as a fallback."""
    cause: BaseException | None = err
    while cause is not None:
        for line in str(cause).splitlines():
            if line.strip():
                return line.strip()[:300]
        cause = cause.__cause__
    return type(err).__name__
