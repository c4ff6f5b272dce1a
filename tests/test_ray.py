"""--backend ray on a private Ray cluster on 127.0.0.1: two CPU replicas of the tiny model give the bytes of
--backend vllm; a replica killed mid-run (ray.kill, kill -9) or its node removed changes neither the output nor the
judgments made; a replica that never comes back ends the run; a request the cluster cannot place is refused before
any model loads. Ray's temporary folder is this module's own, and nothing is left running."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from clirun import python_m_tourney, tourney

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

WORDS = "alpha beta gamma delta step sum answer check value because".split()
RUN = ["--family", "rm-r1", "--max-tokens", "24"]  # every run alike: short forced judgments of the tiny random model


@pytest.fixture(scope="module")
def ray_dir() -> Iterator[str]:
    """Ray's environment for the module: its own short temporary folder (socket paths are limited to 107 bytes),
    no token (a private test cluster), loopback only; afterwards no Ray process of this folder may be left."""
    folder = tempfile.mkdtemp(prefix="tray-", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", folder)
        mp.setenv("RAY_AUTH_MODE", "disabled")
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's switch for "this machine only": loopback
        yield folder
    left = ray_processes(folder)
    shutil.rmtree(folder, ignore_errors=True)
    assert not left, f"Ray processes left running: {left}"


def ray_processes(folder: str) -> list[str]:
    """Command lines of the processes that run in ``folder``'s Ray sessions (raylet, GCS, workers)."""
    out = subprocess.run(["pgrep", "-af", folder], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 prompts x 6 responses (knockout: 80 judgments), seeded."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("ray-rows") / "rows.jsonl"
    with path.open("w") as f:
        for k in range(16):
            responses = [" ".join(rng.choices(WORDS, k=rng.randint(3, 30))) for _ in range(6)]
            f.write(json.dumps({"id": f"p{k}", "prompt": f"Q{k}: " + " ".join(rng.choices(WORDS, k=12)),
                                "responses": responses}) + "\n")  # fmt: skip
    return path


@pytest.fixture(scope="module")
def reference(rows: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Any]:
    """``--backend vllm`` on the same rows in a process of its own (started at once, read when first needed):
    (output bytes, summary)."""
    out = tmp_path_factory.mktemp("ray-ref")
    env = os.environ | {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    proc = subprocess.Popen(python_m_tourney("best-of-n", rows, "-o", out / "ref.jsonl", "--judge", tiny_model_dir,
                                             "--no-cache", "--summary", out / "ref.json", *RUN),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    done: list[Any] = []

    def get() -> Any:
        if not done:
            _, err = proc.communicate(timeout=900)
            assert proc.returncode == 0, err[-2000:]
            done.append(((out / "ref.jsonl").read_bytes(), json.loads((out / "ref.json").read_text())))
        return done[0]

    yield get
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_private_cluster_gives_the_bytes_of_the_vllm_backend(ray_dir, rows, reference, tiny_model_dir, tmp_path):
    model = ["--judge", tiny_model_dir]
    # The dry run checks the cluster and says where the replicas go; a private cluster is this machine, on 127.0.0.1.
    dry = tourney("best-of-n", rows, *model, "--backend", "ray", "--replicas", "2", "--dry-run", *RUN)
    assert dry.returncode == 0, dry.stderr
    assert "ray: node 127.0.0.1: replicas 0, 1" in dry.stderr and "each replica takes 1 CPU" in dry.stderr
    # More than the cluster holds: one line, exit 2, before any model loads (the dry run and the real run alike).
    for extra in (["--dry-run"], ["-o", tmp_path / "no.jsonl"]):
        t0 = time.monotonic()
        bad = tourney("best-of-n", rows, *model, "--backend", "ray", "--replicas", "2", "--tensor-parallel-size", "2",
                      *extra, *RUN)  # fmt: skip
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.count("\n") == 1 and "do not fit the cluster" in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr and time.monotonic() - t0 < 90  # no model loaded: ~10 s idle
    assert not (tmp_path / "no.jsonl").exists()
    out = tmp_path / "ray.jsonl"
    run = tourney("best-of-n", rows, "-o", out, *model, "--backend", "ray", "--replicas", "2", "--no-cache", *RUN)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == reference()[0]
    assert not ray_processes(ray_dir)  # the private cluster ended with the run


@pytest.fixture(scope="module")
def cluster(ray_dir: str) -> Iterator[Any]:
    """A simulated two-node cluster (head and one worker, 2 logical CPUs each) that this process is connected to."""
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 128 << 20,
                                                       "include_dashboard": False})  # fmt: skip
    c.add_node(num_cpus=2, object_store_memory=128 << 20)
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def replica(index: int) -> Any:
    """The handle of the running tourney's replica ``index`` (its actors are named)."""
    import ray

    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith("tourney-") and actor["name"].endswith(f"-replica-{index}"):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise AssertionError(f"no replica {index} running")


def run_with(cluster: Any, rows: Path, model: Path, tmp_path: Path, act: Callable[[], None], *extra: Any) -> Any:
    """Run best-of-n on the cluster in a thread, in lockstep (its replicas start in a third of the time: no engine
    core process); once 10 judgments are committed, ``act`` (kill something).
    Returns (the run, output path, summary path, cache path)."""
    out, summary, cache = tmp_path / "o.jsonl", tmp_path / "s.json", tmp_path / "c.sqlite"
    result: list[Any] = []
    args = ["best-of-n", rows, "-o", out, "--judge", model, "--backend", "ray", "--ray-address", cluster.address,
            "--cache", cache, "--summary", summary, "--mode", "lockstep", *RUN, *extra]  # fmt: skip
    thread = threading.Thread(target=lambda: result.append(tourney(*args)))
    thread.start()
    deadline = time.monotonic() + 600
    while thread.is_alive() and committed(cache) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert thread.is_alive() and committed(cache) < 80, f"the run ended before anything could be killed: {result}"
    act()
    thread.join(timeout=900)
    assert result, "the run did not end"
    return result[0], out, summary, cache


def committed(cache: Path) -> int:
    """Judgments in the cache so far (0 before it exists)."""
    try:
        with sqlite3.connect(f"file:{cache}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT count(*) FROM judgments").fetchone()[0])
    except sqlite3.Error:
        return 0


