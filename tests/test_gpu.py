"""The GPU path, tested where it can be on a CPU: engine options (tensor parallelism, memory, any engine argument)
checked before a model loads, a context fitted to the work, start-up failures that name their cause, and the warning
for greedy votes. Tiny random models stand in for 7B-32B judges (their config's positions play the 131k limit)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from clirun import python_m_tourney, tourney
from servers import TEST_KV_BYTES

from tourney.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "best_of_n.jsonl"
LONG_MODEL_POSITIONS = 131072  # what RRM and the RM-R1 distills declare


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model that declares 131,072 positions, with 2 KV heads (tensor parallelism over 2 ranks)."""
    from tourney.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-131k"), kv_heads=2, max_positions=LONG_MODEL_POSITIONS)


@pytest.fixture(scope="module")
def short_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model whose own limit is 2,048 positions."""
    from tourney.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-2k"), max_positions=2048)


def rows(path: Path, lengths: list[int]) -> Path:
    """A JSONL input with one prompt per length: two responses, the longer of ``n`` words."""
    with path.open("w") as f:
        for k, n in enumerate(lengths):
            f.write(json.dumps({"id": k, "prompt": f"Question {k}?", "responses": ["word " * n, "short"]}) + "\n")
    return path


def last_line(p) -> str:
    return p.stderr.strip().splitlines()[-1]


# ---- engine options: refused where they cannot apply, checked before anything loads ------------------------------


@pytest.mark.parametrize(
    "option",
    [["--tensor-parallel-size", "2"], ["--gpu-memory-utilization", "0.8"], ["--engine-arg", "enforce_eager=true"]],
)
def test_engine_options_are_vllm_only(option):
    p = tourney("rank", EXAMPLE, *option, "--backend", "openai", "--base-url", "http://127.0.0.1:9", "--no-cache")
    assert p.returncode == 2 and f"{option[0]} has no effect with --backend openai" in p.stderr, p.stderr
    p = tourney("rank", EXAMPLE, *option, "--judge", "simulated", "--no-cache")
    assert p.returncode == 2 and f"{option[0]} has no effect with --judge simulated" in p.stderr, p.stderr
    p = tourney("sample", EXAMPLE, *option, "--backend", "openai", "--base-url", "http://127.0.0.1:9", "--no-cache")
    assert p.returncode == 2 and f"{option[0]} has no effect with --backend openai" in p.stderr, p.stderr


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--gpu-memory-utilization", "0"], "--gpu-memory-utilization"),
        (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
        (["--tensor-parallel-size", "0"], "--tensor-parallel-size"),
        (["--engine-arg", "enforce_eager"], "expected KEY=VALUE, got 'enforce_eager'"),
        (["--engine-arg", "max_model_len=4096"], "'max_model_len' is set by tourney; use --max-model-len"),
        (["--engine-arg", "tensor-parallel-size=2"], "use --tensor-parallel-size"),
        (["--engine-arg", "seed=1"], "use --seed"),
    ],
)
def test_bad_engine_option_values_are_exit_2(option, expected):
    for command in ("rank", "sample"):
        p = tourney(command, EXAMPLE, *option, "--no-cache", "--dry-run")
        assert p.returncode == 2 and expected in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_unknown_engine_arg_is_exit_2_with_a_close_match(monkeypatch):
    # vLLM's EngineArgs fields stand in here (importing vLLM is for slow tests); the slow test below uses the real ones.
    from tourney import config

    monkeypatch.setattr(config, "engine_arg_names", lambda: {"enforce_eager", "quantization", "swap_space"})
    p = tourney("rank", EXAMPLE, "--engine-arg", "enforce_eagre=true", "--no-cache", "--dry-run")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "unknown vLLM engine argument 'enforce_eagre'; did you mean 'enforce_eager'?" in p.stderr


def test_engine_arg_values_are_json_when_they_parse():
    from tourney.config import parse_engine_args

    got = parse_engine_args(["a=8", "b=true", "c=fp8", 'd={"x": 1}', "e-f=0.5", "g=", "h=a=b"])
    assert got == {"a": 8, "b": True, "c": "fp8", "d": {"x": 1}, "e_f": 0.5, "g": "", "h": "a=b"}


def test_judge_config_checks_the_engine_options(monkeypatch):
    from tourney import config
    from tourney.config import JudgeConfig

    monkeypatch.setattr(config, "engine_arg_names", lambda: {"enforce_eager", "kv_cache_memory_bytes"})
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    cfg = JudgeConfig("some/model", tensor_parallel_size=4, gpu_memory_utilization=0.85,
                      engine_kwargs={"enforce_eager": True})  # fmt: skip
    assert (cfg.tensor_parallel_size, cfg.gpu_memory_utilization) == (4, 0.85)
    bad = [
        ({"tensor_parallel_size": 0}, "--tensor-parallel-size"),
        ({"gpu_memory_utilization": 0.0}, "--gpu-memory-utilization"),
        ({"gpu_memory_utilization": 1.01}, "--gpu-memory-utilization"),
        ({"engine_kwargs": {"nope": 1}}, "unknown vLLM engine argument 'nope'"),
        ({"engine_kwargs": {"dtype": "half"}}, "use --dtype"),
        ({"judge": "simulated", "tensor_parallel_size": 2}, "has no effect with --judge simulated"),
        ({"backend": "openai", "base_urls": ("http://x:1",), "gpu_memory_utilization": 0.5}, "--backend openai"),
        ({"engine_kwargs": {"kv_cache_memory_bytes": 1 << 26}}, "contradicts VLLM_CPU_KVCACHE_SPACE"),
    ]
    for kwargs, expected in bad:
        with pytest.raises(InputError, match=expected.replace("(", r"\(")):
            JudgeConfig(**{"judge": "some/model", **kwargs})
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE")  # either one alone is fine
    assert JudgeConfig("some/model", engine_kwargs={"kv_cache_memory_bytes": 1 << 26}).engine_kwargs


def test_scaling_config_judges_take_the_engine_options(tmp_path, monkeypatch):
    from experiments.scaling import config as config_mod
    from experiments.scaling import run
    from tourney import config

    monkeypatch.setattr(config, "engine_arg_names", lambda: {"enforce_eager", "quantization"})
    base = (ROOT / "experiments" / "configs" / "rrm-gpu.toml").read_text()
    head = "max_model_len = 16384\n"
    path = tmp_path / "c.toml"
    path.write_text(base.replace(head, head + 'tensor_parallel_size = 4\ngpu_memory_utilization = 0.85\n'
                                        'engine_args = {quantization = "fp8"}\n'))  # fmt: skip
    spec = config_mod.load(path).judges["rrm-7b"]
    built = []
    monkeypatch.setattr(config, "make_judge", lambda cfg: built.append(cfg) or cfg)
    run.build_judge(spec)
    cfg = built[0]
    assert (cfg.tensor_parallel_size, cfg.gpu_memory_utilization, cfg.engine_kwargs) == (
        4,
        0.85,
        {"quantization": "fp8"},
    )
    for extra, expected in [
        ("tensor_parallel_size = 0", "field 'judge[0].tensor_parallel_size': must be >= 1"),
        ("gpu_memory_utilization = 1.5", "field 'judge[0].gpu_memory_utilization': must be in (0, 1]"),
        ("engine_args = {max_model_len = 4}", "'max_model_len' is set by tourney; use the judge's max_model_len key"),
        ("engine_args = {quantisation = 'fp8'}", "did you mean 'quantization'?"),
    ]:
        path.write_text(base.replace(head, head + extra + "\n"))
        with pytest.raises(InputError) as err:
            config_mod.load(path)
        assert expected in str(err.value) and f"{path}:" in str(err.value), str(err.value)


# ---- greedy votes -------------------------------------------------------------------------------------------------


def test_more_than_two_greedy_votes_is_a_warning_naming_the_cost(tiny_model_dir):
    p = tourney("rank", EXAMPLE, "--judge", tiny_model_dir, "--family", "rm-r1", "--votes", "5", "--max-tokens", "8",
                "--no-cache", "--dry-run")  # fmt: skip
    warning = ("tourney: warning: --votes 5 at temperature 0 repeats the same two judgments (one per order): 5 judge "
               "calls per match for the information of 2")  # fmt: skip
    assert p.returncode == 0 and warning in p.stderr and p.stderr.count("--votes 5") == 1, p.stderr
    quiet = [
        ("--votes", "2"),  # one per order: no waste
        ("--votes", "5", "--temperature", "0.6"),  # sampled votes differ
        ("--votes", "5", "--family", "rrm"),  # RRM samples at 0.6 by default
    ]
    for args in quiet:
        p = tourney("rank", EXAMPLE, "--judge", tiny_model_dir, "--max-tokens", "8", "--no-cache", "--dry-run",
                    *(["--family", "rm-r1"] if "--family" not in args else []), *args)  # fmt: skip
        assert p.returncode == 0 and "temperature 0" not in p.stderr, (args, p.stderr)
    # The simulator samples its votes: exempt.
    p = tourney("rank", ROOT / "tests" / "data" / "sim12.jsonl", "--judge", "simulated", "--votes", "5", "--no-cache",
                "--dry-run")  # fmt: skip
    assert p.returncode == 0 and "temperature 0" not in p.stderr, p.stderr


def test_gpu_scaling_configs_sweep_votes_only_when_sampling(tmp_path):
    from experiments.scaling import config as config_mod

    for path in sorted((ROOT / "experiments" / "configs").glob("*gpu*.toml")):
        cfg = config_mod.load(path)
        assert cfg.warnings == [], (path, cfg.warnings)
    greedy = (
        (ROOT / "experiments" / "configs" / "rm-r1-gpu.toml").read_text().replace("votes = [1, 2]", "votes = [1, 3]")
    )
    path = tmp_path / "greedy.toml"
    path.write_text(greedy)
    cfg = config_mod.load(path)
    assert len(cfg.warnings) == 1 and "votes = 3 at temperature 0" in cfg.warnings[0], cfg.warnings
    assert "judge 'rm-r1-7b'" in cfg.warnings[0] and f"{path}:" in cfg.warnings[0]


# ---- a context that fits the work ---------------------------------------------------------------------------------


def judge_on(model: Path, **kwargs):
    from tourney.config import JudgeConfig, make_judge

    return make_judge(JudgeConfig(str(model), family="rm-r1", mode="lockstep", dtype="float32", **kwargs))


def test_context_is_fitted_to_the_longest_prompt_plus_max_tokens(long_model_dir, tmp_path):
    from tourney.api import check_context
    from tourney.io import read_items

    items = read_items(str(rows(tmp_path / "in.jsonl", [5, 300, 40, 120])))
    judge = judge_on(long_model_dir, max_tokens=1000)
    try:
        longest = max(judge.prompt_tokens(i.prompt, i.texts[0], i.texts[1]) for i in items)
        notes: list[str] = []
        check_context(items, judge, warn=notes.append)
        want = -(-(longest + 1000 + 64) // 256) * 256
        assert judge.backend.fitted == want and want < 4096 and notes == [], (longest, judge.backend.fitted, notes)
        assert judge.backend.engine_context() == want
        # The identity (the cache key) keeps what the user asked for: a fitted context changes no judgment.
        assert judge.backend.identity()["max_model_len"] is None
    finally:
        judge.close()
    asked = judge_on(long_model_dir, max_tokens=1000, max_model_len=8192)
    try:
        check_context(items, asked)
        assert asked.backend.fitted is None and asked.backend.engine_context() == 8192
    finally:
        asked.close()
    # A budget past the model's limit: the context is the model's own, and one note says what happens.
    huge = judge_on(long_model_dir, max_tokens=200_000)
    try:
        notes = []
        check_context(items, huge, warn=notes.append)
        assert huge.backend.fitted == LONG_MODEL_POSITIONS and len(notes) == 1, notes
        assert "4 prompt(s) leave less than --max-tokens 200000" in notes[0] and "--max-model-len" not in notes[0]
    finally:
        huge.close()


def test_only_the_longest_candidates_are_tokenized(long_model_dir, tmp_path):
    from tourney.api import check_context
    from tourney.io import read_items

    items = read_items(str(rows(tmp_path / "in.jsonl", [3] * 200 + [400])))
    judge = judge_on(long_model_dir, max_tokens=100)
    counted = []
    inner = judge.prompt_tokens
    judge.prompt_tokens = lambda *a: counted.append(a) or inner(*a)  # type: ignore[method-assign]
    try:
        check_context(items, judge)
        assert len(counted) <= 3, len(counted)  # the template once, the longest, and maybe one more
        assert judge.backend.fitted == -(-(inner(items[-1].prompt, items[-1].texts[0], "short") + 164) // 256) * 256
    finally:
        judge.close()


def test_a_policys_context_fits_its_longest_prompt_plus_max_tokens(long_model_dir):
    from tourney.backends.vllm import VLLMBackend

    chats = [[{"role": "user", "content": "word " * n}] for n in (3, 700, 20)]
    backend = VLLMBackend(str(long_model_dir), dtype="float32")
    try:
        longest = len(backend.tokenizer.encode(backend.render(chats[1]), add_special_tokens=False))
        texts = [backend.render(c) for c in chats]
        assert backend.fit_prompts(texts, 512) == -(-(longest + 512 + 64) // 256) * 256 == backend.engine_context()
    finally:
        backend.close()
    asked = VLLMBackend(str(long_model_dir), dtype="float32", max_model_len=4096)
    try:
        assert asked.fit_prompts([asked.render(c) for c in chats], 512) is None and asked.engine_context() == 4096
    finally:
        asked.close()


def test_a_scaling_judges_context_fits_its_largest_cell(long_model_dir, tmp_path):
    from experiments.scaling import config as config_mod
    from experiments.scaling import run

    path = tmp_path / "c.toml"
    path.write_text(f"""
