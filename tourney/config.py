"""Judge settings as plain data (``JudgeConfig``), and the one place that turns them into a judge or a backend.

Like vLLM's ``LLM`` + ``SamplingParams``: build a ``JudgeConfig``, call ``make_judge``. The registries here (backends,
engine modes, verdict modes) are what the CLI offers as choices.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tourney.backends.base import BackendBase, Sampling
from tourney.errors import InputError
from tourney.forcing import check_verdict
from tourney.judges import FAMILIES, Family, detect_family, get_family
from tourney.sampling import INT_FIELDS, SAMPLING_RANGES, sampling_problem
from tourney.types import Judge

SIMULATED = "simulated"
DTYPES = ("auto", "float32", "bfloat16", "float16")  # vLLM only; auto: the model's own
ENGINE_BACKENDS = ("vllm", "ray")  # the backends that run vLLM engines themselves (engine options apply)
REPLICA_TIMEOUT = 900.0  # seconds: a 32B judge on a network drive can take minutes to load
MODES = ("auto", "lockstep", "pipelined")  # auto: pipelined for model judges, lockstep for the simulator
FALLBACK_SAMPLING = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 8192}
# Engine arguments tourney sets itself from its own options: --engine-arg may not set them behind the option's back.
OWN_ENGINE_ARGS = {"model": "--judge", "dtype": "--dtype", "max_model_len": "--max-model-len", "seed": "--seed",
                   "tensor_parallel_size": "--tensor-parallel-size",
                   "gpu_memory_utilization": "--gpu-memory-utilization"}  # fmt: skip


@dataclass(frozen=True)
class SimConfig:
    """The simulated judge's settings (see ``tourney.simulated``)."""

    tau: float = 1.0
    position_bias: float = 0.0
    invalid_rate: float = 0.0
    latency: float = 0.0


@dataclass(frozen=True)
class JudgeConfig:
    """Everything that picks and shapes a judge: model, backend, family, sampling, verdict mode, engine options."""

    judge: str = "smollm2"  # a built-in name, a model directory, a hub id, a served model name, or "simulated"
    backend: str = "vllm"
    family: str | None = None  # a family name or a .toml file; None: detected from the model name
    verdict: str = "auto"
    max_tokens: int | None = None  # None: the family's (or the built-in model's) default
    temperature: float | None = None
    top_p: float | None = None
    mode: str = "auto"
    seed: int = 0
    dtype: str = "auto"  # vLLM only
    max_model_len: int | None = None  # vLLM only
    tensor_parallel_size: int = 1  # vLLM/Ray only: GPUs (or CPU ranks) one engine spans
    gpu_memory_utilization: float | None = None  # vLLM only: share of each GPU's memory; None: vLLM's own (0.9)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # vLLM only: more engine arguments (--engine-arg)
    base_urls: tuple[str, ...] = ()  # openai only
    concurrency: int = 16  # openai only: requests in flight per endpoint
    max_retries: int = 6  # openai only
    api_key_env: str = "OPENAI_API_KEY"  # openai only
    timeout: float = 600.0  # openai only: seconds to wait for one answer before retrying
    replicas: int = 1  # ray only: engines, each a Ray actor with --tensor-parallel-size GPUs
    ray_address: str | None = None  # ray only: None: a private cluster on 127.0.0.1; "auto": this machine's
    replica_timeout: float = REPLICA_TIMEOUT  # ray only: seconds to load, or to come back after a loss
    sim: SimConfig = field(default_factory=SimConfig)

    def __post_init__(self) -> None:
        """Check the values when built, as ``SamplingParams`` does: a bad one is an InputError naming its option."""
        for name, value, allowed in (("--backend", self.backend, BACKENDS), ("--mode", self.mode, MODES),
                                     ("--dtype", self.dtype, DTYPES)):  # fmt: skip
            if value not in allowed:
                raise InputError(f"expected one of {', '.join(allowed)}, got {value!r}", field=name)
        check_verdict(self.verdict)
        check_sampling(self)
        check_engine_options(self)
        if self.backend == "openai" and not self.simulated:
            from tourney.backends.pool import check_base_urls

            check_base_urls(self.base_urls)

    @property
    def simulated(self) -> bool:
        """Whether this is the simulator (no model)."""
        return self.judge == SIMULATED

    def engine_mode(self) -> str:
        """Lockstep or pipelined: model judges pipeline by default, the simulator steps in lockstep."""
        if self.mode != "auto":
            return self.mode
        return "lockstep" if self.simulated else "pipelined"


