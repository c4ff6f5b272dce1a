"""Thinking is read from the chat template, and forcing never goes through a chat prefill (issue 17).

The tiny thinking model carries ``tourney.testing.THINKING_TEMPLATE``: its generation prompt ends with an open
``<think>\\n`` and it deletes the reasoning of earlier assistant turns, as the DeepSeek-R1-Distill templates of RM-R1
(distilled) and RRM do. The in-process vs server P(A) equality on it is in ``tests/test_forcing.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from clirun import tourney
from servers import TEST_KV_BYTES, FakeServer, tiny_thinking_model

from tourney.aio import LoopThread
from tourney.backends.base import BackendBase, Sampling
from tourney.backends.openai import OpenAIBackend
from tourney.errors import BackendError
from tourney.forcing import two_way
from tourney.judge import PairwiseJudge, template_thinks
from tourney.judges import get_family
from tourney.types import Request


@pytest.fixture(scope="module")
def think_tok():
    """The thinking model's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_thinking_model())


@pytest.fixture(scope="module")
def plain_tok(tiny_model_dir: Path):
    """SmolLM2's own tokenizer and template (no thinking)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


class TokenizerOnly(BackendBase):
    """A backend that has a tokenizer and nothing else (thinking is read without starting any model)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.loop = tokenizer, LoopThread("test-tokenizer-only")

    def identity(self) -> dict:
        return {"backend": "stub", "model": "m"}


def test_the_template_says_whether_the_judge_thinks(think_tok, plain_tok) -> None:
    messages = get_family("rrm").render("q", "a", "b")
    assert template_thinks(think_tok, messages) and not template_thinks(plain_tok, messages)
    # As R1-distill templates: an earlier assistant turn loses everything before its </think> (why forcing never
    # prefills an assistant turn through the template).
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "REASONING</think>\n\nanswer"}]
    assert "REASONING" not in think_tok.apply_chat_template(turns, tokenize=False)


def test_a_thinking_template_makes_any_family_think_for_parsing_and_identity(think_tok, plain_tok) -> None:
    thinking = PairwiseJudge(get_family("rm-r1"), TokenizerOnly(think_tok), Sampling())
    plain = PairwiseJudge(get_family("rm-r1"), TokenizerOnly(plain_tok), Sampling())
    try:
        assert get_family("rm-r1").thinks is False  # the family stays as declared for its texts
        assert thinking.identity()["family"]["thinks"] is True and plain.identity()["family"]["thinks"] is False
        assert thinking.identity() != plain.identity()  # the cache never mixes the two
        assert thinking.identity()["family"] | {"thinks": False} == plain.identity()["family"]
        inside = "Chatbot A is right.\n<answer>[[A]]</answer>"  # "written" inside the thinking left open
        closed = "Chatbot A is right.\n</think>\n\n<answer>[[A]]</answer>"
        assert thinking.family.parse(inside) is None and thinking.family.parse(closed) == "A"
        assert plain.family.parse(inside) == "A"
        assert thinking.with_max_tokens(8).identity()["family"]["thinks"] is True
    finally:
        thinking.close()
        plain.close()


def server_judge(srv: FakeServer, family: str, verdict: str) -> PairwiseJudge:
    """A family on a fake server."""
    return PairwiseJudge(get_family(family), OpenAIBackend([srv.url], srv.model, timeout=10.0), Sampling(), verdict)


REQUEST = Request("What is 2 + 2?", "4", "5", seed=1)


@pytest.mark.parametrize("verdict", ["logprobs", "auto"])
def test_forcing_without_the_tokenizer_is_refused_in_one_line(verdict: str) -> None:
    # "fake" is no folder and no hub id, and the server reports no model root: no prefill is tried instead.
    with FakeServer(content="Both look fine") as srv, server_judge(srv, "rm-r1", verdict) as judge:
        with pytest.raises(BackendError) as err:
            judge.judge([REQUEST])
        assert not srv.calls("/v1/completions")
        assert not [c for c in srv.calls("/v1/chat/completions") if c["body"].get("continue_final_message")]
    line = str(err.value)
    assert "\n" not in line and "--verdict parse" in line and "'fake' is no local folder" in line
    assert "--served-model-name" in line


def test_parse_needs_no_tokenizer() -> None:
    with FakeServer(content="Both look fine") as srv, server_judge(srv, "rm-r1", "parse") as judge:
        [j] = judge.judge([REQUEST])
    assert (j.verdict, j.forced) == (None, False)


