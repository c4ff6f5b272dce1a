"""Every sampling field is explicit (issue 17): nothing is filled from the checkpoint's generation_config.json."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import httpx
import pytest
from conftest import PENALTY
from servers import FakeServer

from tourney.backends.base import SHAPE_FIELDS, Sampling
from tourney.backends.openai import OpenAIBackend
from tourney.config import JudgeConfig, judge_sampling, make_judge, resolve_family
from tourney.errors import InputError
from tourney.judges.custom import load_custom
from tourney.sampling import SAMPLING_RANGES, sampling_problem
from tourney.types import Request

OFF = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "top_k": 0, "min_p": 0.0}
FAMILY = """user = "Q: {question}\\nA: {answer_a}\\nB: {answer_b}"
verdict_a = "Winner: A"
verdict_b = "Winner: B"
"""


def test_the_new_fields_default_to_vllms_off_values() -> None:
    s = Sampling()
    assert {k: getattr(s, k) for k in OFF} == OFF
    assert set(s.shape()) == set(SHAPE_FIELDS) == {"temperature", "top_p", *OFF}
    # Every field but the seed is in a judge's identity (its cache key).
    assert set(s.identity()) == {f.name for f in fields(Sampling)} - {"seed"} == set(SAMPLING_RANGES)
    # Positional construction (temperature, top_p, max_tokens, seed) still means what it meant.
    assert Sampling(0.5, 0.9, 64, 7) == Sampling(temperature=0.5, top_p=0.9, max_tokens=64, seed=7)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("top_q", 1, "unknown key 'top_q'"),
        ("top_k", 1.5, "'top_k' must be an integer"),
        ("top_k", -2, "out of range"),
        ("min_p", 1.5, "out of range"),
        ("repetition_penalty", 0, "out of range"),
        ("presence_penalty", 2.5, "out of range"),
        ("frequency_penalty", "high", "must be a number"),
        ("top_p", 0, "out of range"),
        ("max_tokens", 0, "out of range"),
        ("temperature", True, "must be a number"),
        ("repetition_penalty", float("inf"), "out of range"),
        ("temperature", float("nan"), "out of range"),
    ],
)
def test_bad_sampling_values_are_named(key: str, value: object, problem: str) -> None:
    assert problem in (sampling_problem(key, value) or "")


@pytest.mark.parametrize(("key", "value"), [("top_k", -1), ("top_k", 0), ("presence_penalty", -2), ("min_p", 1)])
def test_edge_values_vllm_accepts_pass(key: str, value: object) -> None:
    assert sampling_problem(key, value) is None


def test_a_family_file_sets_the_new_fields(tmp_path: Path) -> None:
    path = tmp_path / "fam.toml"
    extras = "repetition_penalty = 1.1\ntop_k = 20\nmin_p = 0.05\npresence_penalty = -0.5\n"
    path.write_text(FAMILY + "[sampling]\n" + extras)
    fam = load_custom(path)
    cfg = JudgeConfig("some/model", backend="openai", family=str(path), base_urls=("http://127.0.0.1:1",))
    s = judge_sampling(cfg, fam)
    assert (s.repetition_penalty, s.top_k, s.min_p, s.presence_penalty, s.frequency_penalty) == (1.1, 20, 0.05, -0.5, 0)
    assert isinstance(s.top_k, int) and isinstance(s.repetition_penalty, float)
    plain = tmp_path / "plain.toml"
    plain.write_text(FAMILY)
    cfg_plain = JudgeConfig("some/model", backend="openai", family=str(plain), base_urls=("http://127.0.0.1:1",))
    assert judge_sampling(cfg_plain, load_custom(plain)).shape() == {"temperature": 0.0, "top_p": 1.0} | OFF
    # The identity (cache key) tells the two apart.
    ids = [make_judge(c).sampling.identity() for c in (cfg, cfg_plain)]  # what the judge's identity holds
    assert ids[0]["repetition_penalty"] == 1.1 and ids[1]["repetition_penalty"] == 1.0


def test_a_family_file_beats_the_built_in_model_only_in_the_keys_it_sets(tmp_path: Path) -> None:
    """README: options > a family file's [sampling] > the built-in model's (smollm2: 96 tokens) > the family's. A file
    without max_tokens gave smollm2 its own default, 8192."""
    plain, capped = tmp_path / "plain.toml", tmp_path / "capped.toml"
    plain.write_text(FAMILY)
    capped.write_text(FAMILY + "[sampling]\nmax_tokens = 50\n")
    for path, smollm2, other in ((plain, 96, 8192), (capped, 50, 50)):
        for judge, want in (("smollm2", smollm2), ("some/model", other)):
            cfg = JudgeConfig(judge, family=str(path))
            assert judge_sampling(cfg, load_custom(path)).max_tokens == want, (path.name, judge)


def test_a_family_file_with_a_bad_sampling_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fam.toml"
    path.write_text(FAMILY + "[sampling]\ntop_k = 2.5\n")
    with pytest.raises(InputError, match="'top_k' must be an integer") as err:
        load_custom(path)
    assert "field 'sampling'" in str(err.value)


def test_builtin_families_send_neutral_extras() -> None:
    for name in ("rm-r1", "rrm"):
        cfg = JudgeConfig("x", backend="openai", family=name, base_urls=("http://127.0.0.1:1",))
        family = resolve_family(cfg)
        assert family is not None
        assert {k: getattr(judge_sampling(cfg, family), k) for k in OFF} == OFF


def test_every_server_request_carries_every_field(tiny_model_dir: Path) -> None:
    # No verdict in the text: each judgment is also forced, through /v1/completions with the prompt rendered here
    # (the server names the tiny model's folder as its root, so tourney loads that tokenizer).
    with FakeServer(content="I compared them, no verdict.", root=str(tiny_model_dir)) as srv:
        cfg = JudgeConfig("fake", backend="openai", family="rm-r1", max_tokens=40, temperature=0.7,
                          base_urls=(srv.url,))  # fmt: skip
        judge = make_judge(cfg)
        try:
            out = judge.judge([Request("Q?", "a", "b", seed=5), Request("Q?", "b", "a", seed=6)])
        finally:
            judge.close()
        generations = [c["body"] for c in srv.calls("/v1/chat/completions")]
        forced = [c["body"] for c in srv.calls("/v1/completions")]
    assert [j.forced for j in out] == [True, True]
    assert len(generations) == 2 and len(forced) >= 1
    for body in generations:
        assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", *OFF)} == {
            "temperature": 0.7, "top_p": 1.0, "max_tokens": 40} | OFF  # fmt: skip
    assert sorted(b["seed"] for b in generations) == [5, 6]
    for body in forced:  # one greedy token, the rest explicitly off too
        assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", *OFF)} == {
            "temperature": 0.0, "top_p": 1.0, "max_tokens": 1} | OFF  # fmt: skip


# ---- the session's real vLLM server and engine: their model folder asks for a strong repetition penalty -------------

CHAT = [{"role": "user", "content": "Write a long story about a cat, a dog and a bird."}]
TOKENS = 48


def generate(backend: object, sampling: Sampling) -> str:
    """One greedy generation on ``backend`` (started if needed)."""

    async def run() -> str:
        await backend.start()  # type: ignore[attr-defined]
        return (await backend.generate([CHAT], [sampling]))[0].text  # type: ignore[attr-defined]

    return backend.loop.run(run())  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def penalized_engine(tiny_vllm_judge):
    """The session's in-process engine (lockstep ``LLM``): the tiny model's folder sets the penalty (conftest)."""
    return tiny_vllm_judge.backend


@pytest.mark.slow
def test_generation_config_penalty_is_not_applied(vllm_server, penalized_engine) -> None:
    server = OpenAIBackend(vllm_server.url, "tiny", timeout=60.0)
    neutral, penalized = Sampling(max_tokens=TOKENS), Sampling(max_tokens=TOKENS, repetition_penalty=PENALTY)
    try:
        on_server = generate(server, neutral)
        on_server_penalized = generate(server, penalized)
    finally:
        server.close()
    # The premise: a request that leaves the fields out gets the folder's penalty from the server.
    bare = {"model": "tiny", "messages": CHAT, "temperature": 0.0, "max_tokens": TOKENS}
    left_out = httpx.post(vllm_server.url + "/v1/chat/completions", json=bare, timeout=60).json()
    assert left_out["choices"][0]["message"]["content"] == on_server_penalized
    # tourney's requests say "no penalty" explicitly, and the in-process engine (which also reads the folder's
    # generation_config.json) samples exactly alike.
    assert on_server != on_server_penalized
    assert generate(penalized_engine, neutral) == on_server
    assert generate(penalized_engine, penalized) == on_server_penalized
    # The engine did read the folder's penalty: it would have used it for a request without sampling parameters.
    diff = penalized_engine._llm.llm_engine.model_config.get_diff_sampling_param()
    assert diff.get("repetition_penalty") == PENALTY


@pytest.mark.slow
def test_in_process_sampling_params_carry_every_field(penalized_engine) -> None:
    s = Sampling(temperature=0.7, top_p=0.9, max_tokens=12, seed=3, repetition_penalty=1.2, presence_penalty=0.5,
                 frequency_penalty=-0.5, top_k=7, min_p=0.1)  # fmt: skip
    p = penalized_engine.sampling_params(s)
    assert {k: getattr(p, k) for k in s.shape()} == s.shape()
    assert (p.max_tokens, p.seed) == (12, 3)
    greedy = penalized_engine.sampling_params(Sampling(max_tokens=5))
    assert (greedy.repetition_penalty, greedy.top_k, greedy.min_p, greedy.seed) == (1.0, 0, 0.0, None)
