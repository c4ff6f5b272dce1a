"""The CLI as a careful Unix tool: outputs that are links, FIFOs or devices; modes; contradictory options; warnings;
dry runs against the cache; interrupts; counters that mean the same in both engine modes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clirun import INTERRUPTED, on_a_terminal, python_m_tourney, tourney
from servers import FakeServer

EXAMPLE = Path(__file__).parents[1] / "examples" / "best_of_n.jsonl"
SIM = ["--judge", "simulated", "--no-cache"]


def process(*args, umask=None):
    """Run a real ``python -m tourney`` (for what needs its own process: pipes as fds, a umask); text mode."""
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run(python_m_tourney(*args), capture_output=True, text=True, timeout=120, preexec_fn=pre)


def one_error(p: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single stderr line of a failed run (no traceback), after checking the exit code."""
    lines = p.stderr.strip().splitlines()
    assert p.returncode == code and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


# ---- outputs -------------------------------------------------------------------------------------------------------


def test_symlink_output_writes_its_target_and_stays_a_link(tmp_path):
    target, link = tmp_path / "real.jsonl", tmp_path / "link.jsonl"
    target.write_text("old\n")
    link.symlink_to(target)
    assert tourney("rank", EXAMPLE, "-o", link, *SIM).returncode == 0
    assert link.is_symlink() and len(target.read_text().splitlines()) == 3


def test_a_symlink_into_a_missing_folder_names_that_folder(tmp_path):
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "nodir" / "x.jsonl")
    p = tourney("rank", EXAMPLE, "-o", link, *SIM)
    assert p.returncode == 2 and link.is_symlink() and not (tmp_path / "nodir").exists()
    assert (
        p.stderr == f"tourney: error: {link}: cannot write: no such directory ({tmp_path / 'nodir'}, where the link "
        "points)\n"
    )


def test_fifo_output_is_streamed_and_never_replaced(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    p = process("rank", EXAMPLE, "-o", fifo, *SIM)
    reader.join(timeout=60)
    assert p.returncode == 0, p.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and len(got[0].splitlines()) == 3
    assert os.listdir(tmp_path) == ["out.fifo"]  # no temp file left beside it


def test_dev_null_stays_a_device_and_dev_full_is_an_error(tmp_path):
    assert tourney("rank", EXAMPLE, "-o", "/dev/null", "--judgments", "/dev/null", *SIM).returncode == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    line = one_error(tourney("rank", EXAMPLE, "-o", "/dev/full", *SIM))
    assert line.startswith("tourney: error: /dev/full: cannot write: No space left on device")


def test_dev_stdout_on_a_pipe_is_streamed_and_counts_as_stdout(tmp_path):
    # capture_output makes stdout and stderr pipes: /dev/stdout is then a link to "pipe:[N]", not to a path.
    p = process("rank", EXAMPLE, "-o", "/dev/null", "--summary", "/dev/stdout", "--judgments", "/dev/stderr", *SIM)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["judgments"] == 6 + 6 + 3 and p.stderr.count('"verdict"') == 15
    line = one_error(process("rank", EXAMPLE, "-o", "-", "--summary", "/dev/stdout", *SIM))
    assert line == "tourney: error: --summary and --output name the same file (/dev/stdout)"
    assert os.listdir(tmp_path) == []


def test_stdout_redirected_to_a_file_is_that_file(tmp_path):
    """``-o - > F`` with ``--judgments /dev/stdout`` wrote both into F (the rows were lost); ``>> INPUT`` read the run's
    own rows back in: both refused, nothing written."""
    src = tmp_path / "in.jsonl"
    shutil.copy(EXAMPLE, src)
    before = src.read_bytes()

    def run(*args, out, stdin=None):
        with open(out, "ab") as f:
            return subprocess.run(python_m_tourney(*args), stdout=f, stderr=subprocess.PIPE, stdin=stdin, text=True,
                                  timeout=120)  # fmt: skip

    p = run("rank", src, "-o", "-", "--judgments", "/dev/stdout", *SIM, out=tmp_path / "both.txt")
    assert one_error(p) == "tourney: error: --judgments and --output name the same file (/dev/stdout)"
    assert (tmp_path / "both.txt").read_bytes() == b""
    same = "tourney: error: --output and INPUT name the same file (stdout)"
    assert one_error(run("rank", src, *SIM, out=src)) == same
    with open(src, "rb") as stdin:
        assert one_error(run("rank", "-", *SIM, out=src, stdin=stdin)) == same
    assert src.read_bytes() == before
    assert run("rank", src, *SIM, out=tmp_path / "o.jsonl").returncode == 0  # a file of its own: fine


def test_new_files_get_the_umask_mode_and_existing_files_keep_theirs(tmp_path):
    new, old = tmp_path / "new.jsonl", tmp_path / "old.jsonl"
    assert process("rank", EXAMPLE, "-o", new, *SIM, umask=0o027).returncode == 0
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    old.write_text("x\n")
    old.chmod(0o604)
    assert process("rank", EXAMPLE, "-o", old, *SIM, umask=0o077).returncode == 0
    assert stat.S_IMODE(old.stat().st_mode) == 0o604 and old.read_text() != "x\n"


def test_write_errors_name_the_users_path_not_a_temp_file(tmp_path):
    line = one_error(tourney("rank", EXAMPLE, "-o", "/proc/tourney-out.jsonl", *SIM))
    assert "/proc/tourney-out.jsonl" in line and ".tmp" not in line and "cannot write" in line


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["-o", "{d}/x.jsonl", "--judgments", "{d}/x.jsonl"], ["--judgments", "--output"]),
        (["-o", "{d}/x.jsonl", "--summary", "{d}/link"], ["--summary", "--output"]),
        (["-o", "{input}"], ["--output", "INPUT"]),
    ],
)
def test_two_outputs_naming_one_file_are_refused_before_any_work(tmp_path, args, names):
    src = tmp_path / "in.jsonl"
    src.write_text(EXAMPLE.read_text())
    (tmp_path / "link").symlink_to(tmp_path / "x.jsonl")
    before = sorted(os.listdir(tmp_path))
    line = one_error(tourney("rank", src, *[a.format(d=tmp_path, input=src) for a in args], *SIM))
    assert all(n in line for n in names) and "same file" in line
    assert sorted(os.listdir(tmp_path)) == before and src.read_text() == EXAMPLE.read_text()


