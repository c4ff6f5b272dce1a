"""`tourney sample`: seeded samples on the real vLLM engine (tiny random model), cache, resume, CLI and bad input."""

import json
import os
import re
import subprocess

import pytest
from clirun import python_m_tourney, tourney

from tourney.io import dumps
from tourney.sample import PromptRow, SampleCache, read_prompts, sample

N, MAX_TOKENS = 3, 12
PROMPTS = [
    {"id": "s", "prompt": "Name a colour.", "extra": 1},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three."}]},
    {"id": 7, "prompt": "Say hi."},
]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


@pytest.fixture(scope="module")
def backend(tiny_vllm_judge):
    """The session's tiny-model vLLM engine (shared with the judge tests: one engine start per session)."""
    return tiny_vllm_judge.backend


class Stop(Exception):
    """Raised from the progress hook to stop a run between two committed batches, as a kill would."""


@pytest.mark.slow
def test_samples_are_seeded_cached_and_resume_to_the_same_bytes(backend, prompts_file, tmp_path):
    rows = read_prompts(str(prompts_file))
    whole, stats = sample(rows, backend, N, max_tokens=MAX_TOKENS, seed=3)  # no cache, one batch
    assert stats.generated == 9 and stats.backend_calls == 1 and stats.cached == 0
    assert [r.get("id") for r in whole] == ["s", None, 7] and whole[0]["extra"] == 1
    for r in whole:
        resp = r["responses"]
        assert len(resp) == N and len({x["seed"] for x in resp}) == N
        assert all(set(x) == {"text", "finish_reason", "prompt_tokens", "completion_tokens", "seed"} for x in resp)
        assert all(x["finish_reason"] in ("stop", "length") and 0 < x["completion_tokens"] <= MAX_TOKENS for x in resp)
        assert len({x["text"] for x in resp}) == N  # distinct samples (temperature 1)
    expected = backend.render(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three."}]
    )
    assert whole[1]["responses"][0]["prompt_tokens"] == len(
        backend.tokenizer.encode(expected, add_special_tokens=False)
    )

    cache = SampleCache(tmp_path / "samples.sqlite")
    seen = []

    def stop_after_first(k):
        seen.append(k)
        raise Stop

    with pytest.raises(Stop):  # batches of 2: the first is committed, then the run dies
        sample(rows, backend, N, max_tokens=MAX_TOKENS, seed=3, cache=cache, batch_size=2, progress=stop_after_first)
    assert cache.count() == 2 and seen == [2]
    resumed, stats = sample(rows, backend, N, max_tokens=MAX_TOKENS, seed=3, cache=cache, batch_size=2)
    assert stats.cached == 2 and stats.generated == 7 and stats.backend_calls == 4
    assert [dumps(r) for r in resumed] == [dumps(r) for r in whole]  # batching never changes a sample
    again, stats = sample(rows, backend, N, max_tokens=MAX_TOKENS, seed=3, cache=cache)
    assert stats.generated == 0 and stats.backend_calls == 0 and stats.cached == 9
    assert [dumps(r) for r in again] == [dumps(r) for r in whole]

    other, _ = sample(rows, backend, N, max_tokens=MAX_TOKENS, seed=4, cache=cache)
    assert other[0]["responses"][0]["text"] != whole[0]["responses"][0]["text"]
    shorter, _ = sample(rows, backend, N, max_tokens=4, seed=3, cache=cache)  # other sampling: its own cache keys
    assert all(x["completion_tokens"] <= 4 for r in shorter for x in r["responses"])
    assert cache.count() == 27
    cache.close()

    # The CLI on the same cache and settings answers from it without starting vLLM, byte for byte.
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    p = tourney("sample", prompts_file, "-o", out, "--policy", backend.spec.name, "-n", N, "--max-tokens", MAX_TOKENS,
                "--seed", 3, "--dtype", "float32", "--max-model-len", backend.context, "--cache",
                tmp_path / "samples.sqlite", "--summary", summary)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert out.read_text() == "".join(dumps(r) + "\n" for r in whole)
    assert json.loads(summary.read_text())["generated"] == 0
    # A dry run counts them as cached (it reads the policy's tokenizer for its identity; no engine starts).
    p = tourney("sample", prompts_file, "--policy", backend.spec.name, "-n", N + 1, "--max-tokens", MAX_TOKENS,
                "--seed", 3, "--dtype", "float32", "--max-model-len", backend.context, "--cache",
                tmp_path / "samples.sqlite", "--dry-run")  # fmt: skip
    assert p.returncode == 0 and json.loads(p.stdout) == {"prompts": 3, "samples": 12, "new": 3, "cached": 9}
    # ... and what it wrote is tourney input: rank reads it.
    p = tourney("rank", out, "--judge", backend.spec.name, "--family", "rm-r1", "--dry-run")
    assert p.returncode == 0 and json.loads(p.stdout)["judgments"] == 3 * 3


