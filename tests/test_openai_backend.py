"""A family on a server pool (OpenAIBackend) against real local servers and scripted bad endpoints."""

from __future__ import annotations

import asyncio
import time

import pytest
from servers import FakeServer, VLLMServer, free_port

from tourney.backends.openai import OpenAIBackend
from tourney.config import JudgeConfig, judge_sampling
from tourney.errors import BackendError, InputError
from tourney.judge import PairwiseJudge
from tourney.judges import get_family
from tourney.types import Request

KEY = "sk-test-DO-NOT-LEAK-4242"
FAST = {"backoff": 0.02, "backoff_cap": 0.1, "timeout": 30.0}


def server_judge(urls, model, family, *, verdict="auto", max_tokens=None, temperature=None, **pool) -> PairwiseJudge:
    """A family on a server pool, with the same sampling defaults the CLI gives (plus test-speed pool options)."""
    urls = (urls,) if isinstance(urls, str) else tuple(urls)
    cfg = JudgeConfig(model, backend="openai", family=family, max_tokens=max_tokens, temperature=temperature,
                      base_urls=urls)  # fmt: skip
    fam = get_family(family)
    return PairwiseJudge(fam, OpenAIBackend(urls, model, **pool), judge_sampling(cfg, fam), verdict)


def requests(n: int, offset: int = 0) -> list[Request]:
    """Distinct single-turn requests with their own seeds."""
    return [
        Request(f"What is {i} + {i}?", f"It is {2 * i}.", f"It is {2 * i + 1}.", seed=1000 + i)
        for i in range(offset, offset + n)
    ]


def dead_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


# ---- scripted endpoints (fast) ----------------------------------------------------------------------------------


def test_judgments_key_header_and_identity(monkeypatch):
    monkeypatch.setenv("TOURNEY_TEST_KEY", KEY)
    with (
        FakeServer() as srv,
        server_judge([srv.url + "/v1/"], "fake", "rm-r1", api_key_env="TOURNEY_TEST_KEY") as judge,
    ):
        out = judge.judge(requests(3))
        ident = judge.identity()
    assert [(j.verdict, j.p_a, j.finish_reason, j.forced) for j in out] == [("A", 1.0, "stop", False)] * 3
    assert {(j.prompt_tokens, j.completion_tokens) for j in out} == {(100, 4)}
    assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in srv.seen)
    chats = srv.calls("/v1/chat/completions")
    assert sorted(c["body"]["seed"] for c in chats) == [1000, 1001, 1002]
    assert {c["body"]["n"] for c in chats} == {1} and chats[0]["body"]["messages"][-1]["role"] == "user"
    assert ident["backend"] == "openai" and ident["model"] == "fake" and ident["family"]["name"] == "rm-r1"
    assert KEY not in repr(ident) and "127.0.0.1" not in repr(ident)
    assert ident["sampling"] == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 32768} | {
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_k": 0,
        "min_p": 0.0,
    }


def test_no_key_means_no_authorization_header(monkeypatch):
    monkeypatch.delenv("TOURNEY_TEST_KEY", raising=False)
    with FakeServer() as srv, server_judge([srv.url], "fake", "rm-r1", api_key_env="TOURNEY_TEST_KEY") as judge:
        judge.judge(requests(1))
    assert all("Authorization" not in r["headers"] for r in srv.seen)


def test_429_500_and_dropped_connections_are_retried():
    with FakeServer([429, "ok", 429, 500, "drop", 503]) as srv:
        with server_judge([srv.url], "fake", "rm-r1", verdict="parse", max_retries=6, **FAST) as judge:
            out = judge.judge(requests(1))
    assert out[0].verdict == "A"
    assert len(srv.calls("/v1/models")) == 2 and len(srv.calls("/v1/chat/completions")) == 5


@pytest.mark.parametrize("answer", ["garbage", "empty"])
def test_garbage_endpoint_fails_after_the_cap(monkeypatch, answer):
    monkeypatch.setenv("TOURNEY_TEST_KEY", KEY)
    with FakeServer(["ok"], default=answer) as srv:
        judge = server_judge([srv.url], "fake", "rm-r1", max_retries=3, api_key_env="TOURNEY_TEST_KEY", **FAST)
        with pytest.raises(BackendError, match="not an API response") as err:
            judge.judge(requests(1))
        judge.close()
    msg = str(err.value)
    assert srv.url + "/v1/chat/completions" in msg and "not an API response" in msg and "4 attempts" in msg
    assert len(srv.calls("/v1/chat/completions")) == 4 and "\n" not in msg and KEY not in msg


@pytest.mark.parametrize(("retries", "attempts"), [(2, "3 attempts"), (0, "1 attempt")])
def test_persistent_500_fails_after_the_cap(retries, attempts):
    with (
        FakeServer(default=500) as srv,
        server_judge([srv.url], "fake", "rm-r1", max_retries=retries, **FAST) as judge,
        pytest.raises(BackendError, match=rf"HTTP 500 .*gave up after {attempts}\)"),
    ):
        judge.judge(requests(1))


def test_wrong_model_fails_fast_listing_served_models():
    with FakeServer() as srv, server_judge([srv.url], "other", "rm-r1", max_retries=6) as judge:
        began = time.monotonic()
        with pytest.raises(BackendError, match=r"model 'other' is not served there; it serves: fake"):
            judge.judge(requests(2))
    assert time.monotonic() - began < 2 and not srv.calls("/v1/chat/completions")