def check_sampling(cfg: JudgeConfig) -> None:
    """The sampling overrides in vLLM's ranges, and model settings only for a model (the simulator has none; its own
    settings only for it), as the CLI refuses them."""
    keys = ("max_tokens", "temperature", "top_p")
    overrides = {f"--{key.replace('_', '-')}": (key, getattr(cfg, key)) for key in keys}
    for option, (key, value) in overrides.items():
        if value is not None and (problem := sampling_problem(key, value)):
            raise InputError(problem, field=option)
    model = [("--family", cfg.family is not None), ("--verdict", cfg.verdict != "auto"),
             *((option, value is not None) for option, (_, value) in overrides.items()),
             ("--backend", cfg.backend != "vllm")]  # fmt: skip
    given = [name for name, on in model if on]
    if given and cfg.simulated:
        raise InputError(f"{given[0]} has no effect with --judge simulated")
    if not cfg.simulated and cfg.sim != SimConfig():
        raise InputError("the simulator's settings (sim) only apply to --judge simulated")


def check_engine_options(cfg: JudgeConfig) -> None:
    """The engine options: possible values, vLLM-only (not with servers nor the simulator), known engine arguments."""
    tp, mem = cfg.tensor_parallel_size, cfg.gpu_memory_utilization
    if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
        raise InputError(f"must be an integer >= 1, got {tp!r}", field="--tensor-parallel-size")
    if mem is not None and not (isinstance(mem, (int, float)) and not isinstance(mem, bool) and 0 < mem <= 1):
        raise InputError(f"must be in (0, 1], got {mem!r}", field="--gpu-memory-utilization")
    given = [name for name, on in (("--tensor-parallel-size", tp != 1), ("--gpu-memory-utilization", mem is not None),
                                   ("--engine-arg", bool(cfg.engine_kwargs))) if on]  # fmt: skip
    if given and cfg.simulated:
        raise InputError(f"{given[0]} has no effect with --judge simulated")
    if given and cfg.backend not in ENGINE_BACKENDS:
        raise InputError(f"{given[0]} has no effect with --backend {cfg.backend} (the server sets it)")
    check_ray_options(cfg)
    if "kv_cache_memory_bytes" in cfg.engine_kwargs and os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        # On a CPU vLLM lets the variable win without a word.
        raise InputError("kv_cache_memory_bytes contradicts VLLM_CPU_KVCACHE_SPACE (both size the KV cache): unset "
                         "the variable or drop the argument", field="--engine-arg")  # fmt: skip
    check_engine_args(cfg.engine_kwargs)


def check_ray_options(cfg: JudgeConfig) -> None:
    """The Ray options: possible values, and only with ``--backend ray``."""
    rep, timeout = cfg.replicas, cfg.replica_timeout
    if not isinstance(rep, int) or isinstance(rep, bool) or rep < 1:
        raise InputError(f"must be an integer >= 1, got {rep!r}", field="--replicas")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise InputError(f"must be a number of seconds > 0, got {timeout!r}", field="--replica-timeout")
    if cfg.ray_address is not None and not (isinstance(cfg.ray_address, str) and cfg.ray_address.strip()):
        raise InputError(f"expected 'auto' or HOST:PORT, got {cfg.ray_address!r}", field="--ray-address")
    given = [name for name, on in (("--replicas", rep != 1), ("--ray-address", cfg.ray_address is not None),
                                   ("--replica-timeout", timeout != REPLICA_TIMEOUT)) if on]  # fmt: skip
    if given and (cfg.simulated or cfg.backend != "ray"):
        raise InputError(f"{given[0]} only applies to --backend ray")


