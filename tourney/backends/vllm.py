"""The in-process vLLM backend: one engine per run, started on the first call that needs it.

``mode="lockstep"`` runs ``LLM``: a batch is ONE ``generate`` call. ``mode="pipelined"`` runs ``AsyncLLM``: requests
stream in and out while others run, so a tournament moves on as soon as its own matches are judged. Both run on the
backend's private event-loop thread. vLLM (and torch) are imported lazily, so importing this module stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import itertools
import os
import re
import stat
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tourney.aio import LoopThread, T, gather_all
from tourney.backends.base import BackendBase, Chat, Generation, Sampling, Scored
from tourney.backends.guard import Guard
from tourney.console import vllm_logs_off_stdout
from tourney.errors import BackendError, InputError
from tourney.models import ModelSpec, check_hub, resolve_model

MODES = ("lockstep", "pipelined")
CPU_KVCACHE_GIB = 2
CONTEXT_STEP = 256  # a fitted context is rounded up to a multiple of this
FORCE_ROOM = 64  # tokens a forced verdict adds after a full-length generation (closing tag, verdict prefix, choice)


class VLLMBackend(BackendBase):
    """A model on an in-process vLLM engine (``LLM`` for lockstep, ``AsyncLLM`` for pipelined)."""

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        mode: str = "lockstep",
        seed: int = 0,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Resolve the model and load its tokenizer; the engine starts on the first call that needs it."""
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}; got {mode!r}", field="--mode")
        self.spec: ModelSpec = resolve_model(model)
        self.dtype = self.spec.dtype if dtype == "auto" else dtype
        self.mode, self.seed, self.batched = mode, seed, mode == "lockstep"
        self.context = max_model_len or self.spec.max_model_len  # asked for; max_model_len is what the engine has
        self.fitted: int | None = None  # without a context asked for: what the work needs (``fit_context``)
        self.parallel: dict[str, Any] = {"tensor_parallel_size": tensor_parallel_size}
        if gpu_memory_utilization is not None:
            self.parallel["gpu_memory_utilization"] = gpu_memory_utilization
        self.engine_kwargs = {**self.spec.extra, **(engine_kwargs or {})}
        self.loop = LoopThread("tourney-vllm")
        self._llm: Any = None
        self._async: Any = None
        self._start_lock = asyncio.Lock()
        self._guard: Guard | None = None  # ends the engine's processes if tourney dies without closing it
        self._watching = threading.Event()  # set: stop watching the lockstep engine for its death
        self._death: asyncio.Future[None] | None = None  # done when the pipelined engine is marked dead
        self._ids = itertools.count()
        # The tokenizer is enough for identity and prompts: a fully cached re-run never pays vLLM's start-up.
        self.tokenizer = load_tokenizer(self.spec)
        if not getattr(self.tokenizer, "chat_template", None):
            raise InputError(f"model {self.spec.name!r} has no chat template in its tokenizer (not a chat model)")
        self.check_fit(tensor_parallel_size)

    def identity(self) -> dict[str, Any]:
        """Model name and directory name, chat template, dtype and context (it cuts long forced prompts)."""
        template = getattr(self.tokenizer, "chat_template", "") or ""
        return {
            "backend": "vllm",
            "model": {"name": self.spec.name, "basename": Path(self.spec.path).name},
            "chat_template": hashlib.sha256(template.encode()).hexdigest()[:16],
            "dtype": self.dtype,
            "max_model_len": self.context,
        }

    def context_limit(self) -> int:
        """The longest context the engine can have: what it has, else asked for or the built-in's, else the model's."""
        if self.max_model_len:
            return self.max_model_len
        if self.context:
            return self.context
        return self.model_limit()

    def model_limit(self) -> int:
        """The model's own limit as vLLM derives it (0: not stated), read once: the config's positions, times its RoPE
        scaling factor (``rope_factor``), at most the tokenizer's ``model_max_length``."""
        if not hasattr(self, "_model_limit"):
            text = self.text_config()
            limit = float(getattr(text, "max_position_embeddings", 0) or 0) * rope_factor(text)
            limit = min(limit, float(getattr(self.tokenizer, "model_max_length", limit) or limit))
            self._model_limit = int(limit)
        return self._model_limit

    def check_fit(self, tensor_parallel_size: int) -> None:
        """Refuse, before any engine starts (and in a dry run), a context the model does not have and a tensor-parallel
        size that does not divide its attention heads: vLLM finds both only after loading, and stops with a trace."""
        try:
            context, limit = self.context or 0, self.model_limit() if self.context else 0
            heads = int(getattr(self.text_config(), "num_attention_heads", 0) or 0) if tensor_parallel_size > 1 else 0
        except Exception:  # a configuration transformers cannot read: vLLM's own start says what is wrong
            return
        allowed = os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "").strip().lower() in ("1", "true")  # vLLM's reading
        if limit and context > limit and not allowed:
            raise InputError(f"{context} is more than model {self.spec.name!r} has ({limit} positions; "
                             "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 allows it)", field="--max-model-len")  # fmt: skip
        if heads and heads % tensor_parallel_size:
            raise InputError(f"{tensor_parallel_size} does not divide the {heads} attention heads of model "
                             f"{self.spec.name!r}", field="--tensor-parallel-size")  # fmt: skip

    def text_config(self) -> Any:
        """The model's (text) configuration, read once."""
        if not hasattr(self, "_text_config"):
            from transformers import AutoConfig

            self._text_config = AutoConfig.from_pretrained(self.spec.path).get_text_config()
        return self._text_config

    def starting(self) -> bool:
        """Whether the engine is being built now (another thread may ask: a Ctrl-C says why it waits)."""
        return self._start_lock.locked()

    def fittable(self) -> bool:
        """Whether ``fit_context`` can still size the engine: no context asked for, engine not started."""
        return not (self.context or self.max_model_len)

    def fit_context(self, needed: int) -> int | None:
        """Size the engine's context for the work: ``needed`` tokens (longest prompt + max_tokens), rounded up.

        Only when no context was asked for and the engine has not started; the model's limit caps it (a 32B judge
        on one GPU then does not reserve KV cache for 131k positions it never uses). Calls add up: the largest wins.
        Returns the context the engine will get (None: not fitted).
        """
        if not self.fittable():
            return None
        want = -(-(needed + FORCE_ROOM) // CONTEXT_STEP) * CONTEXT_STEP
        limit = self.model_limit()
        self.fitted = max(self.fitted or 0, min(want, limit) if limit else want)
        return self.fitted

    def fit_prompts(self, texts: Sequence[str], max_tokens: int) -> int | None:
        """``fit_context`` for the longest of the rendered prompts ``texts`` + ``max_tokens`` (a policy's). Longest
        first, and a token covers at least one UTF-8 byte: only prompts longer in bytes than the longest in tokens are
        counted."""
        if not self.fittable() or not texts:
            return None
        longest = 0
        for text in sorted(texts, key=lambda t: -len(t.encode())):
            if len(text.encode()) <= longest:
                break
            longest = max(longest, len(self.tokenizer.encode(text, add_special_tokens=False)))
        return self.fit_context(longest + max_tokens)

    def too_long(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """(index, tokens) of the rendered prompts that leave no token to generate within ``context_limit()``, before
        the engine starts (a token covers at least one UTF-8 byte: only prompts that long in bytes are counted)."""
        limit = self.context_limit()
        out = []
        for k, text in enumerate(texts):
            if (
                len(text.encode()) + 1 > limit
                and (n := len(self.tokenizer.encode(text, add_special_tokens=False))) + 1 > limit
            ):
                out.append((k, n))
        return out

    def engine_context(self) -> int:
        """The context the engine starts with: asked for, else fitted to the work, else the model's."""
        return self.context or self.fitted or self.model_limit()

    # ---- engine life cycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the engine once; any failure to load becomes a one-line BackendError."""
        async with self._start_lock:
            if self._llm is not None or self._async is not None:
                return
            mark = stderr_file()
            try:
                self._guard = Guard()  # from here: a kill -9 while a 32B model loads must not leave its processes
                self._build(self.engine_args())
                self._guard.started()
            except BackendError:
                await self._shutdown()
                raise
            except Exception as err:  # vLLM raises many kinds here (OSError, ValueError, RuntimeError from the child)
                await self._shutdown()
                # The engine process logs the real cause and the parent only says "Engine core initialization failed":
                # look for it in the exception chain and in the log tourney keeps.
                cause = start_failure(chain_text(err) + "\n" + log_since(mark))
                if cause and "KV cache" in cause and "VLLM_CPU_KVCACHE_SPACE" in os.environ:
                    cause += f" (on a CPU: VLLM_CPU_KVCACHE_SPACE, now {os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB)"
                raise BackendError(f"cannot load model {self.spec.name!r}: {cause or one_line(err)}") from err

    def engine_args(self) -> dict[str, Any]:
        """The engine's arguments: model, dtype, seed, prefix caching, context, CPU scheduling, extras."""
        return {
            "model": self.spec.path,
            "dtype": self.dtype,
            "seed": self.seed,
            # Same-prompt requests are adjacent and share the judge preamble; vLLM's CPU platform supports it.
            "enable_prefix_caching": True,
            **({"max_model_len": self.context or self.fitted} if self.context or self.fitted else {}),
            **self.parallel,
            **cpu_scheduling(self.engine_context, self.engine_kwargs, self.parallel["tensor_parallel_size"]),
            **self.engine_kwargs,
        }

    def _build(self, args: dict[str, Any]) -> None:
        """Build ``LLM`` (lockstep) or ``AsyncLLM`` (pipelined) on this loop's thread."""
        vllm_logs_off_stdout()
        if self.mode == "lockstep":
            from vllm import LLM

            self._llm = LLM(**args)
            self.max_model_len = int(self._llm.llm_engine.model_config.max_model_len)
            self._watching = wake_on_death(self._llm.llm_engine)
            return
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args.setdefault("disable_log_stats", True)
        self._async = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        self.max_model_len = int(self._async.model_config.max_model_len)
        self._death = asyncio.ensure_future(marked_dead(self._async))

    def close(self) -> None:
        """Shut the engine (and its child process) down and stop the loop thread; safe to call twice. Closing waits
        for an engine that is loading; a Ctrl-C during that wait ends its processes at once instead."""
        try:
            # A loading engine is waited for however long it loads (a 32B model: minutes), as Ctrl-C said it would.
            self.loop.close(self._shutdown(), timeout=None if self.starting() else 120.0)
        except KeyboardInterrupt:
            if self.starting() and self._guard is not None:
                self._guard.end()
            raise
        gc.collect()

    async def _shutdown(self) -> None:
        """Stop whatever part of the engine is running (AsyncLLM's output handler lives on this loop)."""
        self._watching.set()
        if self._death is not None:
            self._death.cancel()
        llm, self._llm = self._llm, None
        if llm is not None:
            engine = llm.llm_engine
            for part in (getattr(engine, "renderer", None), getattr(engine, "engine_core", None)):
                if part is not None:
                    part.shutdown()
        eng, self._async = self._async, None
        if eng is not None:
            eng.shutdown()
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.close()

    # ---- generation --------------------------------------------------------------------------------------------

    async def generate(self, prompts: Sequence[Chat], sampling: Sequence[Sampling]) -> list[Generation]:
        """Render with the model's chat template and generate: one batched call (lockstep) or streamed."""
        texts = [self.render(m) for m in prompts]
        for i, text in enumerate(texts):
            # A token covers at least one UTF-8 byte, so only texts longer in bytes than the context need counting.
            if len(text.encode()) + 1 > self.max_model_len:
                self.check_length(i, await self.tokenize(text))
        params = [self.sampling_params(s) for s in sampling]
        with engine_alive(self.spec.name):
            if self._llm is not None:
                # Text prompts: vLLM tokenizes each one just before adding it, while the engine process already works
                # on the ones before it. The template already wrote BOS and friends, so the tokenizer must not add them.
                outs = self._llm.generate([{"prompt": t} for t in texts], params, use_tqdm=False,
                                          tokenization_kwargs={"add_special_tokens": False})  # fmt: skip
            else:
                ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
                outs = await self._alive(gather_all([self._stream(list(i), p) for i, p in zip(ids, params)]))
        return [generation(o) for o in outs]

    async def next_token_logprobs(self, prompts: Sequence[Sequence[int]], tokens: Sequence[int]) -> list[Scored]:
        """One greedy token per prompt with the raw log-probs of exactly ``tokens`` (vLLM's ``logprob_token_ids``)."""
        from vllm import SamplingParams

        params = [SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=list(tokens)) for _ in prompts]
        with engine_alive(self.spec.name):
            if self._llm is not None:
                outs = self._llm.generate([tokens_prompt(p) for p in prompts], params, use_tqdm=False)
            else:
                outs = await self._alive(gather_all([self._stream(list(p), q) for p, q in zip(prompts, params)]))
        return [scored(o, tokens) for o in outs]

    async def _alive(self, work: Awaitable[T]) -> T:
        """``work`` on the pipelined engine, or its ``EngineDeadError`` once the engine is marked dead: a request added
        while the engine process died was never answered nor failed (vLLM 0.32), and waited for ever."""
        engine, death = self._async, self._death
        assert death is not None
        return await unless_dead(work, death, lambda: engine.dead_error)

    async def _stream(self, prompt: list[int], params: Any) -> Any:
        """Run one request to completion on AsyncLLM and return its final RequestOutput."""
        from vllm.sampling_params import RequestOutputKind

        params.output_kind = RequestOutputKind.FINAL_ONLY
        final = None
        async for out in self._async.generate(tokens_prompt(prompt), params, request_id=f"tourney-{next(self._ids)}"):
            final = out
        return final

    def sampling_params(self, s: Sampling) -> Any:
        """vLLM sampling parameters, every field from ``s``; a seed only when sampling (greedy needs no generator).

        An explicit SamplingParams is all the engine uses: ``LLM``/``AsyncLLM`` read the checkpoint's
        generation_config.json only for requests without one (and for its eos ids, which servers add alike), so
        the model's penalties or top-k never apply silently, in-process or on a server (``Sampling.shape``).
        """
        from vllm import SamplingParams

        seed = s.seed if s.temperature > 0 else None
        return SamplingParams(**s.shape(), max_tokens=s.max_tokens, seed=seed)

    # ---- tokens ------------------------------------------------------------------------------------------------

    def render(self, messages: Chat) -> str:
        """Chat messages as the prompt text the model's chat template writes, with the generation prompt."""
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    async def tokenize(self, text: str) -> list[int]:
        """Token ids of a text (a rendered prompt already holds BOS and friends, so none are added)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    async def chat_ids(self, messages: Chat) -> list[int]:
        """Token ids of rendered chat messages."""
        return await self.tokenize(self.render(messages))

    def check_length(self, index: int, ids: list[int]) -> None:
        """Raise a BackendError naming the request when its prompt leaves no room to generate."""
        if len(ids) + 1 > self.max_model_len:
            raise BackendError(
                f"prompt has {len(ids)} tokens, more than the context allows "
                f"(max_model_len {self.max_model_len}, at least 1 token to generate)",
                index=index,
            )


def load_tokenizer(spec: ModelSpec) -> Any:
    """Load the model's own tokenizer (the one vLLM uses) without starting an engine."""
    check_hub(spec)
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(spec.path)
    except Exception as err:  # missing files, no hub access, unknown repo: all one line
        raise BackendError(f"cannot load model {spec.name!r}: {one_line(err)}") from err


def cpu_scheduling(context_limit: Callable[[], int], extra: dict[str, Any], tensor_parallel: int = 1) -> dict[str, Any]:
    """On vLLM's CPU platform, turn chunked prefill off: seeded sampling plus a split prefill kills the engine.

    (vLLM 0.32 rewinds a seeded request's generator after a partial-prefill step with ``Generator.set_offset``,
    which CPU generators lack: "CPU Generator does not use offset".) Whole prompts then need a batch budget of at
    least the context length. Tensor parallelism on the CPU needs the multiprocessing executor (Ray refuses the CPU).
    """
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    # vLLM's CPU default is to claim ~92% of the node's memory for the KV cache, which fails as soon as anything
    # else holds memory; a judge of prompts this size needs a few GiB. VLLM_CPU_KVCACHE_SPACE (GiB) overrides it, and
    # so does a kv_cache_memory_bytes engine argument (check_engine_options refuses both).
    if "kv_cache_memory_bytes" not in extra:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KVCACHE_GIB))
    out: dict[str, Any] = {}
    if tensor_parallel > 1:
        out["distributed_executor_backend"] = "mp"
        bind_cpu_ranks(tensor_parallel)
    if "enable_chunked_prefill" in extra:
        return out
    return out | {"enable_chunked_prefill": False, "max_num_batched_tokens": max(context_limit(), 4096)}


