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


def run_args(src, out, cache, summary):
    """A real ``python -m tourney rank`` process on the simulator (killed, or run beside another one)."""
    return python_m_tourney("rank", src, "-o", out, "--judge", "simulated", "--strategy", "knockout", "--votes", 3,
                            "--sim-tau", 2, "--sim-invalid-rate", 0.1, "--mode", "pipelined", "--sim-latency", 0.002,
                            "--cache", cache, "--summary", summary, "-q")  # fmt: skip


def test_kill_9_at_random_points_then_resume_is_byte_identical(tmp_path):
    """One run killed -9 three times at random moments, then resumed: the bytes of a run never killed."""
    src = tmp_path / "in.jsonl"
    write_input(src)
    ref_out, ref_sum = tmp_path / "ref.jsonl", tmp_path / "ref.json"
    t0 = time.monotonic()
    subprocess.run(run_args(src, ref_out, tmp_path / "ref.sqlite", ref_sum), check=True, timeout=300)
    full = time.monotonic() - t0
    total = json.loads(ref_sum.read_text())["judgments"]
    rng = random.Random(1)
    cache, out, summ = tmp_path / "c.sqlite", tmp_path / "o.jsonl", tmp_path / "s.json"
    kills = 0
    for _ in range(6):  # kill the same run at random moments until it was killed three times
        proc = subprocess.Popen(run_args(src, out, cache, summ), stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, full * 0.9))
        if proc.poll() is not None:
            continue  # it finished before the kill
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        # a kill leaves no output, or (killed after the final rename) the complete one: never a partial file
        assert not out.exists() or out.read_bytes() == ref_out.read_bytes()
        if kills == 3:
            break
    before = Cache(cache).count() if cache.exists() else 0
    subprocess.run(run_args(src, out, cache, summ), check=True, timeout=300)
    stats = json.loads(summ.read_text())
    assert out.read_bytes() == ref_out.read_bytes()
    assert stats["judgments"] == total
    # nothing redone: every judgment committed before the kills was read back, not judged again
    assert stats["cached"] >= before
    assert Cache(cache).count() == Cache(tmp_path / "ref.sqlite").count()
    assert kills == 3  # the property was exercised, not skipped by runs that finished first


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