# ---- options -------------------------------------------------------------------------------------------------------

CLASHES = [
    (["--strategy", "knockout", "--rating", "bt"], ["--rating", "--strategy knockout"]),
    (["--rating", "bt", "--elo-k", "10"], ["--elo-k", "--rating bt"]),
    (["--no-cache", "--cache", "c.sqlite"], ["--cache", "--no-cache"]),
    (["--family", "rrm"], ["--family", "--judge simulated"]),
    (["--backend", "openai"], ["--backend", "--judge simulated"]),
    (["--backend", "vllm"], ["--backend", "--judge simulated"]),  # the default, but given: ignored all the same
    (["--max-tokens", "10"], ["--max-tokens", "--judge simulated"]),
    (["--quiet", "--verbose"], ["--quiet", "--verbose"]),
    (["--dry-run", "-o", "x.jsonl"], ["--output", "--dry-run"]),
]


@pytest.mark.parametrize(("args", "names"), CLASHES)
def test_contradictory_or_ignored_options_are_refused_naming_both(tmp_path, args, names):
    line = one_error(tourney("rank", EXAMPLE, "--judge", "simulated", *args))
    assert all(n in line for n in names), line


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--sim-tau", "2"], ["--sim-tau", "--judge simulated"]),
        (["--dtype", "float32", "--backend", "openai", "--base-url", "http://127.0.0.1:9"], ["--dtype", "openai"]),
        (["--concurrency", "4"], ["--concurrency", "--backend openai"]),
        (["--base-url", "http://127.0.0.1:9"], ["--base-url", "--backend openai"]),
    ],
)
def test_model_judge_option_clashes(args, names):
    began = time.monotonic()
    line = one_error(tourney("rank", EXAMPLE, "--judge", "smollm2", "--no-cache", *args))
    assert all(n in line for n in names) and time.monotonic() - began < 30  # before any model loads


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["--dtype", "float13"], "'float13' is not one of"),
        (["--backend", "openai", "--base-url", "localhost:18123"], "--base-url: expected http://HOST"),
        (["--family", "missing.toml"], "missing.toml"),
    ],
)
def test_bad_option_values_fail_before_any_model_loads(args, what):
    began = time.monotonic()
    line = one_error(tourney("rank", EXAMPLE, "--judge", "Reward-Reasoning/RRM-7B", "--no-cache", *args))
    assert what in line and time.monotonic() - began < 30