def bind_cpu_ranks(ranks: int) -> None:
    """Give each CPU rank its own cores when vLLM cannot: its automatic binding wants a NUMA node per rank and
    fails on a one-node machine ("Not enough allowed NUMA nodes to bind threads"). A binding already set is kept."""
    import glob

    cores = sorted(os.sched_getaffinity(0))
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ or len(glob.glob("/sys/devices/system/node/node[0-9]*")) >= ranks:
        return
    if len(cores) < ranks:
        return  # vLLM says why it cannot run
    share = len(cores) // ranks
    groups = [cores[k * share : (k + 1) * share] for k in range(ranks)]
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(",".join(map(str, g)) for g in groups)


def tokens_prompt(ids: Sequence[int]) -> dict[str, Any]:
    """Wrap token ids as a vLLM TokensPrompt (a TypedDict, so a plain dict)."""
    return {"prompt_token_ids": list(ids)}


def generation(out: Any) -> Generation:
    """A Generation from a vLLM RequestOutput."""
    comp = out.outputs[0]
    ids = tuple(out.prompt_token_ids or ())
    return Generation(comp.text, comp.finish_reason or "length", len(ids), len(comp.token_ids), ids)


def scored(out: Any, tokens: Sequence[int]) -> Scored:
    """The raw log-probs of ``tokens`` at the single generated position of a vLLM RequestOutput."""
    comp = out.outputs[0]
    step = comp.logprobs[0] if comp.logprobs else {}
    lps = tuple(step[t].logprob if t in step else None for t in tokens)
    return Scored(lps, len(out.prompt_token_ids or ()), len(comp.token_ids))


