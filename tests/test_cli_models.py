"""The CLI on real models: SmolLM2 (the README quick start, a real process: its logs and fds are the point), a real
vLLM server killed mid-run, and the errors a model judge gives before any model loads (in-process)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from clirun import INTERRUPTED, on_a_terminal, python_m_tourney, tourney

REPO = Path(__file__).parents[1]
EXAMPLE = REPO / "examples" / "best_of_n.jsonl"


def tourney_env(cache_root: Path | None = None) -> dict[str, str]:
    """The environment for a CLI subprocess: offline, optional cache root, and vLLM's memory and log level left to
    tourney's own defaults (as a user's shell would), not the test session's."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)
    # A level set in the developer's shell would hide vLLM's INFO lines (the "[shutdown]" ones the log test reads).
    env.pop("VLLM_LOGGING_LEVEL", None)
    if cache_root is not None:
        env["TOURNEY_CACHE_DIR"] = str(cache_root)
    return env


def own_root(smollm2_dir: Path, tmp_path: Path) -> Path:
    """A cache root of the test's own with the session's converted SmolLM2 linked in (the CLI finds
    <root>/models/smollm2-135m-instruct): runs of other tests on the shared root truncate its logs/last-run.log."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "models").symlink_to(smollm2_dir.parent)
    return root


def run(args: list, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a real ``python -m tourney`` with the given arguments."""
    return subprocess.run(python_m_tourney(*args), capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_quick_start_smollm2_best_of_n_then_rerun_is_all_cached(smollm2_dir, tmp_path):
    root = own_root(smollm2_dir, tmp_path)
    env = tourney_env(root)
    out1, out2, s1, s2, j = (tmp_path / n for n in ("o1.jsonl", "o2.jsonl", "s1.json", "s2.json", "j.jsonl"))
    cache = tmp_path / "judgments.sqlite"
    # On a terminal, as a user runs it: stderr shows tourney's own lines only (vLLM's and torch's logs go to the log
    # file): the bar in its start-up phase, then judging with its count moving, then the closing line, whose time is
    # the whole process's. stdout carries the JSONL and nothing else.
    t0 = time.monotonic()
    with open(out1, "wb") as stdout:
        code, screen = on_a_terminal(["best-of-n", EXAMPLE, "-o", "-", "--summary", s1, "--cache", cache,
                                      "--judgments", j], timeout=900, env=env, stdout=stdout)  # fmt: skip
    waited = time.monotonic() - t0
    assert code == 0, screen[-3000:]
    frames = [f.strip() for f in re.split(r"[\r\n]+", screen) if f.strip()]
    foreign = [f for f in frames if not re.match(r"(starting|judging|tourney: )", f)]
    assert not foreign, foreign[:5]
    phases = [f.split("━")[0].split(" ")[0] for f in frames if not f.startswith("tourney: ")]
    assert "starting" in phases and phases[-1] == "judging" and "starting vllm (smollm2)" in screen, phases
    assert phases.index("judging") > max(i for i, ph in enumerate(phases) if ph == "starting")  # no going back
    counts = [int(k) for k in re.findall(r"judging[^\r\n]*? (\d+)/8", screen)]
    assert counts == sorted(counts) and len(set(counts)) >= 3 and counts[-1] == 8, counts
    lines = [f for f in frames if f.startswith("tourney: ")]
    assert lines[0].startswith("tourney: 8 judgments (0 cached)") and len(lines) <= 2, lines
    said = float(re.search(r", ([0-9.]+) s$", lines[0]).group(1))
    assert waited * 0.97 - 0.5 <= said <= waited, (said, waited)  # within 3 %: start-up and shutdown included
    assert "vllm" in (root / "logs" / "last-run.log").read_text().lower()
    rows = [json.loads(line) for line in out1.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["capital", "arithmetic", "chat"]
    assert all(r["best"] == r["responses"][r["best_index"]]["text"] for r in rows)
    stats = json.loads(s1.read_text())
    assert stats["judgments"] == 3 + 3 + 2 and stats["backend_calls"] >= 1
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0
    assert stats["judge"]["family"]["name"] == "rm-r1"
    recs = [json.loads(line) for line in j.read_text().splitlines()]
    assert len(recs) == 8 and all(r["raw"] for r in recs)
    assert all(r["p_a"] is not None or r["verdict"] is None for r in recs)
    # Same command again: every judgment comes from the cache, the output is byte-identical.
    p = tourney("best-of-n", EXAMPLE, "-o", out2, "--summary", s2, "--cache", cache, env={"TOURNEY_CACHE_DIR": root})
    assert p.returncode == 0, p.stderr[-2000:]
    again = json.loads(s2.read_text())
    assert again["backend_calls"] == 0 and again["cached"] == 8 and again["completion_tokens"] == 0
    assert out1.read_bytes() == out2.read_bytes()


def write_prompts(path: Path, prompts: int, n: int) -> None:
    """Distinct prompts with n short responses each."""
    with open(path, "w") as f:
        for k in range(prompts):
            f.write(json.dumps({"id": f"q{k}", "prompt": f"What is {k} + {k}?",
                                "responses": [f"It is {2 * k + i}." for i in range(n)]}) + "\n")  # fmt: skip


def judged_texts(path: Path) -> dict[tuple, str]:
    """A --judgments file as match -> generated text (a forced P(A) may differ in its last bits)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["id"], r["a"], r["b"], r["vote"]): r["raw"] for r in rows}


@pytest.mark.slow
def test_server_gone_mid_run_and_back_completes_and_judges_nothing_twice(vllm_server, tmp_path):
    """The one outage of the server: every connection drops mid-run, new ones are refused for a while, then it is
    back. The run retries through it, stores each judgment once, and what it judged is what a clean run judges
    (seeded requests); a rerun is all cached, same bytes. The outage is a proxy in front of the session's server
    going down and up on the same port: what the client sees of a server restart, without a second vLLM start."""
    from proxy import FaultProxy

    from tourney.cache import Cache

    src, out, summ, cache = tmp_path / "in.jsonl", tmp_path / "o.jsonl", tmp_path / "s.json", tmp_path / "c.sqlite"
    write_prompts(src, prompts=12, n=6)
    head = tmp_path / "head.jsonl"  # the first prompts alone: their judgments do not depend on the others
    head.write_text("".join(src.read_text().splitlines(keepends=True)[:4]))
    proxy = FaultProxy(vllm_server.url, rate=0.0, lifetime=600).start()  # faults none: a plain forwarder
    try:
        opts = ["--backend", "openai", "--base-url", proxy.url, "--judge", "tiny", "--max-tokens", "48",
                "--temperature", "1", "--concurrency", "4", "--max-retries", "12", "--strategy", "knockout",
                "-q"]  # fmt: skip
        ref = tourney("rank", head, *opts, "--no-cache", "-o", tmp_path / "ref.jsonl", "--judgments",
                      tmp_path / "ref.j")  # fmt: skip
        assert ref.returncode == 0, ref.stderr[-2000:]
        args = ["rank", src, "-o", out, "--summary", summ, "--cache", cache, "--judgments", tmp_path / "j.jsonl",
                *opts]  # fmt: skip
        # A real process: the server goes away and comes back while it runs, once its requests are flowing.
        before = sum(proxy.report()["kinds"].values())
        proc = subprocess.Popen(python_m_tourney(*args), stderr=subprocess.PIPE, text=True, env=tourney_env())
        deadline = time.monotonic() + 120
        while sum(proxy.report()["kinds"].values()) < before + 6 and time.monotonic() < deadline:
            assert proc.poll() is None, "the run finished before the server went away; make it bigger"
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before the server went away; make it bigger"
        proxy.stop()  # every open connection dropped; new ones refused until it is back
        time.sleep(3.0)
        proxy.start(port=proxy.port)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        stats = json.loads(summ.read_text())
        assert stats["judgments"] == 12 * 5 and stats["retries"] >= 1  # the outage was seen, and retried through
        assert Cache(cache).count() == stats["judgments"] - stats["cached"]  # every new judgment stored exactly once
        assert stats["completion_tokens"] >= stats["judgments"] - stats["cached"]  # every new judgment made text
        # What was judged, before and after the outage, is what a clean run judges: seeded requests. A forced verdict
        # near 1/2 may pick another later-round match; the first round (3 of 6) is fixed by the seed.
        reference, judged = judged_texts(tmp_path / "ref.j"), judged_texts(tmp_path / "j.jsonl")
        same = [m for m in reference if m in judged]
        assert len(same) >= 4 * 3 and all(judged[m] == reference[m] for m in same)
        # The same command again: no request reaches the server, and the output is the same bytes.
        out2 = tmp_path / "o2.jsonl"
        p = tourney(*[a if a != out else out2 for a in args])
        assert p.returncode == 0, p.stderr[-2000:]
        assert json.loads(summ.read_text())["backend_calls"] == 0
        assert out.read_bytes() == out2.read_bytes()
    finally:
        proxy.stop()


@pytest.mark.slow
def test_context_overflow_names_the_prompt_and_keeps_earlier_judgments(vllm_server, tmp_path):
    src, cache = tmp_path / "in.jsonl", tmp_path / "c.sqlite"
    long = "word " * 3000
    src.write_text(
        json.dumps({"id": "short", "prompt": "Hi?", "responses": ["Hello.", "Hey."]}) + "\n"
        + json.dumps({"id": "huge", "prompt": long, "responses": ["a", "b"]}) + "\n"
    )  # fmt: skip
    args = ["rank", src, "--backend", "openai", "--base-url", vllm_server.url, "--judge", "tiny",
            "--max-tokens", "16", "--cache", cache, "--mode", "lockstep", "-q"]  # fmt: skip
    p = tourney(*args)
    assert p.returncode == 1 and p.stdout == ""
    line = p.stderr.strip().splitlines()[-1]
    assert '"huge"' in line and "line 2" in line and "token" in line, p.stderr


@pytest.mark.slow
def test_wrong_model_name_is_a_one_line_error(vllm_server, tmp_path):
    p = tourney("rank", EXAMPLE, "--backend", "openai", "--base-url", vllm_server.url, "--judge", "no-such-model",
                "--no-cache", "-q")  # fmt: skip
    assert p.returncode == 1 and "no-such-model" in p.stderr and "tiny" in p.stderr and "Traceback" not in p.stderr


def test_unreachable_server_is_a_one_line_error(tmp_path):
    p = tourney("rank", EXAMPLE, "--backend", "openai", "--base-url", "http://127.0.0.1:9", "--judge", "tiny",
                "--max-retries", "1", "--no-cache", "-q")  # fmt: skip
    assert p.returncode == 1 and "127.0.0.1:9" in p.stderr and "Traceback" not in p.stderr


def test_bad_family_and_template_are_exit_2(tmp_path):
    p = tourney("rank", EXAMPLE, "--family", "nope", "--no-cache")
    assert p.returncode == 2 and "unknown judge family 'nope'" in p.stderr and len(p.stderr.splitlines()) == 1
    bad = tmp_path / "judge.toml"
    bad.write_text("user = '''Q: {question} A: {answer_a}'''\nverdict_a = 'A'\nverdict_b = 'B'\n")
    p = tourney("rank", EXAMPLE, "--family", bad, "--no-cache")
    assert p.returncode == 2 and str(bad) in p.stderr and "answer_b" in p.stderr and len(p.stderr.splitlines()) == 1


def test_prompt_too_long_for_the_context_fails_before_the_engine_starts(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prompt": "Hi?", "responses": ["a", "b"]}) + "\n"
                   + json.dumps({"prompt": "Hi?", "responses": ["x " * 400, "y"]}) + "\n")  # fmt: skip
    began = time.monotonic()
    p = tourney("rank", src, "--judge", tiny_model_dir, "--max-model-len", "256", "--no-cache")
    line = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 2 and f"{src}:2: field 'responses'" in line and "context is 256" in line, p.stderr
    assert time.monotonic() - began < 25 and "Traceback" not in p.stderr  # no engine was started (not even imported)
    dry = tourney("rank", src, "--judge", tiny_model_dir, "--max-model-len", "256", "--no-cache", "--dry-run")
    assert dry.returncode == 2 and "context is 256" in dry.stderr


@pytest.mark.slow
def test_ctrl_c_in_process_is_one_line_and_keeps_judgments(tiny_model_dir, tmp_path):
    import signal
    import sqlite3

    src, cache = tmp_path / "in.jsonl", tmp_path / "c.sqlite"
    # Knockouts of 16: the first round's judgments are committed a few seconds before the last round's (a round robin
    # commits a prompt's judgments together, near the end of the run: 100 s to the first row, 48 x 6, 64 tokens).
    write_prompts(src, prompts=4, n=16)
    # Eager: without it vLLM's CPU platform compiles the model with inductor first, which is not what this tests.
    args = ["rank", src, "--judge", tiny_model_dir, "--family", "rm-r1", "--strategy", "knockout", "--max-tokens",
            "16", "--temperature", "1", "--engine-arg", "enforce_eager=true", "--cache", cache,
            "-o", tmp_path / "o.jsonl"]  # fmt: skip
    # A real process: SIGINT reaches tourney while its in-process engine (and that engine's own process) runs. Not the
    # same property as test_cli_unix's Ctrl-C tests (simulator, server backend): here the engine must shut down too.
    proc = subprocess.Popen(python_m_tourney(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=tourney_env(tmp_path))  # fmt: skip
    deadline, rows = time.monotonic() + 240, 0
    while rows == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        try:  # the file exists a moment before its table does
            rows = (
                sqlite3.connect(f"file:{cache}?mode=ro", uri=True)
                .execute("SELECT COUNT(*) FROM judgments")
                .fetchone()[0]
            )
        except sqlite3.OperationalError:
            rows = 0
    assert rows > 0 and proc.poll() is None, "no judgment was stored before the run ended"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1 and INTERRUPTED.fullmatch(lines[0]), err
    assert not (tmp_path / "o.jsonl").exists()


def engine_starting(model: Path, tmp_path: Path) -> tuple[subprocess.Popen[str], list[Any]]:
    """A real ``tourney rank`` whose vLLM engine has just begun to start: its process, and the engine's."""
    import psutil

    src = tmp_path / "in.jsonl"
    write_prompts(src, prompts=2, n=4)
    args = ["rank", src, "--judge", model, "--family", "rm-r1", "--max-tokens", "8", "--engine-arg",
            "enforce_eager=true", "--cache", tmp_path / "c.sqlite", "-o", tmp_path / "o.jsonl"]  # fmt: skip
    proc = subprocess.Popen(python_m_tourney(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=tourney_env(tmp_path))  # fmt: skip
    deadline, engine = time.monotonic() + 120, []
    while not engine and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # the engine's own process appears as its start begins
        engine = [p for p in psutil.Process(proc.pid).children() if "EngineCore" in " ".join(p.cmdline())]
    assert engine, "the engine's process never appeared"
    return proc, engine


@pytest.mark.slow
def test_ctrl_c_while_the_engine_starts_says_at_once_why_it_waits(tiny_model_dir, tmp_path):
    """vLLM cannot be stopped while it loads (a 32B model: minutes); the wait is said at once, not in silence."""
    import signal

    import psutil

    proc, engine = engine_starting(tiny_model_dir, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 2, err
    assert lines[0] == STOPPING
    assert INTERRUPTED.fullmatch(lines[1]) and not (tmp_path / "o.jsonl").exists()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in engine)
    assert "init engine" in (tmp_path / "logs" / "last-run.log").read_text()  # it was let finish loading


STOPPING = "tourney: stopping once the vLLM engine has loaded (Ctrl-C again ends it now)"


@pytest.mark.slow
def test_a_second_ctrl_c_while_the_engine_starts_ends_it_without_waiting(tiny_model_dir, tmp_path):
    """The user who does not want to wait for a 32B model to finish loading presses Ctrl-C again: the engine's
    processes are ended (by the guard's watcher) and tourney leaves before the engine is up."""
    import signal

    import psutil

    proc, engine = engine_starting(tiny_model_dir, tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 2 and lines[0] == STOPPING, err
    assert INTERRUPTED.fullmatch(lines[1]) and not (tmp_path / "o.jsonl").exists()
    _, alive = psutil.wait_procs(engine, timeout=30)  # the watcher: SIGTERM, then SIGKILL after 10 s
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert "init engine" not in (tmp_path / "logs" / "last-run.log").read_text()  # it never finished loading


def unreachable_hub_env(hub_cache: Path) -> dict[str, str]:
    """A real process's environment with a hub that refuses connections (a closed port on 127.0.0.1) and its own
    Hugging Face cache; online mode, as a user's shell is."""
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(hub_cache))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    return env


def test_a_hub_id_the_hub_cannot_serve_fails_at_once_in_one_line(tmp_path):
    env = unreachable_hub_env(tmp_path / "hub") | {"TOURNEY_CACHE_DIR": str(tmp_path)}
    p = run(["rank", EXAMPLE, "--judge", "some-org/some-judge", "--family", "rm-r1", "--dry-run"], env, timeout=120)
    assert p.returncode == 1 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    hub = tmp_path / "hub"
    assert p.stderr.startswith("tourney: judge failed: cannot load model 'some-org/some-judge': it is not in the "
                               f"Hugging Face cache ({hub}) and http://127.0.0.1:9 cannot be reached")  # fmt: skip
    # Not the minute of retries (five with back-off, twice) a lookup on an unreachable hub makes.
    assert "Retrying" not in (tmp_path / "logs" / "last-run.log").read_text()


@pytest.mark.slow
def test_a_hub_id_in_the_local_cache_loads_without_the_hub(smollm2_dir, tmp_path):
    """The model's files in the Hugging Face cache (as a download leaves them) and no hub: the run goes on offline."""
    snapshot = tmp_path / "hub" / "models--some-org--smol" / "snapshots" / ("0" * 40)
    snapshot.parent.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    shutil.copytree(smollm2_dir.resolve(), snapshot)
    p = run(["rank", EXAMPLE, "--judge", "some-org/smol", "--family", "rm-r1", "--dry-run"],
            unreachable_hub_env(tmp_path / "hub"), timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["judgments"] == 15


@pytest.mark.slow
def test_sample_keeps_vllm_start_up_and_shutdown_logs_off_stderr(smollm2_dir, tmp_path):
    """A real `tourney sample` on SmolLM2 with stderr sent to a file: only tourney's own line there (vLLM's shutdown
    lines once came after the run's log was closed)."""
    root = own_root(smollm2_dir, tmp_path)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "q", "prompt": "Say hi."}\n')
    p = run(["sample", prompts, "-o", tmp_path / "s.jsonl", "-n", 2, "--max-tokens", 8, "--no-cache"],
            tourney_env(root), timeout=600)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tourney: 2 samples (0 cached, 2 generated)"), p.stderr[-2000:]
    assert "[shutdown]" in (root / "logs" / "last-run.log").read_text()