def test_unknown_model_name_warns_which_family_it_falls_back_to(tmp_path):
    p = tourney("rank", EXAMPLE, "--judge", "someone/plain-chat-model", "--no-cache", "--dry-run",
                env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert "names no known family; using rm-r1's prompt and verdict, and its budget of 32768 tokens a judgment (set " \
           "--family or --max-tokens)" in p.stderr  # fmt: skip
    assert p.returncode == 1 and "cannot load model 'someone/plain-chat-model'" in p.stderr  # no hub here
    p = tourney("rank", EXAMPLE, "--judge", "someone/plain-chat-model", "--no-cache", "--dry-run", "--max-tokens", 96,
                env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert "names no known family; using rm-r1's prompt and verdict (set --family)" in p.stderr


# ---- what the user is told -----------------------------------------------------------------------------------------


def test_closing_line_and_warnings_for_invalid_verdicts(tmp_path):
    summary = tmp_path / "s.json"
    p = tourney("rank", EXAMPLE, *SIM, "--sim-invalid-rate", "1", "--summary", summary, "-o", tmp_path / "o")
    assert p.returncode == 0
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("tourney: 15 judgments (0 cached), 15 invalid, 0 forced, 1 judge call, 0 retries")
    assert "15 of 15 judgments (100%) had no verdict" in lines[1]
    assert 'no verdict at all (their rankings say nothing): "capital", "arithmetic", "chat"' in lines[2]
    assert json.loads(summary.read_text())["all_invalid_prompts"] == ["capital", "arithmetic", "chat"]
    quiet = tourney("rank", EXAMPLE, *SIM, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_dry_run_counts_new_and_cached_judgments(tmp_path):
    cache = tmp_path / "c.sqlite"
    base = ["rank", EXAMPLE, "--judge", "simulated", "--cache", cache]
    assert json.loads(tourney(*base, "--dry-run").stdout)["new"] == 15
    assert not cache.exists() or json.loads(tourney(*base, "--dry-run").stdout)["cached"] == 0
    assert tourney(*base, "-o", tmp_path / "o").returncode == 0
    done = json.loads(tourney(*base, "--dry-run").stdout)
    assert (done["judgments"], done["new"], done["cached"]) == (15, 0, 15)
    votes = json.loads(tourney(*base, "--dry-run", "--votes", "2").stdout)
    # Vote 0 of a match is cached when it was shown in the order the single vote's coin chose.
    assert votes["judgments"] == 30 and 0 < votes["cached"] < 15 and votes["new"] == 30 - votes["cached"]
    # The count is what the run makes, or (exact false) the most it may: a bound a user must not read as a cost.
    assert done["exact"] and votes["exact"]
    for more in (
        ["--votes", "3", "--adaptive-votes"],
        ["--strategy", "lucb", "--budget", "20"],
        ["--strategy", "adaptive-knockout", "--budget", "20"],
        ["--strategy", "swiss", "--budget", "20"],
    ):
        assert json.loads(tourney(*base, "--dry-run", *more).stdout)["exact"] is False, more
    assert json.loads(tourney(*base, "--dry-run", "--strategy", "knockout").stdout)["exact"] is True


def test_a_round_robin_dry_run_plays_only_the_prompts_the_cache_has(tmp_path):
    """A round robin's plan is exact: prompts with nothing cached are counted from it, not played (a prompt of 3,000
    responses took minutes to play); the counts are those of playing every prompt."""
    cache = tmp_path / "c.sqlite"
    first = tmp_path / "first.jsonl"
    first.write_text(EXAMPLE.read_text().splitlines()[0] + "\n")
    assert tourney("rank", first, "--judge", "simulated", "--cache", cache, "--votes", "2", "-o", "-").returncode == 0
    got = json.loads(tourney("rank", EXAMPLE, "--judge", "simulated", "--cache", cache, "--votes", "2",
                             "--dry-run").stdout)  # fmt: skip
    assert got == {"prompts": 3, "judgments": 30, "new": 18, "cached": 12, "strategy": "round-robin", "exact": True}
    knockout = json.loads(tourney("rank", EXAMPLE, "--judge", "simulated", "--cache", cache, "--strategy",
                                  "knockout", "--dry-run").stdout)  # fmt: skip
    assert knockout["judgments"] == 3 + 3 + 2  # played: a knockout's plan is only its bound


def test_a_prompt_that_plans_a_huge_tournament_is_named(tmp_path, monkeypatch):
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"prompt": "p", "responses": [{"text": f"r{i}", "quality": i % 5} for i in range(450)]}))
    p = tourney("rank", big, *SIM, "--dry-run")
    assert json.loads(p.stdout)["judgments"] == 450 * 449 // 2
    assert p.stderr.startswith("tourney: warning: a prompt with 450 responses plans 101,025 judgments (round-robin")
    assert "warning" not in tourney("rank", big, *SIM, "--dry-run", "--strategy", "knockout").stderr
    # A budget the user set is the bound: the warning says so, and does not advise a budget (at a lower threshold:
    # a dry run plays a budgeted strategy to its bound, 100,000 judgments would take seconds).
    monkeypatch.setattr("tourney.cli.judging.HUGE_PROMPT", 1000)
    p = tourney("rank", EXAMPLE, *SIM, "--dry-run", "--budget", "1000")
    assert (
        p.stderr == "tourney: warning: a prompt with 4 responses may make up to 1,000 judgments (lucb, --budget"
        " 1000 counts judgments per prompt)\n"
    ), p.stderr