@pytest.mark.parametrize(
    ("family", "closing"), [("rm-r1", "\n</think>\n\n<answer>[["), ("rrm", "\n</think>\n\n\\boxed{Assistant ")]
)
def test_a_server_judge_forces_with_ids_rendered_here(think_tok, family: str, closing: str) -> None:
    # The server reports the thinking model's folder as its root: tourney loads that tokenizer, reads the thinking
    # from its template, and sends the forced prompt as ids to /v1/completions.
    root = str(tiny_thinking_model())
    with FakeServer(content="Both look fine", root=root) as srv, server_judge(srv, family, "auto") as judge:
        [j] = judge.judge([REQUEST])
        [call] = srv.calls("/v1/completions")
    prompt = call["body"]["prompt"]
    assert isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)
    rendered = think_tok.apply_chat_template(get_family(family).render(REQUEST.prompt, "4", "5"), tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
    assert think_tok.decode(prompt) == rendered + "Both look fine" + closing
    assert j.forced and math.isclose(j.p_a, two_way(-0.5, -1.5))


def test_a_verdict_the_judge_began_is_cut_before_forcing(tiny_model_dir: Path, plain_tok) -> None:
    # A non-thinking template (SmolLM2's): --verdict logprobs forces from where the written verdict began.
    content = "I compared them.\n<answer>[[A]]</answer>"
    with (
        FakeServer(content=content, root=str(tiny_model_dir)) as srv,
        server_judge(srv, "rm-r1", "logprobs") as judge,
    ):
        [j] = judge.judge([REQUEST])
        [call] = srv.calls("/v1/completions")
    assert judge.family.thinks is False
    assert plain_tok.decode(call["body"]["prompt"]).endswith("<|im_start|>assistant\nI compared them.\n<answer>[[")
    assert j.forced and math.isclose(j.p_a, two_way(-0.5, -1.5))


# ---- the acceptance run: a real engine and a real server, cut mid-thinking by --max-tokens 8 -------------------------


@pytest.mark.slow
def test_cli_cut_mid_thinking_forces_the_same_verdicts_in_process_and_on_a_server(
    tmp_path, monkeypatch, think_tok, thinking_vllm_engine, thinking_vllm_server
):
    from tourney import config
    from tourney import judge as judge_module

    data = tmp_path / "in.jsonl"
    rows = [{"id": "p", "prompt": "What is 2 + 2?", "responses": ["4", "5", "22"]},
            {"id": "q", "prompt": "Name a colour.", "responses": ["Blue.", "Seven."]}]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts: list[list[int]] = []
    real = judge_module.forced_prompt

    async def recording(backend, prompt, body, closing):
        ids = await real(backend, prompt, body, closing)
        prompts.append(ids)
        return ids

    monkeypatch.setattr(judge_module, "forced_prompt", recording)
    # The in-process run judges on the session's thinking engine (one engine start per session), after checking that
    # the CLI's options build a backend with the same engine arguments and mode; the CLI must not close it.
    build = config.BACKENDS["vllm"]

    def session_engine(cfg):
        own = build(cfg)
        try:
            assert (own.engine_args(), own.mode) == (thinking_vllm_engine.engine_args(), thinking_vllm_engine.mode)
        finally:
            own.close()
        return thinking_vllm_engine

    monkeypatch.setitem(config.BACKENDS, "vllm", session_engine)
    monkeypatch.setattr(thinking_vllm_engine, "close", lambda: None)
    folder = str(tiny_thinking_model())
    common = ["rank", data, "--family", "rrm", "--max-tokens", "8", "--temperature", "0", "--no-cache", "-o", "-"]
    in_process = ["--judge", folder, "--backend", "vllm", "--dtype", "float32", "--max-model-len", "1024",
                  "--engine-arg", "enforce_eager=true",
                  "--engine-arg", f"kv_cache_memory_bytes={TEST_KV_BYTES}"]  # fmt: skip
    runs = {
        "vllm": in_process,
        "openai": ["--judge", "tiny-think", "--backend", "openai", "--base-url", thinking_vllm_server.url],
    }
    judgments, forced = {}, {}
    for name, opts in runs.items():
        prompts.clear()
        p = tourney(*common, *opts, "--judgments", tmp_path / f"{name}.jsonl", env={"VLLM_CPU_KVCACHE_SPACE": None})
        assert p.returncode == 0, p.stderr[-2000:]
        judgments[name] = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
        forced[name] = sorted(prompts)
    assert len(judgments["vllm"]) == 4 and len(forced["vllm"]) == 4
    for j in judgments["vllm"]:
        assert j["forced"] and "</think>" not in j["raw"]  # cut mid-thinking
    assert forced["vllm"] == forced["openai"]  # the same forced prompts, token for token
    for ids in forced["vllm"]:
        assert think_tok.decode(ids).endswith("\n</think>\n\n\\boxed{Assistant ")
    for a, b in zip(judgments["vllm"], judgments["openai"], strict=True):
        assert (a["a"], a["b"], a["raw"]) == (b["a"], b["b"], b["raw"])
        assert math.isclose(a["p_a"], b["p_a"], abs_tol=2e-3), (a, b)