# Start-up failures vLLM reports, most specific first: a pattern of the engine's log or exception chain, and the one
# line tourney says instead (``{0}``, ``{1}``...: the pattern's groups). Options named are the ones that fix it.
START_FAILURES: list[tuple[str, str]] = [
    (r"max seq len \((\d+)\)\W+([\d.]+) GiB KV cache is needed, which is larger than the available KV cache memory "
     r"\(([\d.]+) GiB\)(?:\. Based on the available memory, the estimated maximum model length is (\d+))?",
     "not enough memory for the KV cache of a {0}-token context ({1} GiB needed, {2} GiB free{3}): lower "
     "--max-model-len, raise --gpu-memory-utilization, or spread the model over more GPUs with "
     "--tensor-parallel-size"),
    (r"No available memory for the cache blocks",
     "no memory left for the KV cache after the model's weights: raise --gpu-memory-utilization or spread the model "
     "over more GPUs with --tensor-parallel-size"),
    (r"User-specified max_model_len \((\d+)\) is greater than the derived max_model_len \(\w+=(\d+)",
     "--max-model-len {0} is more than the model's own limit of {1} positions: use --max-model-len {1} or less"),
    (r"Total number of attention heads \((\d+)\) must be divisible by tensor parallel size \((\d+)\)",
     "--tensor-parallel-size {1} does not divide the model's {0} attention heads: use a divisor of {0}"),
    (r"World size \((\d+)\) is larger than the number of available GPUs \((\d+)\)",
     "--tensor-parallel-size {0} asks for more GPUs than the {1} this machine has: use --tensor-parallel-size {1} "
     "or less"),
    (r"(?:CUDA|HIP|XPU)? ?out of memory|OutOfMemoryError|Cannot allocate memory",
     "out of memory while loading the model: spread it over more GPUs with --tensor-parallel-size, lower "
     "--gpu-memory-utilization if other processes share the GPU, or lower --max-model-len"),
    (r"Model architectures? \[?'?([\w', ]+?)'?\]? (?:are|is) not supported",
     "this vLLM cannot run the model's architecture ({0}): upgrade vLLM or choose another model"),
    (r"Not enough allowed NUMA nodes to bind threads of (\d+)",
     "vLLM's CPU backend cannot place {0} ranks on this machine's NUMA nodes: set VLLM_CPU_OMP_THREADS_BIND "
     "(e.g. 0|1) or lower --tensor-parallel-size"),
]  # fmt: skip


