"""The judgment cache: kill -9 at random points and resume byte-identically; concurrent writers; bad files."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import time

import pytest
from clirun import python_m_tourney, tourney

from tourney.cache import Cache, judge_hash, request_key, sha
from tourney.types import Judgment, Request


def write_input(path, prompts=300, n=12):
    """Prompts with n responses each; quality spread so verdicts vary."""
    rng = random.Random(0)
    with open(path, "w") as f:
        for k in range(prompts):
            resp = [{"text": f"answer {k}-{i}", "quality": rng.gauss(0, 1)} for i in range(n)]
            f.write(json.dumps({"id": k, "prompt": f"question {k}", "responses": resp}) + "\n")


def run_args(src, out, cache, summary, *extra):
    """A real ``python -m tourney rank`` process on the simulator (killed, or run beside another one)."""
    return python_m_tourney("rank", src, "-o", out, "--judge", "simulated", "--strategy", "knockout", "--votes", 3,
                            "--sim-tau", 2, "--sim-invalid-rate", 0.1, "--mode", "pipelined", "--sim-latency", 0.002,
                            "--cache", cache, "--summary", summary, "-q", *extra)  # fmt: skip


def test_kill_9_at_random_points_then_resume_is_byte_identical(tmp_path):
    """One streaming run killed -9 three times at random moments: each time its partial output is a prefix of the
    bytes of a run never killed; the re-run completes it to the identical file, judging nothing already judged."""
    src = tmp_path / "in.jsonl"
    write_input(src)
    ref_out, ref_sum = tmp_path / "ref.jsonl", tmp_path / "ref.json"
    t0 = time.monotonic()
    subprocess.run(run_args(src, ref_out, tmp_path / "ref.sqlite", ref_sum), check=True, timeout=300)
    full = time.monotonic() - t0
    ref = ref_out.read_bytes()
    rng = random.Random(1)
    cache, out, summ = tmp_path / "c.sqlite", tmp_path / "o.jsonl", tmp_path / "s.json"
    partial = tmp_path / "o.jsonl.partial"
    kills, prefixes = 0, []
    for _ in range(6):  # kill the same run at random moments until it was killed three times
        proc = subprocess.Popen(run_args(src, out, cache, summ, "--window", 8), stderr=subprocess.DEVNULL)
        # Each run resumes with less left to do: kill it at a random moment after it has written new rows.
        grown = len(prefixes[-1]) if prefixes else 0
        deadline = time.monotonic() + full * 2
        while proc.poll() is None and time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_size > grown:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.2))
        if proc.poll() is not None:
            continue  # it finished before the kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        assert not out.exists() or out.read_bytes() == ref  # the output's name holds only a finished run
        prefixes.append(partial.read_bytes() if partial.exists() else b"")
        assert ref.startswith(prefixes[-1])
        if kills == 3:
            break
    assert kills == 3 and len(prefixes[-1]) > 0  # the property was exercised, not skipped by runs that finished first
    before = Cache(cache).count()
    subprocess.run(run_args(src, out, cache, summ), check=True, timeout=300)
    stats = json.loads(summ.read_text())
    assert out.read_bytes() == ref and not partial.exists() and not (tmp_path / "o.jsonl.resume").exists()
    # the written prompts were skipped, not re-derived; every other judgment judged exactly once over all the runs
    assert 0 < stats["resumed_prompts"] <= prefixes[-1].count(b"\n")
    assert stats["prompts"] + stats["resumed_prompts"] == ref.count(b"\n")
    assert stats["judgments"] - stats["cached"] == Cache(tmp_path / "ref.sqlite").count() - before
    assert Cache(cache).count() == Cache(tmp_path / "ref.sqlite").count()


def test_concurrent_writers_share_one_file(tmp_path):
    src = tmp_path / "in.jsonl"
    write_input(src, prompts=60, n=8)
    cache = tmp_path / "shared.sqlite"
    procs = [
        subprocess.Popen(run_args(src, tmp_path / f"o{k}", cache, tmp_path / f"s{k}"), stderr=subprocess.PIPE)
        for k in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert (tmp_path / "o0").read_bytes() == (tmp_path / "o1").read_bytes()
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    total = json.loads((tmp_path / "s0").read_text())["judgments"]
    assert Cache(cache).count() <= total  # each key stored once


def test_key_depends_on_order_vote_and_judge():
    r = Request(prompt="q", a="x", b="y", vote=0)
    j1, j2 = judge_hash({"model": "m", "t": 0.6}), judge_hash({"model": "m", "t": 0.7})
    keys = {
        request_key(j1, r),
        request_key(j1, Request(prompt="q", a="y", b="x", vote=0)),
        request_key(j1, Request(prompt="q", a="x", b="y", vote=1)),
        request_key(j2, r),
        request_key(j1, Request(prompt=[{"role": "user", "content": "q"}], a="x", b="y")),
    }
    assert len(keys) == 5
    assert request_key(j1, r) == request_key(j1, Request(prompt="q", a="x", b="y", vote=0, seed=99))


def test_roundtrip_and_corrupt_file_is_not_overwritten(tmp_path):
    c = Cache(tmp_path / "c.sqlite")
    j = Judgment("B", 0.0, "raw <answer>[[B]]</answer>", "stop", 120, 30, False)
    c.put_many("judge", [("k1", Request(prompt="q", a="first shown", b="second shown", vote=2), j)])
    c.close()
    assert Cache(tmp_path / "c.sqlite").get_many(["k1", "k2"]) == {"k1": j}
    with sqlite3.connect(tmp_path / "c.sqlite") as db:  # the order shown is stored with the judgment
        a_sha, b_sha, vote = db.execute("SELECT a_sha, b_sha, vote FROM judgments").fetchone()
    assert (a_sha, b_sha, vote) == (sha("first shown"), sha("second shown"), 2)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    before = bad.read_bytes()
    row = '{"prompt": "q", "responses": [{"text": "a", "quality": 1}, {"text": "b", "quality": 0}]}'
    p = tourney("rank", "-", "--judge", "simulated", "--cache", bad, stdin=row)
    assert p.returncode == 2 and "bad.sqlite" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert bad.read_bytes() == before and p.stdout == ""


def test_foreign_sqlite_file_is_refused(tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(Exception, match="not a tourney cache"):
        Cache(other)


# --- one store under both caches ---------------------------------------------------------------------------------


def test_judgment_and_sample_caches_refuse_each_other(tmp_path):
    from tourney.errors import InputError
    from tourney.sample import SampleCache

    judgments, samples = tmp_path / "judgments.sqlite", tmp_path / "samples.sqlite"
    Cache(judgments).close()
    SampleCache(samples).close()
    before = judgments.read_bytes()
    with pytest.raises(InputError, match="is a judgment cache, not a sample cache") as err:
        SampleCache(judgments)
    assert str(judgments) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="is a sample cache, not a judgment cache"):
        Cache(samples)
    with sqlite3.connect(judgments) as db:  # refused, so nothing was added
        assert "samples" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert Cache(judgments).count() == 0 and len(before) > 0


def test_sample_command_refuses_a_judgment_cache(tmp_path, capsys):
    from tourney.cli import main

    judgments, src = tmp_path / "judgments.sqlite", tmp_path / "prompts.jsonl"
    Cache(judgments).close()
    src.write_text('{"prompt": "q"}\n')
    with pytest.raises(SystemExit) as ex:
        main(["sample", str(src), "--policy", "/no/such/model", "--cache", str(judgments), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and err.count("\n") == 1
    assert f"{judgments}: this is a judgment cache, not a sample cache" in err


def test_store_versions_and_files_from_before_the_meta_table(tmp_path):
    from tourney.errors import InputError
    from tourney.sample import SampleCache
    from tourney.store import Schema, Store

    old = tmp_path / "old.sqlite"  # a judgment cache as tourney wrote it before tourney_meta: adopted silently
    with sqlite3.connect(old) as db:
        db.execute("CREATE TABLE judgments (key TEXT PRIMARY KEY, judge TEXT NOT NULL, verdict TEXT, p_a REAL, "
                   "raw TEXT NOT NULL, finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
                   "completion_tokens INTEGER NOT NULL, forced INTEGER NOT NULL, prompt_sha TEXT NOT NULL, "
                   "a_sha TEXT NOT NULL, b_sha TEXT NOT NULL, vote INTEGER NOT NULL)")  # fmt: skip
        db.execute("CREATE TABLE judges (hash TEXT PRIMARY KEY, identity TEXT NOT NULL)")
        db.execute("INSERT INTO judgments VALUES ('k', 'j', 'A', 1.0, 'raw', 'stop', 1, 2, 0, 'p', 'a', 'b', 0)")
        db.execute("PRAGMA user_version=2")
    assert Cache(old).get_many(["k"])["k"].verdict == "A"
    with sqlite3.connect(old) as db:
        assert dict(db.execute("SELECT key, value FROM tourney_meta")) == {"kind": "judgments", "version": "2"}
    with pytest.raises(InputError, match="is a judgment cache, not a sample cache"):
        SampleCache(old)
    v1 = tmp_path / "v1.sqlite"  # schema 1 (before the order shown was stored): refused, not rewritten
    with sqlite3.connect(v1) as db:
        db.execute("CREATE TABLE judgments (key TEXT PRIMARY KEY)")
        db.execute("PRAGMA user_version=1")
    with pytest.raises(InputError, match="judgment cache schema 1, this tourney writes 2; use another --cache"):
        Cache(v1)
    samples = tmp_path / "samples.sqlite"  # a sample cache from before tourney_meta (user_version left 0)
    with sqlite3.connect(samples) as db:
        db.execute("CREATE TABLE samples (key TEXT PRIMARY KEY, policy TEXT NOT NULL, seed INTEGER NOT NULL, "
                   "text TEXT NOT NULL, finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
                   "completion_tokens INTEGER NOT NULL)")  # fmt: skip
    assert SampleCache(samples).count() == 0
    with pytest.raises(InputError, match="sample cache schema 1, this tourney writes 2"):
        Store(samples, Schema("samples", 2, "CREATE TABLE IF NOT EXISTS samples (key TEXT)"))


def test_cache_is_usable_from_a_worker_thread(tmp_path):
    import threading

    c = Cache(tmp_path / "c.sqlite")
    j = Judgment("A", 1.0, "raw", "stop", 1, 2, False)
    got = {}

    def work(k):
        c.put_many("judge", [(f"k{k}", Request(prompt="q", a=str(k), b="b"), j)])
        got[k] = c.get_many([f"k{k}"])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(got[k] == {f"k{k}": j} for k in range(4)) and c.count() == 4