def parse_engine_args(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as engine arguments; VALUE is JSON when it parses (8, true, {"a": 1}), else a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise InputError(f"expected KEY=VALUE, got {pair!r}", field="--engine-arg")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def check_engine_args(kwargs: dict[str, Any], own: dict[str, str] | None = None) -> None:
    """Every key must be one of vLLM's engine arguments that tourney does not set itself (vLLM imported lazily).

    ``own``: what to use instead of each argument tourney sets (default: the command-line options).
    """
    own = OWN_ENGINE_ARGS if own is None else own
    for key in kwargs:
        if key in own:
            raise InputError(f"{key!r} is set by tourney; use {own[key]}", field="--engine-arg")
    if not kwargs:
        return
    known = engine_arg_names()
    if known is None:
        return  # no vLLM here: the backend says so when it loads
    for key in kwargs:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else " (see vLLM's EngineArgs)"
            raise InputError(f"unknown vLLM engine argument {key!r}{hint}", field="--engine-arg")


def engine_arg_names() -> set[str] | None:
    """The fields of ``vllm.engine.arg_utils.EngineArgs`` (importing vLLM takes seconds: only when asked), or None."""
    import dataclasses

    from tourney.console import silenced, vllm_logs_off_stdout

    vllm_logs_off_stdout()
    try:
        with silenced():  # vLLM prints on import; the user's terminal shows only tourney's lines
            from vllm.engine.arg_utils import EngineArgs
    except ImportError:
        return None
    return {f.name for f in dataclasses.fields(EngineArgs)}


def vllm_backend(cfg: JudgeConfig) -> BackendBase:
    """The in-process vLLM engine."""
    from tourney.backends.vllm import VLLMBackend

    return VLLMBackend(cfg.judge, dtype=cfg.dtype, max_model_len=cfg.max_model_len, mode=cfg.engine_mode(),
                       seed=cfg.seed, tensor_parallel_size=cfg.tensor_parallel_size,
                       gpu_memory_utilization=cfg.gpu_memory_utilization, engine_kwargs=cfg.engine_kwargs)  # fmt: skip


def ray_backend(cfg: JudgeConfig) -> BackendBase:
    """In-process vLLM engines as Ray actors on a cluster (``tourney.backends.ray``)."""
    from tourney.backends.ray import RayBackend

    return RayBackend(cfg.judge, replicas=cfg.replicas, address=cfg.ray_address, replica_timeout=cfg.replica_timeout,
                      dtype=cfg.dtype, max_model_len=cfg.max_model_len, mode=cfg.engine_mode(), seed=cfg.seed,
                      tensor_parallel_size=cfg.tensor_parallel_size, gpu_memory_utilization=cfg.gpu_memory_utilization,
                      engine_kwargs=cfg.engine_kwargs)  # fmt: skip


def openai_backend(cfg: JudgeConfig) -> BackendBase:
    """A pool of OpenAI-compatible servers."""
    from tourney.backends.openai import OpenAIBackend

    return OpenAIBackend(cfg.base_urls, cfg.judge, concurrency=cfg.concurrency, max_retries=cfg.max_retries,
                         api_key_env=cfg.api_key_env, timeout=cfg.timeout)  # fmt: skip


BACKENDS: dict[str, Callable[[JudgeConfig], BackendBase]] = {"vllm": vllm_backend, "openai": openai_backend,
                                                             "ray": ray_backend}  # fmt: skip


def make_backend(cfg: JudgeConfig) -> BackendBase:
    """Build the backend ``cfg`` names (the model loads later, on first use)."""
    return BACKENDS[cfg.backend](cfg)


def resolve_family(cfg: JudgeConfig) -> Family | None:
    """The judge family (None for the simulator), found without loading any model. A judge name an engine could
    not load is an InputError here, first, with "did you mean" for a typo of a built-in name."""
    from tourney.models import SMOLLM2, builtin_spec, resolve_model

    if cfg.simulated:
        return None
    if cfg.backend in ENGINE_BACKENDS:  # a server's model name is the server's to check
        resolve_model(cfg.judge, convert=False, builtins=(SMOLLM2, SIMULATED))
    if cfg.family:
        return get_family(cfg.family)
    spec = builtin_spec(cfg.judge)
    return get_family(spec.family if spec and spec.family else detect_family(cfg.judge))


def judge_sampling(cfg: JudgeConfig, family: Family) -> Sampling:
    """Sampling for every backend alike: options > a custom family file's [sampling] > built-in model > family."""
    from tourney.models import builtin_spec

    spec = builtin_spec(cfg.judge)
    model = {"max_tokens": spec.max_tokens} if spec and spec.max_tokens else {}
    # A family file's [sampling] beats the built-in model's defaults only in the keys it sets (its defaults do not).
    custom = cfg.family and cfg.family not in FAMILIES and Path(cfg.family).is_file()
    own = {k: family.sampling[k] for k in family.sampling_set} if custom else {}
    base = {**FALLBACK_SAMPLING, **family.sampling, **model, **own}
    given = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
    merged = base | {k: v for k, v in given.items() if v is not None}
    # The penalties, top_k and min_p come only from a family's [sampling] (same names as Sampling's fields); unset,
    # they stay at Sampling's "off" values and are still sent, so no server fills them from generation_config.json.
    values: dict[str, Any] = {k: int(v) if k in INT_FIELDS else float(v) for k, v in merged.items()
                              if k in SAMPLING_RANGES}  # fmt: skip
    return Sampling(**values)


def greedy_votes(votes: int, temperature: float, name: str = "--votes") -> str | None:
    """The warning for more than two votes per match from a greedy judge (None when there is nothing to say).

    At temperature 0 a judge gives the same verdict for the same order every time: votes beyond one per order
    cost judge calls and add nothing.
    """
    if votes <= 2 or temperature > 0:
        return None
    fix = "sample with a temperature, e.g. RRM's 0.6, or use 2 votes"
    return (f"{name} {votes} at temperature 0 repeats the same two judgments (one per order): {votes} judge calls "
            f"per match for the information of 2 ({fix})")  # fmt: skip


def make_judge(cfg: JudgeConfig, family: Family | None = None) -> Judge:
    """Build the judge ``cfg`` describes: the simulator, or a family on a backend (``family``: already resolved)."""
    if cfg.simulated:
        from tourney.simulated import SimulatedJudge

        s = cfg.sim
        return SimulatedJudge(s.tau, s.position_bias, s.invalid_rate, s.latency)
    from tourney.judge import PairwiseJudge

    family = family or resolve_family(cfg)
    assert family is not None
    return PairwiseJudge(family, make_backend(cfg), judge_sampling(cfg, family), cfg.verdict)
