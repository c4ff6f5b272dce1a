"""Fault injection: a misbehaving proxy (tests/proxy.py) between tourney and a real server changes nothing but time.

Every request the proxy fails (drop, reset mid-answer, 429/500/502/503, a stall past the client's timeout) is one
failed attempt the client must retry, so the run's ``retries`` counter equals the faults injected; a delay under the
timeout (``slow``) is not a retry. The output is the same bytes as a run without the proxy.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from clirun import tourney
from proxy import KINDS, FaultProxy
from servers import FakeServer

from tourney.backends.base import Sampling
from tourney.backends.openai import OpenAIBackend
from tourney.engine import Engine
from tourney.io import read_items
from tourney.judge import PairwiseJudge
from tourney.judges import get_family
from tourney.tournament import Tournament


def write_prompts(path: Path, prompts: int, n: int) -> None:
    """Distinct prompts with n short responses each."""
    with open(path, "w") as f:
        for k in range(prompts):
            row = {"id": f"q{k}", "prompt": f"Name a fruit whose name has {k + 3} letters.",
                   "responses": [f"Answer {i}: the fruit {'x' * (k + i)}." for i in range(n)]}  # fmt: skip
            f.write(json.dumps(row) + "\n")


def rank(src: Path, out: Path, summary: Path, base_url: str, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run the CLI's ``rank`` (in-process) on the server at ``base_url``; the completed run and its wall time."""
    args = ["rank", src, "--backend", "openai", "--judge", "tiny", "--base-url", base_url, "--family", "rm-r1",
            "--max-tokens", "16", "--temperature", "1.0", "--max-retries", "20", "--summary", summary,
            "--no-cache", "-q", "-o", out, *extra]  # fmt: skip
    began = time.monotonic()
    p = tourney(*args, env={"HF_HUB_OFFLINE": "1"})
    return p, time.monotonic() - began


@pytest.mark.slow
def test_cli_through_a_faulty_proxy_to_a_real_vllm_server_gives_the_same_bytes(vllm_server, tmp_path):
    src = tmp_path / "in.jsonl"
    write_prompts(src, prompts=12, n=4)
    clean, clean_summary = tmp_path / "clean.jsonl", tmp_path / "clean.json"
    p, clean_s = rank(src, clean, clean_summary, vllm_server.url)
    assert p.returncode == 0, p.stderr[-2000:]
    # Stalls outlast the client's --timeout (8 s); a slow answer (0.5 s) stays under it and is no fault, and so does a
    # real answer (16 tokens of the tiny model: well under a second, a few on a loaded machine).
    with FaultProxy(vllm_server.url, seed=8, rate=0.2, kinds=KINDS, slow=0.5, stall=9.0, lifetime=300) as proxy:
        faulty, faulty_summary = tmp_path / "faulty.jsonl", tmp_path / "faulty.json"
        p, faulty_s = rank(src, faulty, faulty_summary, proxy.url, "--timeout", "8")
    assert p.returncode == 0, p.stderr[-2000:]
    report = proxy.report()
    stats, base = json.loads(faulty_summary.read_text()), json.loads(clean_summary.read_text())
    print(f"clean {clean_s:.1f} s, through the proxy {faulty_s:.1f} s; proxy: {report['kinds']}; "
          f"retries {stats['retries']} (clean {base['retries']}); judgments {stats['judgments']}")  # fmt: skip
    assert faulty.read_bytes() == clean.read_bytes()
    assert stats["judgments"] == base["judgments"] == 12 * 6 and stats["invalid"] == base["invalid"]
    kinds = report["kinds"]
    assert proxy.faults() >= 10 and len([k for k in kinds if k not in ("ok", "slow")]) >= 4, kinds
    assert base["retries"] == 0
    assert stats["retries"] == proxy.must_retry(), report  # each failed attempt the client saw is one retry


def test_every_fault_kind_is_retried_and_counted_against_a_fake_server(tmp_path):
    src = tmp_path / "in.jsonl"
    write_prompts(src, prompts=10, n=4)
    items = read_items(str(src))

    def run(url: str) -> tuple[list, int]:
        # A short client timeout so that stalls pass it, and short backoffs (Retry-After is capped by them).
        backend = OpenAIBackend(url, "fake", timeout=4.0, max_retries=8, backoff=0.02, backoff_cap=0.05)
        judge = PairwiseJudge(get_family("rm-r1"), backend, Sampling(1.0, 1.0, 64))
        try:
            run = Engine(judge, Tournament("round-robin", seed=3), keep_records=True).run(items)
        finally:
            judge.close()
        return [(r.scores, r.ranking, r.records) for r in run.results], run.stats.retries

    with FakeServer() as fake:
        clean, clean_retries = run(fake.url)
        direct_calls = len(fake.seen)
        with FaultProxy(fake.url, seed=5, rate=0.3, kinds=KINDS, slow=0.1, stall=5.0, lifetime=60) as proxy:
            faulty, retries = run(proxy.url)
    kinds = proxy.report()["kinds"]
    print(f"proxy: {kinds}; retries {retries}")
    assert faulty == clean and clean_retries == 0
    assert set(KINDS) <= set(kinds), kinds  # every kind happened at least once
    assert retries == proxy.must_retry() == proxy.faults() - kinds["slow"], kinds
    # Every request reached the server once, except those the proxy dropped or stalled before forwarding.
    answered_by_proxy = sum(kinds.get(k, 0) for k in ("drop", "stall", "429", "500", "502", "503", "upstream-error"))
    assert len(fake.seen) - direct_calls == sum(kinds.values()) - answered_by_proxy


def test_the_proxy_stops_by_itself_after_its_lifetime():
    with FakeServer() as fake:
        proxy = FaultProxy(fake.url, rate=0.0, lifetime=0.5).start()
        assert httpx.get(proxy.url + "/v1/models", timeout=5).json()["data"][0]["id"] == "fake"
        assert proxy.wait(10)  # no stop(): it ends on its own
        with pytest.raises(httpx.ConnectError):
            httpx.get(proxy.url + "/v1/models", timeout=5)
        assert proxy.report()["kinds"] == {"ok": 1}