def test_an_output_that_is_the_input_under_another_name_is_refused(tmp_path):
    """A hard link to the input, /dev/stdin when the input is the pipe on stdin, the file stdin reads: one line,
    nothing written."""
    src, link = tmp_path / "in.jsonl", tmp_path / "link.jsonl"
    src.write_bytes(EXAMPLE.read_bytes())
    os.link(src, link)
    line = one_error(tourney("rank", src, *SIM, "-o", link))
    assert line == f"tourney: error: --output and INPUT name the same file ({link})"
    assert src.read_bytes() == EXAMPLE.read_bytes() and sorted(os.listdir(tmp_path)) == ["in.jsonl", "link.jsonl"]
    p = subprocess.run(python_m_tourney("rank", "-", *SIM, "-o", "/dev/stdin"), input=EXAMPLE.read_text(),
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert one_error(p) == "tourney: error: --output and INPUT name the same file (/dev/stdin)"
    with open(src) as stdin:  # `tourney rank - -o in.jsonl < in.jsonl`
        p = subprocess.run(python_m_tourney("rank", "-", *SIM, "-o", src), stdin=stdin, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert one_error(p) == f"tourney: error: --output and INPUT name the same file ({src})"
    assert src.read_bytes() == EXAMPLE.read_bytes()


def test_a_dry_run_creates_no_cache_and_registers_no_judge(tmp_path):
    cache = tmp_path / "c.sqlite"
    p = tourney("rank", EXAMPLE, "--judge", "simulated", "--cache", cache, "--dry-run")
    assert p.returncode == 0 and json.loads(p.stdout)["cached"] == 0 and not cache.exists()
    assert tourney("rank", EXAMPLE, "--judge", "simulated", "--cache", cache, "-o", tmp_path / "o").returncode == 0
    p = tourney("rank", EXAMPLE, "--judge", "simulated", "--sim-tau", "2", "--cache", cache, "--dry-run")
    assert p.returncode == 0 and json.loads(p.stdout)["cached"] == 0  # another judge: nothing of it cached
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM judges").fetchone() == (1,)  # the run's judge only


def test_a_server_that_does_not_answer_at_start_is_said_while_retrying(tmp_path):
    p = tourney("rank", EXAMPLE, "--backend", "openai", "--judge", "m", "--base-url", "http://127.0.0.1:9/v1",
                "--max-retries", "1", "--family", "rrm", "--no-cache", "-o", tmp_path / "o.jsonl")  # fmt: skip
    lines = p.stderr.splitlines()
    assert p.returncode == 1 and len(lines) == 2 and not (tmp_path / "o.jsonl").exists(), p.stderr
    assert lines[0].startswith("tourney: http://127.0.0.1:9/v1/models: connection failed")
    assert lines[0].endswith("; retrying (1 of 1, --max-retries)")
    assert lines[1].startswith("tourney: judge failed: ") and "(gave up after 2 attempts)" in lines[1]


def test_counters_mean_the_same_in_both_modes(tmp_path):
    stats = {}
    for mode in ("lockstep", "pipelined"):
        s = tmp_path / f"{mode}.json"
        p = tourney("best-of-n", EXAMPLE, *SIM, "--mode", mode, "--sim-latency", "0.2", "--summary", s,
                    "-o", tmp_path / "o")  # fmt: skip
        assert p.returncode == 0, p.stderr
        stats[mode] = json.loads(s.read_text())
    for st in stats.values():
        assert st["steps"] == 2  # a knockout of 4 (the largest prompt) takes 2 rounds
        assert st["wall_s"] >= st["judge_s"] >= 0.2 * 2 * 0.9  # at least two sequential 0.2 s calls
    assert stats["lockstep"]["judgments"] == stats["pipelined"]["judgments"] == 3 + 3 + 2


def test_the_closing_time_is_the_whole_process(tmp_path):
    """A real process: the closing line's seconds and ``wall_s`` count from the process's start (interpreter and
    imports included), so they match what the user waited, up to the exit after the line. The process sleeps a
    second before tourney's ``main`` runs (as a slow import would), and that second must be in both."""
    s = tmp_path / "s.json"
    args = ["rank", str(EXAMPLE), *SIM, "--sim-latency", "0.5", "--summary", str(s), "-o", str(tmp_path / "o.jsonl")]
    code = f"import runpy, sys, time; time.sleep(1.0); sys.argv = {['tourney', *args]!r}; runpy.run_module('tourney')"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    waited = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    said = float(re.search(r", ([0-9.]+) s$", p.stderr.strip().splitlines()[-1]).group(1))
    st = json.loads(s.read_text())
    assert waited - 1.0 <= said <= waited + 0.05 and st["wall_s"] <= said + 0.05  # the exit follows the line
    assert st["wall_s"] >= 1.0 + st["judge_s"], st  # the second before main is in it (a clock started by main: 0.3)


# ---- interrupts ------------------------------------------------------------------------------------------------------


def interrupt(args: list, cache: Path) -> tuple[subprocess.CompletedProcess, int]:
    """Start tourney, send SIGINT once the cache holds a judgment; return the process and the judgments stored."""
    import sqlite3

    def stored() -> int:
        if not cache.exists():
            return 0
        try:
            return sqlite3.connect(cache).execute("SELECT COUNT(*) FROM judgments").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not made yet
            return 0

    proc = subprocess.Popen(python_m_tourney(*args, "--cache", cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while stored() == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), stored()


def test_ctrl_c_on_the_simulator_keeps_what_was_judged(tmp_path):
    args = ["best-of-n", EXAMPLE, "--judge", "simulated", "--sim-latency", "2", "-o", tmp_path / "o"]
    p, rows = interrupt(args, tmp_path / "c.sqlite")  # between the first and the second 2-second round
    assert INTERRUPTED.fullmatch(one_error(p, 130)) and p.stderr.count("\n") == 1  # no blank line before it
    assert rows >= 1 and not (tmp_path / "o").exists()


def test_ctrl_c_without_a_cache_says_nothing_was_kept(tmp_path):
    proc = subprocess.Popen(python_m_tourney("best-of-n", EXAMPLE, "--judge", "simulated", "--sim-latency", "5",
                                             "--no-cache", "-o", tmp_path / "o"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(3)  # past the start, into the first 5-second round
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    line = one_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 130)
    assert line == "tourney: interrupted (nothing is cached: --no-cache)" and not (tmp_path / "o").exists()


def test_ctrl_c_on_the_server_backend_is_one_line(tmp_path):
    src = tmp_path / "in.jsonl"  # one quick prompt (1 judgment), then 75 judgments that take ~10 s
    rows_in = [{"prompt": "q0", "responses": ["a", "b"]}]
    rows_in += [{"prompt": f"q{k}", "responses": [f"r{i}" for i in range(6)]} for k in range(1, 6)]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows_in))
    with FakeServer(delay=0.5) as srv:
        args = ["rank", src, "--judge", "fake", "--family", "rm-r1", "--backend", "openai", "--base-url", srv.url,
                "--concurrency", "4", "--verdict", "parse", "-o", tmp_path / "o"]  # fmt: skip
        p, rows = interrupt(args, tmp_path / "c.sqlite")
    assert INTERRUPTED.fullmatch(one_error(p, 130))
    assert rows >= 1 and "Task was destroyed" not in p.stderr


# ---- what a terminal shows ---------------------------------------------------------------------------------------


def test_the_bar_counts_cached_judgments_at_once_and_moves(tmp_path):
    cache = tmp_path / "c.sqlite"
    first = tmp_path / "first.jsonl"
    first.write_text(EXAMPLE.read_text().splitlines()[0] + "\n")  # 4 responses: 6 pairs x 3 votes = 18 judgments
    common = ["--judge", "simulated", "--votes", "3", "--cache", cache, "--strategy", "round-robin"]
    assert process("rank", first, *common, "-o", tmp_path / "warm.jsonl").returncode == 0
    code, screen = on_a_terminal(["rank", EXAMPLE, *common, "--sim-latency", "1", "-o", tmp_path / "o.jsonl"])
    assert code == 0, screen
    counts = {int(k) for k in re.findall(r"judging[^\r\n]*? (\d+)/45", screen)}
    assert 18 in counts and 45 in counts, screen  # the 18 cached ones shown while the rest were being judged
    assert "tourney: 45 judgments (18 cached)" in screen


def test_warnings_and_errors_are_coloured_on_a_terminal_only(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, screen = on_a_terminal(["rank", empty, *SIM, "-o", tmp_path / "o.jsonl"], raw=True)
    assert code == 0 and "tourney: \x1b[33mwarning:\x1b[0m " in screen, screen
    code, screen = on_a_terminal(["rank", tmp_path / "missing.jsonl", *SIM, "-o", tmp_path / "o.jsonl"], raw=True)
    assert code == 2 and "tourney: \x1b[31merror:\x1b[0m " in screen, screen
    env = dict(os.environ, NO_COLOR="1")
    code, screen = on_a_terminal(["rank", empty, *SIM, "-o", tmp_path / "o.jsonl"], raw=True, env=env)
    assert code == 0 and "tourney: warning: " in screen and "\x1b[33m" not in screen
    p = process("rank", empty, *SIM, "-o", tmp_path / "o.jsonl")  # stderr a pipe: no colour
    assert "tourney: warning: " in p.stderr and "\x1b" not in p.stderr


def test_an_output_that_is_the_cache_and_a_cache_in_no_folder_are_refused(tmp_path):
    """`--cache f -o f` would replace the judgments just made with the output; a mistyped --cache folder would be
    created anywhere: both one line before any work (only the default cache folder is made)."""
    cache = tmp_path / "c.sqlite"
    sim = ["--judge", "simulated"]
    for cmd, option in (("rank", "-o"), ("pairs", "-o"), ("best-of-n", "--summary")):
        line = one_error(tourney(cmd, EXAMPLE, *sim, "--cache", cache, option, cache))
        flag = "--output" if option == "-o" else option
        assert line == f"tourney: error: {flag} and --cache name the same file ({cache})"
    assert tourney("rank", EXAMPLE, *sim, "--cache", cache, "-o", tmp_path / "r.jsonl").returncode == 0
    line = one_error(tourney("rank", EXAMPLE, *sim, "--cache", cache, "--judgments", tmp_path / "." / "c.sqlite"))
    assert line.startswith("tourney: error: --judgments and --cache name the same file")  # an existing cache: by inode
    db = sqlite3.connect(cache)
    assert db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0] > 0
    db.close()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "2+2?"}\n')
    samples = tmp_path / "s.sqlite"
    line = one_error(tourney("sample", prompts, "--cache", samples, "-o", samples))
    assert line == f"tourney: error: --output and --cache name the same file ({samples})"
    missing = tmp_path / "no" / "such" / "c.sqlite"
    for cmd in (["rank", EXAMPLE, *sim], ["rank", EXAMPLE, *sim, "--dry-run"], ["sample", prompts, "--dry-run"]):
        line = one_error(tourney(*cmd, "--cache", missing))
        assert line == f"tourney: error: {missing}: cannot create the cache: no such directory"
    assert not (tmp_path / "no").exists() and sorted(os.listdir(tmp_path)) == ["c.sqlite", "prompts.jsonl", "r.jsonl"]


def test_an_input_that_is_a_pipe_by_name_is_read_once_and_judged_whole(tmp_path):
    """A FIFO, /dev/stdin or <(zcat f) cannot be read twice: it is spooled as '-' is (it came back empty, exit 0, or
    hung on the FIFO's second open)."""
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(EXAMPLE.read_bytes()))
    writer.start()
    p = tourney("rank", fifo, *SIM, "-o", tmp_path / "o.jsonl")
    writer.join(timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "o.jsonl").read_bytes() == tourney("rank", EXAMPLE, *SIM).stdout.encode()
    piped = subprocess.run(python_m_tourney("rank", "/dev/stdin", *SIM), input=EXAMPLE.read_text(),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert piped.returncode == 0 and piped.stdout.encode() == (tmp_path / "o.jsonl").read_bytes(), piped.stderr


def test_the_default_cache_is_never_an_output_and_empty_paths_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TOURNEY_CACHE_DIR", str(tmp_path / "cache"))
    sim = ["--judge", "simulated"]
    assert tourney("rank", EXAMPLE, *sim, "-o", tmp_path / "r.jsonl").returncode == 0
    cache = tmp_path / "cache" / "judgments.sqlite"
    before = cache.read_bytes()
    line = one_error(tourney("rank", EXAMPLE, *sim, "-o", tmp_path / "r2.jsonl", "--summary", cache))
    assert (
        line == f"tourney: error: --summary and --cache name the same file ({cache})" and cache.read_bytes() == before
    )
    assert tourney("rank", EXAMPLE, *sim, "--no-cache", "--summary", tmp_path / "s.json").returncode == 0
    for option in ("--summary", "--judgments", "-o", "--cache"):
        flag = "--output" if option == "-o" else option
        assert one_error(tourney("rank", EXAMPLE, *sim, option, "")) == f"tourney: error: {flag} is an empty path"
    for cmd in ("rank", "best-of-n"):
        line = one_error(tourney(cmd, EXAMPLE, *sim, "-o", tmp_path / "x.parquet"))
        assert (
            line == f"tourney: error: option -o: {cmd} writes JSONL (rank, pairs and train read it); name the"
            " output .jsonl"
        )
    assert not (tmp_path / "x.parquet").exists() and not (tmp_path / "r2.jsonl").exists()


def test_the_bar_rate_counts_from_the_end_of_the_first_burst():
    """A lockstep step's judgments arrive within microseconds: rich's own speed showed 92,998/s for a judge doing 1/s.
    Here 24 judgments arrive at once, then 6 more 1.2 s later: 5/s, with the ETA from it."""
    import io

    from tourney.console import Console, Progress, clock

    console = Console()
    console._stream = io.StringIO()
    bar = Progress(console, total=36, enabled=True)
    try:
        for _ in range(24):
            bar.advance(1)
        fields = bar._bar.tasks[0].fields
        assert fields["rate"] == "" and fields["eta"] == "-:--:--"
        time.sleep(1.2)
        for _ in range(6):
            bar.advance(1)
        rate = float(fields["rate"].removesuffix("/s"))
        assert 4.0 < rate <= 5.0 and fields["eta"] == clock(6 / rate)
    finally:
        bar.stop()
    assert clock(3725.4) == "1:02:05" and clock(90000) == "25:00:00"