def start_failure(text: str) -> str | None:
    """The root cause of a failed engine start found in ``text`` (log and exception chain), as one line with the
    options that fix it; None when it is none of the known ones."""
    for pattern, message in START_FAILURES:
        m = re.search(pattern, text, re.IGNORECASE)
        if m:
            groups = [g or "" for g in m.groups()]
            if "KV cache" in pattern:
                groups[3] = f"; at most {groups[3]} tokens fit" if groups[3] else ""
            return message.format(*[g.strip("' ") for g in groups])
    return None


def chain_text(err: BaseException) -> str:
    """Every message of an exception chain (causes and contexts), one after another."""
    return "\n".join(f"{type(e).__name__}: {e}" for e in chain(err))


def stderr_file() -> tuple[str, int] | None:
    """The regular file stderr (fd 2) writes to and its size now, or None (a terminal, a pipe, not Linux).

    ``Console.logs_to`` sends the engine's logs there; with -v they go to the terminal and only the exception chain
    is left to read.
    """
    try:
        path = os.readlink("/proc/self/fd/2")
        st = os.stat(path)
    except OSError:
        return None
    return (path, st.st_size) if stat.S_ISREG(st.st_mode) else None


def log_since(mark: tuple[str, int] | None, limit: int = 1 << 20) -> str:
    """What was written to the stderr file after ``mark`` (at most its last ``limit`` bytes)."""
    if mark is None:
        return ""
    path, start = mark
    try:
        with open(path, "rb") as f:
            f.seek(max(start, os.path.getsize(path) - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


async def marked_dead(engine: Any) -> None:
    """Return once the pipelined engine is marked dead (its process died or its output handler failed)."""
    while not engine.errored:
        await asyncio.sleep(0.5)


async def unless_dead(work: Awaitable[T], death: asyncio.Future[Any], dead: Callable[[], BaseException]) -> T:
    """``work``'s result, or ``dead()`` raised once ``death`` is done first (CancelledError if it was cancelled: the
    engine is closing); ``work`` is cancelled whenever it is left unfinished, the caller's cancellation included."""
    task = asyncio.ensure_future(work)
    either: set[asyncio.Future[Any]] = {task, death}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():  # the caller was cancelled, or the engine died or is closing: abort the requests
            task.cancel()
            with suppress(BaseException):
                await task
    if not (task.cancelled() and death.done()):  # answered, or failed (or was cancelled) on its own
        return task.result()
    if death.cancelled():
        raise asyncio.CancelledError
    raise dead()


def wake_on_death(engine: Any) -> threading.Event:
    """Make a lockstep engine whose process died raise instead of hang; return the event that stops the watch.

    vLLM 0.32's ``LLM`` waits on its output queue for ever when the engine process dies (killed, out of memory): its
    monitor marks the engine dead and stops the thread that feeds the queue, and nothing wakes the waiter (``AsyncLLM``
    raises ``EngineDeadError``). A watcher puts an error on that queue once the engine is marked dead; the client turns
    it into ``EngineDeadError`` (``engine_alive`` then into one line). Without a separate engine process (or on a vLLM
    without these attributes) there is nothing to watch.
    """
    stop = threading.Event()
    core = getattr(engine, "engine_core", None)
    resources, queue = getattr(core, "resources", None), getattr(core, "outputs_queue", None)
    if resources is None or queue is None:
        return stop

    def watch() -> None:
        while not stop.wait(0.5):
            if getattr(resources, "engine_dead", False):
                queue.put_nowait(RuntimeError("the engine process died"))
                return

    threading.Thread(target=watch, name="tourney-engine-watch", daemon=True).start()
    return stop


YARN_LIKE = ("su", "longrope", "llama3", "yarn", "telechat3-yarn", "deepseek_yarn", "deepseek_llama_scaling")


def rope_factor(config: Any) -> float:
    """How far a model's RoPE scaling stretches its stated positions, as vLLM 0.32 reads it: the ``factor`` of a
    scaling that is not YaRN-like (those state scaled positions already), per layer type when nested; none for
    Gemma 3, whose positions are scaled already."""
    if "gemma3" in str(getattr(config, "model_type", "")):
        return 1.0
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if not isinstance(rope, dict):
        return 1.0
    layer_types: tuple[str, ...] = ("full_attention", "sliding_attention")
    with contextlib.suppress(ImportError):
        from transformers.configuration_utils import ALLOWED_LAYER_TYPES as layer_types  # what vLLM reads too
    nested = bool(rope) and set(rope).issubset(layer_types)
    factor = 1.0
    for params in [p for p in rope.values() if isinstance(p, dict) and p] if nested else [rope]:
        if params.get("rope_type", params.get("type")) not in YARN_LIKE:
            factor = params.get("factor", factor)
    return float(factor or 1.0)


class EngineDied(BackendError):
    """The engine's process died mid-run (killed, out of memory): this backend cannot judge any more."""


@contextmanager
def engine_alive(name: str) -> Iterator[None]:
    """Turn the death of the engine's process mid-run (killed, out of memory) into one BackendError line; vLLM raises
    ``EngineDeadError`` from its client, whose traceback says nothing a user can act on."""
    try:
        yield
    except Exception as err:
        if not any(type(e).__name__ == "EngineDeadError" for e in chain(err)):
            raise
        raise EngineDied(f"the vLLM engine of {name!r} died mid-run (killed, or out of memory?)") from err


def chain(err: BaseException) -> Iterator[BaseException]:
    """An exception and its causes and contexts, each once."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def one_line(err: BaseException) -> str:
    """The first non-empty line of an exception message (vLLM's can be long), with the type as a fallback."""
    cause: BaseException | None = err
    while cause is not None:
        for line in str(cause).splitlines():
            if line.strip():
                return line.strip()[:300]
        cause = cause.__cause__
    return type(err).__name__