def pid_of(handle: Any) -> int:
    """The replica's process id (it answers pings while its engine works)."""
    import ray

    return int(ray.get(handle.ping.remote(), timeout=60))


@pytest.mark.parametrize("how", ["ray.kill", "kill -9"])
def test_a_replica_killed_mid_run_changes_nothing(how, cluster, rows, reference, tiny_model_dir, tmp_path):
    import ray

    def kill() -> None:
        if how == "ray.kill":
            ray.kill(replica(0), no_restart=False)  # Ray restarts it (max_restarts)
        else:
            os.kill(pid_of(replica(0)), signal.SIGKILL)

    run, out, summary, cache = run_with(cluster, rows, tiny_model_dir, tmp_path, kill, "--replicas", "2")
    assert run.returncode == 0, run.stderr
    ref_bytes, ref_summary = reference()
    assert out.read_bytes() == ref_bytes
    s = json.loads(summary.read_text())
    # Every judgment made once: the same count as the reference, none cached, one cache row each; the calls in
    # flight at the kill were handed to the other replica (the closing line's "retries").
    assert (s["judgments"], s["cached"]) == (ref_summary["judgments"], 0)
    assert committed(cache) == s["judgments"] and s["retries"] >= 1


def test_a_replicas_engine_process_killed_mid_run_changes_nothing(cluster, rows, reference, tiny_model_dir, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    """With vLLM's engine in a process of its own (a GPU's default), the OOM killer taking it ends that replica, which
    Ray restarts and whose calls go on elsewhere, as for a replica killed: not the run."""
    import psutil

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # forwarded to the replicas

    def kill_engine() -> None:
        procs = psutil.Process(pid_of(replica(0))).children(recursive=True)
        engines = [p for p in procs if "guard.py" not in " ".join(p.cmdline())]
        assert engines, "the replica's engine has no process of its own"
        for p in engines:
            p.kill()

    run, out, summary, cache = run_with(cluster, rows, tiny_model_dir, tmp_path, kill_engine, "--replicas", "2")
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == reference()[0]
    s = json.loads(summary.read_text())
    assert (s["judgments"], s["cached"]) == (reference()[1]["judgments"], 0) and committed(cache) == s["judgments"]
    assert s["retries"] >= 1


def test_a_node_lost_mid_run_changes_nothing(cluster, rows, reference, tiny_model_dir, tmp_path):
    import ray

    worker = next(n for n in cluster.list_all_nodes() if not n.head)
    run, out, summary, cache = run_with(cluster, rows, tiny_model_dir, tmp_path, lambda: cluster.remove_node(worker),
                                        "--replicas", "2")  # fmt: skip
    try:
        assert run.returncode == 0, run.stderr
        assert out.read_bytes() == reference()[0]
        s = json.loads(summary.read_text())
        assert (s["judgments"], s["cached"]) == (reference()[1]["judgments"], 0) and committed(cache) == s["judgments"]
    finally:
        cluster.add_node(num_cpus=2, object_store_memory=128 << 20)
        cluster.wait_for_nodes()
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2


def test_a_replica_that_cannot_come_back_ends_the_run(cluster, rows, reference, tiny_model_dir, tmp_path):
    import ray

    # One replica, killed for good: no replica is left to take its calls, and Ray will not restart it.
    run, out, _, cache = run_with(cluster, rows, tiny_model_dir, tmp_path,
                                  lambda: ray.kill(replica(0), no_restart=True))  # fmt: skip
    assert run.returncode == 1, run.stderr
    line = [x for x in run.stderr.splitlines() if x.startswith("tourney: judge failed")]
    assert len(line) == 1 and "replica 0 (node 127.0.0.1) was lost and Ray will not restart it" in line[0], line
    assert "Traceback" not in run.stderr and not out.exists()
    kept = committed(cache)
    assert kept >= 10  # what was judged before the loss is cached: the next run starts from it
    again = tourney("best-of-n", rows, "-o", out, "--judge", tiny_model_dir, "--backend", "ray", "--ray-address",
                    cluster.address, "--cache", cache, "--summary", tmp_path / "s2.json", "--mode", "lockstep",
                    *RUN)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert out.read_bytes() == reference()[0]
    assert json.loads((tmp_path / "s2.json").read_text())["cached"] == kept