name = "fit"
cache = false
[data]
source = "synthetic"
prompts = 3
pool = 6
[[judge]]
name = "tiny"
kind = "vllm"
model = "{long_model_dir}"
family = "rm-r1"
[sweep]
n = [2, 6]
max_tokens = [64, 700]
""")
    cfg = config_mod.load(path)
    data = run.load_data(cfg)
    judge = run.build_judge(cfg.judges["tiny"])
    try:
        run.fit_context(cfg, data, "tiny", judge)
        longest = 0
        for item in run.items_for(data, 6):  # the engine starts once: it must fit the largest cell, not the first
            a, b = sorted(item.texts, key=len)[-2:]
            longest = max(longest, judge.prompt_tokens(item.prompt, b, a))
        assert judge.backend.fitted == -(-(longest + 700 + 64) // 256) * 256, (longest, judge.backend.fitted)
    finally:
        judge.close()


def test_the_models_limit_is_read_as_vllm_derives_it(tmp_path):
    from tourney.backends.vllm import VLLMBackend
    from tourney.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "m", max_positions=2048)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"rope_parameters": {"rope_type": "linear", "factor": 4.0,
                                                                                  "rope_theta": 10000.0}}))  # fmt: skip
    backend = VLLMBackend(str(model), dtype="float32")
    try:
        assert backend.model_limit() == 8192 == backend.context_limit()
    finally:
        backend.close()
    tok = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps(tok | {"model_max_length": 3000}))
    backend = VLLMBackend(str(model), dtype="float32")
    try:
        assert backend.model_limit() == 3000
    finally:
        backend.close()


def test_prompts_over_the_models_limit_are_said_once_with_options_that_work(short_model_dir, tmp_path):
    src = rows(tmp_path / "in.jsonl", [5, 500, 900, 10])
    # The model's own limit (2,048): --max-model-len cannot help, so the note does not suggest it.
    p = tourney("rank", src, "--judge", short_model_dir, "--family", "rm-r1", "--max-tokens", "1500", "--no-cache",
                "--dry-run")  # fmt: skip
    notes = [line for line in p.stderr.splitlines() if "leave less than" in line]
    assert p.returncode == 0 and len(notes) == 1, p.stderr
    assert notes[0].startswith("tourney: warning: 2 prompt(s) leave less than --max-tokens 1500 to think within the "
                               "judge's 2048-token context (largest judge prompt: ")  # fmt: skip
    assert "vLLM cuts those judgments' thinking short" in notes[0] and "--max-model-len" not in notes[0]
    # Asked for less than the model allows: raising --max-model-len is an option, up to the model's limit.
    src = rows(tmp_path / "in2.jsonl", [5, 300, 600, 10])
    p = tourney("rank", src, "--judge", short_model_dir, "--family", "rm-r1", "--max-tokens", "500",
                "--max-model-len", "1024", "--no-cache", "--dry-run")  # fmt: skip
    notes = [line for line in p.stderr.splitlines() if "leave less than" in line]
    assert len(notes) == 1 and "raise --max-model-len (the model allows 2048)" in notes[0], p.stderr
    # A prompt that alone does not fit is refused, before any model loads; no --max-model-len past the model's limit.
    src = rows(tmp_path / "long.jsonl", [5, 3000])
    p = tourney("rank", src, "--judge", short_model_dir, "--family", "rm-r1", "--no-cache", "--dry-run")
    assert p.returncode == 2 and f"{src}:2: field 'responses'" in last_line(p), p.stderr
    assert "the judge's context is 2048 (shorten them)" in last_line(p)


# ---- start-up failures name their cause ---------------------------------------------------------------------------

KV_LOG = (
    "(EngineCore pid=1) ERROR [core.py:1510] ValueError: To serve at least one request with the model's max seq len "
    "(131072), (32.0 GiB KV cache is needed, which is larger than the available KV cache memory (9.5 GiB). Based on "
    "the available memory, the estimated maximum model length is 38912. Try increasing `gpu_memory_utilization` ..."
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (KV_LOG, "not enough memory for the KV cache of a 131072-token context (32.0 GiB needed, 9.5 GiB free; at "
                 "most 38912 tokens fit): lower --max-model-len, raise --gpu-memory-utilization, or spread the model "
                 "over more GPUs with --tensor-parallel-size"),
        ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`",
         "no memory left for the KV cache after the model's weights: raise --gpu-memory-utilization"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.2 GiB",
         "out of memory while loading the model: spread it over more GPUs with --tensor-parallel-size"),
        ("ValueError: User-specified max_model_len (200000) is greater than the derived max_model_len "
         "(max_position_embeddings=131072 or model_max_length=None in model's config.json).",
         "--max-model-len 200000 is more than the model's own limit of 131072 positions"),
        ("ValueError: Total number of attention heads (28) must be divisible by tensor parallel size (8).",
         "--tensor-parallel-size 8 does not divide the model's 28 attention heads: use a divisor of 28"),
        ("ValueError: World size (4) is larger than the number of available GPUs (1) in this node.",
         "--tensor-parallel-size 4 asks for more GPUs than the 1 this machine has"),
        ("ValueError: Model architectures ['FooForCausalLM'] are not supported for now. Supported ...",
         "this vLLM cannot run the model's architecture (FooForCausalLM): upgrade vLLM or choose another model"),
    ],
)  # fmt: skip
def test_start_failures_name_their_cause(text, expected):
    from tourney.backends.vllm import start_failure

    cause = start_failure("RuntimeError: Engine core initialization failed. See root cause above.\n" + text)
    assert cause is not None and expected in cause and "\n" not in cause, cause


def test_an_unknown_start_failure_is_left_to_the_generic_line():
    from tourney.backends.vllm import start_failure

    assert start_failure("RuntimeError: Engine core initialization failed. See root cause above.") is None


# ---- slow: real vLLM ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_unknown_engine_arg_against_vllms_own_engine_args():
    pytest.importorskip("vllm")
    # A real process: importing vLLM for the check prints on import ("Triton is installed, but ..."), and the user's
    # terminal must show only tourney's one line.
    argv = python_m_tourney("rank", EXAMPLE, "--engine-arg", "enforce_eagre=true", "--no-cache", "--dry-run")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stdout == "", p.stderr
    assert (
        p.stderr == "tourney: error: option --engine-arg: unknown vLLM engine argument 'enforce_eagre'; did you "
        "mean 'enforce_eager'?\n"
    )
    from tourney.config import JudgeConfig

    cfg = JudgeConfig("some/model", engine_kwargs={"max_num_seqs": 8, "kv_cache_dtype": "auto", "enforce_eager": True})
    assert cfg.engine_kwargs["max_num_seqs"] == 8


@pytest.mark.slow
def test_engine_args_reach_vllms_engine_args(long_model_dir, tmp_path):
    pytest.importorskip("vllm")
    from vllm.engine.arg_utils import EngineArgs

    from tourney.api import check_context
    from tourney.io import read_items

    items = read_items(str(rows(tmp_path / "in.jsonl", [5, 300])))
    judge = judge_on(long_model_dir, max_tokens=512, tensor_parallel_size=2, gpu_memory_utilization=0.5,
                     engine_kwargs={"enforce_eager": True, "max_num_seqs": 8})  # fmt: skip
    try:
        check_context(items, judge)
        args = judge.backend.engine_args()
        assert args["max_model_len"] == judge.backend.fitted < 2048
        assert (args["tensor_parallel_size"], args["gpu_memory_utilization"]) == (2, 0.5)
        assert args["distributed_executor_backend"] == "mp"  # the CPU platform: Ray refuses it
        assert args["max_num_batched_tokens"] == 4096  # whole prompts (chunked prefill off) of the fitted context
        engine = EngineArgs(**args)
        assert (engine.tensor_parallel_size, engine.max_model_len, engine.max_num_seqs) == (2, args["max_model_len"], 8)
    finally:
        judge.close()


@pytest.mark.slow
def test_a_tensor_parallel_engine_of_two_cpu_ranks_judges(long_model_dir, tmp_path):
    pytest.importorskip("vllm")
    src = rows(tmp_path / "in.jsonl", [5, 30])
    out = tmp_path / "out.jsonl"
    p = tourney("rank", src, "-o", out, "--judge", long_model_dir, "--family", "rm-r1", "--max-tokens", "8",
                "--tensor-parallel-size", "2", "--engine-arg", "enforce_eager=true", "--dtype", "float32",
                "--engine-arg", f"kv_cache_memory_bytes={TEST_KV_BYTES}", "--no-cache",
                env={"VLLM_LOGGING_LEVEL": "INFO", "VLLM_CPU_KVCACHE_SPACE": None})  # fmt: skip
    # 64 MiB of KV cache a rank instead of the tests' 1 GiB: two ranks beside the session's engines fit in memory.
    # INFO: the rank lines below are INFO, whatever level the developer's shell sets.
    assert p.returncode == 0, p.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [sorted(r["ranking"]) for r in got] == [[0, 1], [0, 1]]
    assert "tourney: 2 judgments" in p.stderr
    from tourney.cli.judging import log_path

    log = log_path().read_text(errors="replace")  # the engine's own log: two ranks, each a worker of its own
    assert "world_size=2 rank=0" in log and "world_size=2 rank=1" in log


@pytest.mark.slow
def test_an_engine_that_cannot_start_names_the_cause_and_the_options(tmp_path):
    pytest.importorskip("vllm")
    from tourney.testing import build_tiny_model

    # 512k positions of fp32 KV cache (8 layers x 2 KV heads x 32 x K and V: 4 KiB a position) need 2 GiB; the tests
    # give an engine 1 GiB (VLLM_CPU_KVCACHE_SPACE=1). Few positions, many layers: the engine's rotary tables stay
    # small (4M positions of the 2-layer model made a 4.3 GB worker, which the kernel killed on a full machine).
    model = build_tiny_model(tmp_path / "tiny-512k", kv_heads=2, layers=8, max_positions=1 << 19)
    src = rows(tmp_path / "in.jsonl", [5])
    p = tourney("rank", src, "--judge", model, "--family", "rm-r1", "--max-model-len", str(1 << 19), "--dtype",
                "float32", "--engine-arg", "enforce_eager=true", "--engine-arg", "enable_chunked_prefill=true",
                "--no-cache", env={"VLLM_CPU_KVCACHE_SPACE": "1"})  # fmt: skip
    line = last_line(p)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    from tourney.cli.judging import log_path

    text = log_path().read_text(errors="replace") if log_path().exists() else ""
    log = "\n".join([ln for ln in text.splitlines() if re.search(r"Error|Exception|error:", ln)][:40]) or "(no log)"
    assert "not enough memory for the KV cache of a 524288-token context (2.0 GiB needed, 1.0 GiB free" in line, (
        f"{line}\n--- the engine's log:\n{log}"
    )
    assert "lower --max-model-len, raise --gpu-memory-utilization" in line and "--tensor-parallel-size" in line
    assert "(on a CPU: VLLM_CPU_KVCACHE_SPACE, now 1 GiB)" in line
    assert "Engine core initialization failed" not in line
