"""Streaming: prompts read lazily, at most a window held, results in input order; any window, same results."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
from clirun import python_m_tourney, tourney

from strategies.knockout import Knockout
from strategies.registry import STRATEGIES as STRATEGY_CLASSES
from tests.test_engine import CountingJudge, make_items
from tourney.engine import MAX_CALL, SLOW_STEP_S, Engine
from tourney.errors import BackendError, InputError
from tourney.simulated import SimulatedJudge
from tourney.sink import Resume, Sink
from tourney.tournament import Tournament

STRATEGIES = ["knockout", "round-robin", "lucb", "adaptive-knockout", "swiss"]


def outcome(run):
    """What a run's output is made of: ids, scores, rankings and every judgment as recorded."""
    return [(r.item.id, r.scores, r.ranking, [(x.a, x.b, x.vote, x.p_a) for x in r.records]) for r in run.results]


def tournament(strategy):
    budget = 40 if strategy in ("lucb", "adaptive-knockout", "swiss") else None
    return Tournament(strategy, votes=3 if strategy == "knockout" else 1, budget=budget, seed=5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_any_window_and_mode_give_the_same_results(strategy):
    # Mixed sizes, so prompts finish out of input order and wait for the ones before them.
    items = [it for k in range(12) for it in make_items(1, 2 + (k * 5) % 11, seed=k)]
    for k, it in enumerate(items):
        it.id, it.line = f"q{k}", k + 1

    def run(window, pipelined):
        engine = Engine(SimulatedJudge(tau=1.0, invalid_rate=0.1), tournament(strategy), keep_records=True)
        return asyncio.run(engine.arun(iter(items), window)) if pipelined else engine.run(iter(items), window)

    whole = run(None, False)
    assert [r.item.id for r in whole.results] == [it.id for it in items]
    for window in (1, 2, 5, 100):
        for pipelined in (False, True):
            got = run(window, pipelined)
            assert outcome(got) == outcome(whole), (window, pipelined)
            assert got.stats.judgments == whole.stats.judgments


def test_lockstep_never_holds_more_than_the_window_and_reads_lazily():
    read = []

    def items():
        for it in make_items(500, 5):
            read.append(it.id)
            yield it

    engine = Engine(CountingJudge(), Tournament("knockout"))
    stream = engine.stream(items(), window=20)
    first = next(iter(stream))
    assert first.item.id == "p0" and len(read) == 20  # nothing read past the window before the first result
    rest = list(stream)
    assert len(rest) == 499 and stream.stats.peak_held == 20 and stream.stats.prompts == 500


def test_pipelined_never_holds_more_than_the_window():
    async def go():
        stream = Engine(SimulatedJudge(tau=1.0), Tournament("round-robin")).stream(iter(make_items(300, 4)), 7)
        ids = [r.item.id async for r in stream]
        return ids, stream.stats.peak_held

    ids, peak = asyncio.run(go())
    assert ids == [f"p{k}" for k in range(300)] and peak == 7


def test_lockstep_batches_every_ready_vote_of_the_window():
    judge = CountingJudge()
    Engine(judge, Tournament("round-robin")).run(make_items(100, 4), window=25)
    assert judge.calls == [25 * 6] * 4  # one call per window of round robins


def test_a_huge_lockstep_step_is_split_into_calls_of_max_call():
    judge = CountingJudge()
    whole = Engine(judge, Tournament("round-robin")).run(make_items(200, 16))  # 24,000 votes ready at once
    assert judge.calls == [MAX_CALL, 200 * 120 - MAX_CALL] and whole.stats.steps == 1
    one = Engine(SimulatedJudge(), Tournament("round-robin")).run(make_items(200, 16), window=100)  # 12,000: one call
    assert [r.scores for r in one.results] == [r.scores for r in whole.results]


class FailingJudge(SimulatedJudge):
    """Fails on the request for one prompt (its prompt text), as a backend would."""

    def __init__(self, bad):
        super().__init__(tau=1.0)
        self.bad = bad

    async def ajudge(self, requests):
        await asyncio.sleep(0.001 if requests[0].prompt != self.bad else 0)
        if any(r.prompt == self.bad for r in requests):
            raise BackendError("server said no")
        return self.judge(requests)


def test_pipelined_failure_ends_the_run_at_once_and_leaves_no_task():
    async def go():
        stream = Engine(FailingJudge("question 40"), Tournament("knockout")).stream(iter(make_items(60, 8)), 50)
        got = []
        with pytest.raises(BackendError, match="server said no"):
            async for res in stream:
                got.append(res.item.id)
        await asyncio.sleep(0)
        return got, [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    got, left = asyncio.run(go())
    assert len(got) < 40 and left == []  # failed before the head reached prompt 40; every task cancelled


class ThreadRecordingKnockout(Knockout):
    """A knockout that notes the thread of every propose and receive, and spends ``busy`` seconds of CPU in each."""

    busy = 0.0
    threads: list[str] = []

    def _work(self):
        type(self).threads.append(threading.current_thread().name)
        end = time.perf_counter() + self.busy
        while time.perf_counter() < end:  # CPU, as a fit or a matching spends it (a sleep would free the GIL)
            pass

    def propose(self):
        self._work()
        return super().propose()

    def receive(self, match_id, p_i):
        self._work()
        super().receive(match_id, p_i)


@pytest.mark.parametrize("busy", [0.0, 0.003])
def test_pipelined_strategy_work_leaves_the_event_loop_only_once_it_is_slow(monkeypatch, busy):
    monkeypatch.setitem(STRATEGY_CLASSES._where, "recording", "tests.test_stream:ThreadRecordingKnockout")
    recording = STRATEGY_CLASSES["recording"]  # this class as the registry imports it (tests.test_stream)
    monkeypatch.setattr(recording, "busy", busy)
    monkeypatch.setattr(recording, "threads", [])
    items = make_items(20, 6)
    engine = Engine(SimulatedJudge(), Tournament("recording", seed=3), keep_records=True)
    piped = asyncio.run(engine.arun(items, 8))
    threads = recording.threads
    assert threads[0] == threading.main_thread().name  # the loop's thread until steps are seen to be slow
    assert any(t.startswith("tourney-strategy") for t in threads) == (busy > SLOW_STEP_S)
    assert outcome(piped) == outcome(engine.run(items))  # the thread changes nothing but where the work runs


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window"):
        Engine(SimulatedJudge(), Tournament()).stream([], 0)


# ---- the CLI: streamed outputs, window, resume ----------------------------------------------------------------------

SIM = ["--judge", "simulated", "--no-cache"]


def write_prompts(path, prompts, n=4, start=0):
    """``prompts`` rows of ``n`` responses with qualities, for the simulator."""
    with open(path, "w") as f:
        for k in range(start, start + prompts):
            resp = [{"text": f"r{k}.{i}", "quality": (k * 7 + i * 3) % 5} for i in range(n)]
            f.write(json.dumps({"id": f"q{k}", "prompt": f"p{k}", "responses": resp}) + "\n")


def test_20000_prompts_through_a_window_of_100(tmp_path):
    src, out, summary = tmp_path / "in.jsonl", tmp_path / "o.jsonl", tmp_path / "s.json"
    write_prompts(src, 20_000)
    p = tourney("best-of-n", src, "-o", out, "--summary", summary, "--window", 100, *SIM)
    assert p.returncode == 0, p.stderr
    stats = json.loads(summary.read_text())
    assert stats["prompts"] == 20_000 and stats["judgments"] == 20_000 * 3
    assert stats["peak_held"] == 100  # the engine never held more than the window
    assert sum(1 for _ in open(out)) == 20_000


@pytest.mark.parametrize("command", ["rank", "best-of-n", "pairs"])
def test_same_seed_same_bytes_with_any_window_and_mode(tmp_path, command):
    src = tmp_path / "in.jsonl"
    write_prompts(src, 60, n=5)
    got = set()
    for window in (1, 7, 4096):
        for mode in ("lockstep", "pipelined"):
            out, judg = tmp_path / f"o{window}{mode}", tmp_path / f"j{window}{mode}"
            p = tourney(command, src, "-o", out, "--judgments", judg, "--window", window, "--mode", mode, "--seed", 3,
                        "--sim-invalid-rate", 0.1, *SIM)  # fmt: skip
            assert p.returncode == 0, p.stderr
            got.add((out.read_bytes(), judg.read_bytes()))
    assert len(got) == 1 and all(part for part in got.pop())


def test_rows_reach_a_pipe_while_the_run_goes(tmp_path):
    # A real process writing to a pipe: the first row arrives long before the run ends.
    src = tmp_path / "in.jsonl"
    write_prompts(src, 40, n=2)
    proc = subprocess.Popen(python_m_tourney("best-of-n", src, "-o", "-", "--window", 4, "--sim-latency", 0.1,
                                             "--mode", "lockstep", *SIM),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    t0 = time.monotonic()
    first = proc.stdout.readline()
    at_first = time.monotonic() - t0
    rest = proc.stdout.read()
    total = time.monotonic() - t0
    assert proc.wait(timeout=60) == 0 and json.loads(first)["id"] == "q0" and rest.count(b"\n") == 39
    assert at_first < total / 2  # 10 lockstep steps of 0.1 s: the first rows come after the first step or two


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A real ``rank`` process killed -9 part way: its input, the whole run's output, and what the kill left."""
    d = tmp_path_factory.mktemp("killed")
    src, whole = d / "in.jsonl", d / "whole.jsonl"
    write_prompts(src, 40)
    assert tourney("rank", src, "-o", whole, "--seed", 2, *SIM).returncode == 0
    out = d / "o.jsonl"
    proc = subprocess.Popen(python_m_tourney("rank", src, "-o", out, "--seed", 2, "--window", 2, "--mode", "lockstep",
                                             "--sim-latency", 0.05, *SIM), stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    partial = d / "o.jsonl.partial"
    while time.monotonic() < deadline and (not partial.exists() or partial.read_bytes().count(b"\n") < 6):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and whole.read_bytes().startswith(partial.read_bytes())
    return d


def left_by_kill(killed, tmp_path):
    """A copy of what the kill left (input, partial output, resume point), for one test to continue or refuse."""
    for name in ("in.jsonl", "whole.jsonl", "o.jsonl.partial", "o.jsonl.resume"):
        shutil.copy(killed / name, tmp_path / name)
    return tmp_path / "in.jsonl", tmp_path / "o.jsonl"


def test_a_killed_run_continues_after_its_rows_with_any_window(killed, tmp_path):
    src, out = left_by_kill(killed, tmp_path)
    written = (tmp_path / "o.jsonl.partial").read_bytes().count(b"\n")
    summary = tmp_path / "s.json"
    p = tourney("rank", src, "-o", out, "--seed", 2, "--window", 5, "--summary", summary, *SIM)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert not (tmp_path / "o.jsonl.partial").exists() and not (tmp_path / "o.jsonl.resume").exists()
    stats = json.loads(summary.read_text())
    assert 0 < stats["resumed_prompts"] <= written and stats["prompts"] == 40 - stats["resumed_prompts"]
    assert stats["judgments"] == stats["prompts"] * 6  # round robin of 4: only the prompts not written were judged


@pytest.mark.parametrize(("change", "where"), [
    (["--seed", "3"], "o.jsonl.resume: a killed run with other settings or outputs (--seed differs)"),
    (["--strategy", "knockout"], "o.jsonl.resume: a killed run with other settings or outputs (--strategy differs)"),
    (["--judgments", "J"], "o.jsonl.resume: a killed run with other settings or outputs (--judgments differs)"),
    (["--sim-tau", "2", "--votes", "3"], "outputs (--sim-tau, --votes differ)"),
    ("other input", "in.jsonl:"),
    ("short input", "in.jsonl: has 3 prompts"),
])  # fmt: skip
def test_a_resume_that_would_mix_runs_is_refused(killed, tmp_path, change, where):
    src, out = left_by_kill(killed, tmp_path)
    args = ["--seed", "2"]
    if change == "other input":
        write_prompts(src, 40, start=1)  # every id moved by one
    elif change == "short input":
        write_prompts(src, 3)
    else:
        args = [tmp_path / a if a == "J" else a for a in change] + (["--seed", "2"] if "--seed" not in change else [])
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    p = tourney("rank", src, "-o", out, *args, *SIM)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and where in p.stderr, p.stderr
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before  # nothing touched


def test_a_run_that_fails_before_its_first_row_leaves_nothing_to_resume(tmp_path):
    """A failed start (a vLLM engine that cannot load: after the outputs are opened) must not leave a .partial and a
    resume point that then refuse the corrected command."""
    out = tmp_path / "o.jsonl"
    sink = Sink([("--judgments", str(tmp_path / "j.jsonl")), ("-o", str(out))], {"seed": 1})
    sink.open(Resume())
    assert (tmp_path / "o.jsonl.partial").exists() and (tmp_path / "o.jsonl.resume").exists()
    sink.stop()
    assert sorted(f.name for f in tmp_path.iterdir()) == []


def test_a_run_killed_before_its_first_row_does_not_hold_back_another_command(tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "o.jsonl"
    write_prompts(src, 4)
    proc = subprocess.Popen(python_m_tourney("rank", src, "-o", out, "--seed", 2, "--mode", "lockstep",
                                             "--sim-latency", 30, *SIM), stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "o.jsonl.resume").exists():
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "o.jsonl.resume").exists() and not (tmp_path / "o.jsonl.partial").read_bytes()
    p = tourney("rank", src, "-o", out, "--seed", 3, *SIM)  # other settings: nothing was written to go on from
    assert p.returncode == 0, p.stderr
    assert out.read_bytes().count(b"\n") == 4 and not (tmp_path / "o.jsonl.resume").exists()


@pytest.mark.parametrize("left", [b"", b'{"tourney": "res'])
def test_a_resume_file_killed_before_its_first_line_is_nothing_to_resume(tmp_path, left):
    """A kill between creating the resume file and writing its first line (seen in CI) leaves it empty or cut."""
    src, out = tmp_path / "in.jsonl", tmp_path / "o.jsonl"
    write_prompts(src, 2)
    (tmp_path / "o.jsonl.resume").write_bytes(left)
    (tmp_path / "o.jsonl.partial").write_bytes(b"")
    p = tourney("rank", src, "-o", out, "--seed", 3, *SIM)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes().count(b"\n") == 2 and sorted(f.name for f in tmp_path.iterdir()) == ["in.jsonl", "o.jsonl"]
    (tmp_path / "o.jsonl.resume").write_bytes(b"not json\n")  # a first line that is whole but unreadable: refused
    p = tourney("rank", src, "-o", out, "--seed", 3, *SIM)
    assert p.returncode == 2 and "cannot read this resume file" in p.stderr


def test_the_resume_refusal_names_files_as_the_user_does(killed, tmp_path, monkeypatch):
    src, out = left_by_kill(killed, tmp_path)
    monkeypatch.chdir(tmp_path)
    p = tourney("rank", "in.jsonl", "-o", "o.jsonl", "--seed", "3", *SIM)
    assert p.returncode == 2
    assert p.stderr.strip() == (
        "tourney: error: o.jsonl.resume: a killed run with other settings or outputs (--seed differs) left "
        "this; rerun that command to finish it, or delete it and o.jsonl.partial to start over"
    )


@pytest.mark.parametrize("parquet", [True, False])
def test_a_run_that_cannot_resume_says_which_outputs_it_dropped(tmp_path, monkeypatch, parquet):
    """Ctrl-C of ``pairs -o x.parquet --judgments j.jsonl`` (or ``-o - --judgments j.jsonl``) keeps no j.jsonl.partial:
    the interrupted line says so instead of leaving the user to look for it."""
    monkeypatch.chdir(tmp_path)
    streams = [("--judgments", "j.jsonl")] + ([] if parquet else [("-o", "-")])
    sink = Sink(streams, {"seed": 1}, resumable=not parquet)
    assert sink.dropped() == ""
    sink.open(Resume())
    sink.put([["{}"]] * len(streams), "p1")
    sink.stop()
    assert list(tmp_path.iterdir()) == []
    why = "-o is Parquet, written whole at the end" if parquet else "stdout or a FIFO is an output"
    assert sink.dropped() == f"--judgments not kept: {why}, so the run cannot resume"


def test_the_settings_that_differ_are_named_as_options():
    from tourney.sink import changed

    run = {"command": "rank", "judge": {"judge": "a", "seed": 0, "engine_kwargs": {"x": 1}, "sim": {"tau": 1.0}},
           "tournament": {"seed": 0, "elo_k": 32.0}}  # fmt: skip
    other = {"command": "rank", "judge": {"judge": "b", "seed": 1, "engine_kwargs": {"x": 2}, "sim": {"tau": 2.0}},
             "tournament": {"seed": 1, "elo_k": 16.0}}  # fmt: skip
    assert changed(run, other) == ["--elo-k", "--engine-arg", "--judge", "--seed", "--sim-tau"]
    assert changed(run, run) == [] and changed(None, run) == []  # a resume file from before settings were kept
    assert changed(run | {"command": "pairs", "pairing": "best-worst"}, run) == ["it was tourney pairs"]


def test_the_resume_refusal_names_the_partial_file_of_an_output_no_longer_given(tmp_path, monkeypatch):
    """Killed with --judgments, re-run without it: deleting what the refusal names must be enough to start over."""
    monkeypatch.chdir(tmp_path)
    sink = Sink([("--judgments", "j.jsonl"), ("-o", "o.jsonl")], {"seed": 1})
    sink.open(Resume())
    sink.put([["{}"], ["{}"]], "p1")
    sink.stop()  # as a kill leaves them
    assert sorted(f.name for f in tmp_path.iterdir()) == ["j.jsonl.partial", "o.jsonl.partial", "o.jsonl.resume"]
    with pytest.raises(InputError) as err:
        Sink([("-o", "o.jsonl")], {"seed": 1}).resume_point()
    assert str(err.value).endswith("or delete it and o.jsonl.partial and j.jsonl.partial to start over")
    with pytest.raises(InputError) as err:  # the same option, another file: not a resume into an empty j2.jsonl
        Sink([("--judgments", "j2.jsonl"), ("-o", "o.jsonl")], {"seed": 1}).resume_point()
    assert "(--judgments differs)" in str(err.value) and "and o.jsonl.partial and j.jsonl.partial" in str(err.value)
    assert Sink([("--judgments", "j.jsonl"), ("-o", "o.jsonl")], {"seed": 1}).resume_point().prompts == 1


def test_a_reader_that_closes_the_pipe_ends_the_run_quietly_and_leaves_no_partial_file(tmp_path):
    """``tourney rank ... -o - --judgments J | head -1``: the run stops at the closed pipe without a word, exit 141
    (128 + SIGPIPE, as a Unix tool stopped by it), and, as it cannot resume with stdout among its outputs, leaves no
    J.partial behind."""
    src, judgments = tmp_path / "in.jsonl", tmp_path / "j.jsonl"
    write_prompts(src, 200)
    proc = subprocess.Popen(python_m_tourney("rank", src, "-o", "-", "--judgments", judgments, "--window", 1,
                                             "--mode", "lockstep", "--sim-latency", 0.01, *SIM),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert json.loads(proc.stdout.readline())["id"] == "q0"
    proc.stdout.close()  # as head -1 exits
    assert proc.wait(timeout=60) == 141 and proc.stderr.read() == b""
    assert sorted(f.name for f in tmp_path.iterdir()) == ["in.jsonl"]