def test_a_prompt_longer_than_the_policys_context_is_refused_before_the_engine_starts(tiny_model_dir, tmp_path):
    """A judge's too-long prompt is exit 2 before vLLM starts; a policy's is too (it failed after the start-up)."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "short", "prompt": "hi"}) + "\n"
                   + json.dumps({"id": "long", "prompt": "word " * 5000}) + "\n")  # fmt: skip
    p = tourney("sample", src, "--policy", tiny_model_dir, "-n", 2, "--no-cache", "-o", tmp_path / "out.jsonl")
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1, p.stderr
    assert re.fullmatch(rf"tourney: error: {src}:2: field 'prompt': the prompt has \d+ tokens; the policy's context is"
                        r" 4096 \(shorten it\)\n", p.stderr), p.stderr  # fmt: skip
    assert not (tmp_path / "out.jsonl").exists()  # exit 2 is the tokenizer's count: the engine's refusal was exit 1
    dry = tourney("sample", src, "--policy", tiny_model_dir, "-n", 2, "--no-cache", "--dry-run")
    assert dry.returncode == 2 and dry.stderr == p.stderr and not dry.stdout  # the dry run finds it too


def test_dry_run_loads_no_model(prompts_file, tmp_path, tiny_model_dir):
    """A dry run reads the policy's tokenizer only (to check the prompts against its context, as the run does): a
    hub id that exists nowhere here fails as the run would; a name that cannot be a model is refused as a run refuses
    it; output options are refused (a dry run writes nothing), and no cache file is created."""
    cache = tmp_path / "none.sqlite"
    p = tourney("sample", prompts_file, "-n", 5, "--policy", tiny_model_dir, "--dry-run", "--cache", cache)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"prompts": 3, "samples": 15, "new": 15, "cached": 0}
    assert not cache.exists()
    p = tourney("sample", prompts_file, "--policy", "nobody/no-such-model", "--dry-run", "--cache", cache)
    assert p.returncode == 1 and p.stderr.startswith("tourney: error: policy failed: cannot load model"), p.stderr
    assert len(p.stderr.splitlines()) == 1 and not cache.exists()
    p = tourney("sample", prompts_file, "--policy", "/no/such/model", "--dry-run", "--no-cache")
    want = "tourney: error: unknown model '/no/such/model': not a directory, a hub id (org/name) or a built-in"
    assert p.returncode == 2 and p.stderr.strip() == want + " (smollm2)", p.stderr
    for option in ("-o", "--summary"):
        p = tourney("sample", prompts_file, "--dry-run", "--no-cache", option, tmp_path / "x")
        flag = "--output" if option == "-o" else option
        want = f"tourney: error: {flag} has no effect with --dry-run (it writes nothing)"
        assert p.returncode == 2 and p.stderr.strip() == want, p.stderr
        assert not (tmp_path / "x").exists()


def test_a_parquet_output_name_is_refused_and_an_empty_input_warned(prompts_file, tmp_path):
    """sample writes JSONL only: a .parquet name would hold JSONL that every reader then takes for Parquet."""
    p = tourney("sample", prompts_file, "-o", tmp_path / "x.Parquet", "--no-cache")
    assert (
        p.returncode == 2
        and p.stderr
        == "tourney: error: option -o: sample writes JSONL (rank, pairs and train read it); name the output .jsonl\n"
    )
    assert os.listdir(tmp_path) == []
    (tmp_path / "empty.jsonl").write_text("")
    p = tourney("sample", tmp_path / "empty.jsonl", "--no-cache")  # smollm2's tokenizer only: nothing to generate
    assert (
        p.returncode == 0
        and p.stdout == ""
        and f"{tmp_path / 'empty.jsonl'} has no prompts: nothing to sample" in p.stderr
    )


def test_a_server_that_does_not_answer_is_said_while_retried(prompts_file, tmp_path):
    """As a judge's server is: each retry is said (here once, as a line: no terminal), then one error line."""
    p = tourney("sample", prompts_file, "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--max-retries",
                1, "--timeout", 5, "--no-cache", "-o", tmp_path / "out.jsonl")  # fmt: skip
    lines = p.stderr.splitlines()
    assert p.returncode == 1 and len(lines) == 2, p.stderr
    assert lines[0].startswith("tourney: http://127.0.0.1:9/v1/models: connection failed") and lines[0].endswith(
        "; retrying (1 of 1, --max-retries)"
    )
    assert "gave up after 2 attempts" in lines[1] and not (tmp_path / "out.jsonl").exists()