def test_wrong_model_found_at_chat_time_when_listing_failed_at_start():
    with FakeServer([404]) as srv, server_judge([srv.url], "other", "rm-r1", max_retries=6) as judge:
        with pytest.raises(BackendError, match=r"'other' is not served there; it serves: fake") as err:
            judge.judge(requests(1))
    assert err.value.index == 0 and len(srv.calls("/v1/chat/completions")) == 1


def test_unreachable_server_fails_after_the_cap():
    url = dead_url()
    with server_judge([url], "tiny", "rm-r1", max_retries=2, **FAST) as judge:
        with pytest.raises(BackendError, match=r"connection failed .*gave up after 3 attempts") as err:
            judge.judge(requests(1))
    assert url in str(err.value)


def test_load_spreads_over_endpoints_and_skips_a_dead_one():
    with FakeServer(delay=0.02) as one, FakeServer(delay=0.02) as two:
        with server_judge([dead_url(), one.url, two.url], "fake", "rm-r1", concurrency=2, **FAST) as judge:
            out = judge.judge(requests(40))
    assert [j.verdict for j in out] == ["A"] * 40
    n1, n2 = len(one.calls("/v1/chat/completions")), len(two.calls("/v1/chat/completions"))
    assert n1 + n2 == 40 and min(n1, n2) >= 12


def test_ajudge_from_a_running_loop_and_closed_judge():
    with FakeServer() as srv:
        judge = server_judge([srv.url], "fake", "rm-r1")

        async def both() -> list:
            return await asyncio.gather(judge.ajudge(requests(2)), judge.ajudge(requests(3, offset=2)))

        first, second = asyncio.run(both())
        assert len(first) == 2 and len(second) == 3 and judge.judge([]) == []
        judge.close()
        judge.close()
    with pytest.raises(BackendError, match="closed"):
        judge.judge(requests(1))


def test_bad_options():
    with pytest.raises(InputError, match="verdict"):
        server_judge(["http://127.0.0.1:1"], "m", "rm-r1", verdict="maybe")
    with pytest.raises(InputError, match="http"):
        server_judge(["127.0.0.1:8000"], "m", "rm-r1")
    with pytest.raises(InputError, match="no server"):
        server_judge([], "m", "rm-r1")


# ---- a real vLLM server on the tiny model (slow) ----------------------------------------------------------------


def real_judge(server: VLLMServer, **kw) -> server_judge:
    """A judge on the tiny model: short sampled outputs, so seeds matter."""
    opts = {"max_tokens": 16, "temperature": 1.0, "verdict": "parse", "timeout": 60.0, **kw}
    return server_judge([server.url], "tiny", "rm-r1", **opts)


@pytest.mark.slow
def test_real_server_judgments_are_seeded_and_counted(vllm_server):
    reqs = requests(12)
    with real_judge(vllm_server) as judge:
        out = judge.judge(reqs)
        again = judge.judge(reqs[::-1])[::-1]
        reseeded = judge.judge([Request(r.prompt, r.a, r.b, seed=r.seed + 1) for r in reqs])
    assert [j.raw for j in out] == [j.raw for j in again]  # per-request seeds: batch order does not matter
    assert sum(a.raw != b.raw for a, b in zip(out, reseeded)) >= 10
    for j in out:
        assert j.finish_reason in ("stop", "length") and not j.forced
        assert j.prompt_tokens > 100 and 0 < j.completion_tokens <= 16
        assert j.finish_reason == "stop" or j.completion_tokens == 16


@pytest.mark.slow
def test_real_server_forced_verdicts_are_soft(vllm_server):
    with real_judge(vllm_server, verdict="logprobs") as judge, real_judge(vllm_server) as plain:
        forced = judge.judge(requests(6))
        first = plain.judge(requests(6))
    for f, p in zip(forced, first):
        assert f.forced and 0.0 < f.p_a < 1.0 and f.verdict == ("A" if f.p_a > 0.5 else "B")
        assert f.raw == p.raw  # same generation, then one more forced token
        assert (
            f.prompt_tokens > p.prompt_tokens + p.completion_tokens and f.completion_tokens == p.completion_tokens + 1
        )


@pytest.mark.slow
def test_real_server_wrong_model_and_context_overflow(vllm_server):
    judge = server_judge([vllm_server.url], "nope", "rm-r1", max_tokens=8)
    began = time.monotonic()
    with pytest.raises(BackendError, match=r"model 'nope' is not served there; it serves: tiny"):
        judge.judge(requests(1))
    assert time.monotonic() - began < 5
    judge.close()
    with real_judge(vllm_server) as judge:
        long = Request("x " * 2000, "a", "b")
        with pytest.raises(BackendError, match=r"request 1: .*maximum context length is 1024") as err:
            judge.judge([requests(1)[0], long])
    assert err.value.index == 1 and "\n" not in str(err.value)


@pytest.mark.slow
def test_real_server_failover_past_a_dead_endpoint(vllm_server):
    reqs = requests(16)
    with real_judge(vllm_server) as judge:
        reference = judge.judge(reqs)
    urls = [dead_url(), vllm_server.url, vllm_server.url + "/v1"]
    with server_judge(urls, "tiny", "rm-r1", max_tokens=16, temperature=1.0, verdict="parse", concurrency=2) as judge:
        out = judge.judge(reqs)
    assert [j.raw for j in out] == [j.raw for j in reference]


# The server killed and restarted mid-run: tests/test_cli_models.py (through the CLI, which also checks the cache).