BAD = [
    ("{not json", ":1:", "malformed JSON"),
    ('{"id": 1}', "field 'prompt'", "missing"),
    ('{"prompt": 3}', "field 'prompt'", "expected a string"),
    ('{"prompt": []}', "field 'prompt'", "empty message list"),
    ('{"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}', "prompt[1]", "user turn"),
    ('{"prompt": "q", "responses": ["a"]}', "field 'responses'", "already present"),
    ('{"id": "a", "prompt": "q"}\n{"id": "a", "prompt": "r"}', ":2:", "duplicate id"),
    ('{"id": true, "prompt": "q"}', "field 'id'", "expected a string or an integer"),
]


@pytest.mark.parametrize("content,where,what", BAD)
def test_bad_input_is_one_line_exit_2(tmp_path, content, where, what):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(content + "\n")
    p = tourney("sample", src, "-o", out, "--policy", "/no/such/model", "--no-cache")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert str(src) in p.stderr and where in p.stderr and what in p.stderr
    assert os.listdir(tmp_path) == ["in.jsonl"]


@pytest.mark.parametrize(
    "args,code,what",
    [
        (["-n", "1"], 2, "'-n'"),
        (["--temperature", "0"], 2, "'--temperature'"),
        (["--base-url", "http://127.0.0.1:9/v1"], 2, "--base-url only applies to --backend openai"),
        (["--backend", "openai"], 2, "needs at least one --base-url"),
        (["--concurrency", "4"], 2, "--concurrency only applies to --backend openai"),
        (["--max-retries", "2"], 2, "--max-retries only applies to --backend openai"),
        (["--timeout", "5"], 2, "--timeout only applies to --backend openai"),
        (
            ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--dtype", "float16"],
            2,
            "--dtype has no effect with --backend openai",
        ),
        (["--backend", "openai", "--base-url", "ftp://host/v1"], 2, "expected http://HOST[:PORT][/v1]"),
        (["-q", "-v"], 2, "--quiet contradicts --verbose"),
        (["--policy", "/no/such/model"], 2, "unknown model '/no/such/model'"),
        (["--policy", "."], 2, "no config.json"),
    ],
)
def test_bad_options(tmp_path, prompts_file, args, code, what):
    out = tmp_path / "out.jsonl"
    p = tourney("sample", prompts_file, "-o", out, "--no-cache", *args)
    assert p.returncode == code and what in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not out.exists()


def test_prompt_rows_as_chat():
    assert PromptRow("a", 1, "hi").chat() == [{"role": "user", "content": "hi"}]
    msgs = [{"role": "user", "content": "x", "name": "u"}]
    assert PromptRow("a", 1, msgs).chat() == [{"role": "user", "content": "x"}]


@pytest.mark.slow
def test_sample_on_an_openai_compatible_server(vllm_server, prompts_file, tmp_path):
    """The same command on a real vLLM server (the session's): seeded, so two runs write the same bytes."""
    args = ["sample", prompts_file, "--backend", "openai", "--base-url", vllm_server.url, "--policy", "tiny", "-n", 2,
            "--max-tokens", 8, "--no-cache"]  # fmt: skip
    a, b = tourney(*args), tourney(*args)
    assert a.returncode == 0 and a.stdout == b.stdout, a.stderr
    rows = [json.loads(line) for line in a.stdout.splitlines()]
    assert len(rows) == 3 and all(len({x["text"] for x in r["responses"]}) == 2 for r in rows)
    assert all(x["completion_tokens"] <= 8 and x["prompt_tokens"] > 0 for r in rows for x in r["responses"])
    p = tourney(*args[:-7], "--policy", "no-such-model", "-o", tmp_path / "o.jsonl")
    assert p.returncode == 1 and "policy failed" in p.stderr and not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_sample_killed_with_sigkill_resumes_to_the_same_bytes(vllm_server, prompts_file, tmp_path):
    """kill -9 a sampling run (one request per backend call) mid-way; the resumed run writes an unkilled run's bytes."""
    import signal
    import sqlite3
    import time

    cache, out = tmp_path / "samples.sqlite", tmp_path / "out.jsonl"
    args = ["sample", prompts_file, "--backend", "openai", "--base-url", vllm_server.url, "--policy", "tiny", "-n", 4,
            "--max-tokens", 32, "--batch-size", 1]  # fmt: skip
    clean = tourney(*args, "--no-cache")
    assert clean.returncode == 0, clean.stderr
    proc = subprocess.Popen(python_m_tourney(*args, "--cache", cache, "-o", out),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    done, deadline = 0, time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if cache.exists():
            try:
                done = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            except sqlite3.OperationalError:  # table not created yet
                done = 0
            if done >= 2:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and 2 <= done < 12 and not out.exists()
    summary = tmp_path / "s.json"
    p = tourney(*args, "--cache", cache, "-o", out, "--summary", summary)
    assert p.returncode == 0, p.stderr
    assert out.read_text() == clean.stdout
    stats = json.loads(summary.read_text())
    assert stats["cached"] >= 2 and stats["generated"] == 12 - stats["cached"]
