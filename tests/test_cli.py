"""The CLI end to end (in-process; one real `python -m tourney`): output, determinism, dry run, summary, bad input."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from clirun import python_m_tourney, tourney

EXAMPLE = Path(__file__).parents[1] / "examples" / "best_of_n.jsonl"
SIM = ["--judge", "simulated", "--no-cache"]


def test_best_of_n_example(tmp_path):
    out, summary = tmp_path / "out.jsonl", tmp_path / "s.json"
    p = tourney("best-of-n", EXAMPLE, "-o", out, "--summary", summary, *SIM)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    src = [json.loads(line) for line in EXAMPLE.read_text().splitlines()]
    assert [r["id"] for r in rows] == [s["id"] for s in src]
    for row, s in zip(rows, src):
        assert {k: v for k, v in row.items() if k not in ("best_index", "best")} == s  # every field preserved
        assert row["best"] == s["responses"][row["best_index"]]["text"]
    stats = json.loads(summary.read_text())
    for key in ("judgments", "invalid", "backend_calls", "prompt_tokens", "completion_tokens", "wall_s"):
        assert key in stats
    assert stats["judgments"] == 3 + 3 + 2 and stats["backend_calls"] == 2


def test_rank_is_byte_identical_for_a_seed_and_pipes(tmp_path):
    args = ["rank", "-", "--strategy", "round-robin", "--votes", "3", "--seed", "5", *SIM,
            "--sim-tau", "3", "--sim-invalid-rate", "0.2"]  # fmt: skip
    text = EXAMPLE.read_text()
    a, b = tourney(*args, stdin=text), tourney(*args, stdin=text)
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout
    rows = [json.loads(line) for line in a.stdout.splitlines()]
    assert all(sorted(r["ranking"]) == list(range(len(r["responses"]))) for r in rows)
    assert all(len(r["scores"]) == len(r["responses"]) for r in rows)
    c = tourney(*args[:-6], "--seed", "6", *SIM, "--sim-tau", "3", "--sim-invalid-rate", "0.2", stdin=text)
    assert c.stdout != a.stdout


def test_dry_run_counts_and_runs_nothing(tmp_path):
    p = tourney("rank", EXAMPLE, "--dry-run", "--votes", "2", "--judge", "simulated")
    assert p.returncode == 0
    # 2 votes of (6 + 6 + 3) matches
    want = {"prompts": 3, "judgments": 30, "new": 30, "cached": 0, "strategy": "round-robin", "exact": True}
    assert json.loads(p.stdout) == want


def test_cache_rerun_makes_zero_backend_calls(tmp_path):
    cache, s1, s2 = tmp_path / "c.sqlite", tmp_path / "1.json", tmp_path / "2.json"
    o1, o2 = tmp_path / "o1", tmp_path / "o2"
    base = ["rank", EXAMPLE, "--judge", "simulated", "--cache", cache]
    assert tourney(*base, "-o", o1, "--summary", s1).returncode == 0
    assert tourney(*base, "-o", o2, "--summary", s2).returncode == 0
    assert json.loads(s1.read_text())["backend_calls"] == 1
    assert json.loads(s2.read_text())["backend_calls"] == 0
    assert o1.read_bytes() == o2.read_bytes()


def test_judgments_export_records_order(tmp_path):
    j = tmp_path / "j.jsonl"
    assert tourney("rank", EXAMPLE, "-o", tmp_path / "o", "--judgments", j, "--votes", "2", *SIM).returncode == 0
    recs = [json.loads(line) for line in j.read_text().splitlines()]
    assert len(recs) == 2 * 15
    assert {"id", "a", "b", "vote", "verdict", "p_a", "raw"} <= set(recs[0])
    pairs = {(r["id"], r["a"], r["b"]) for r in recs}
    assert ("capital", 0, 1) in pairs and ("capital", 1, 0) in pairs


def test_one_response_is_ranked_alone(tmp_path):
    p = tourney("rank", "-", *SIM, stdin='{"prompt": "q", "responses": ["only"]}\n')
    assert p.returncode == 0
    assert json.loads(p.stdout)["ranking"] == [0]


def test_help_mentions_simulator():
    p = tourney("rank", "--help")
    assert p.returncode == 0 and "SIMULATOR" in p.stdout


GOOD = '{"prompt": "q", "responses": [{"text": "a", "quality": 1}, {"text": "b", "quality": 2}]}'
BAD_INPUTS = [
    ("{not json", "1", "malformed JSON"),
    (GOOD + "\n[1, 2]", "2", "expected a JSON object"),
    ('{"responses": ["a"]}', "field 'prompt'", "missing"),
    ('{"prompt": 5, "responses": ["a"]}', "field 'prompt'", "expected a string"),
    ('{"prompt": [{"role": "user"}], "responses": ["a"]}', "field 'prompt[0].content'", "expected a string"),
    ('{"prompt": "q"}', "field 'responses'", "missing"),
    ('{"prompt": "q", "responses": "a"}', "field 'responses'", "expected a list"),
    ('{"prompt": "q", "responses": []}', "field 'responses'", "empty list"),
    ('{"prompt": "q", "responses": ["a", 3]}', "field 'responses[1]'", "expected a string"),
    ('{"prompt": "q", "responses": [{"text": 3}]}', "field 'responses[0].text'", "expected a string"),
    ('{"prompt": "q", "responses": [{"text": "a", "quality": "high"}]}', "responses[0].quality", "a number"),
    ('{"id": 1, "prompt": "q", "responses": ["a"]}\n{"id": 1, "prompt": "q", "responses": ["b"]}', ":2:", "duplicate"),
    ('{"id": [1], "prompt": "q", "responses": ["a"]}', "field 'id'", "expected a string or an integer"),
    ('{"prompt": "q", "responses": [{"text": "a"}, {"text": "b"}]}', "responses[0].quality", "simulated judge"),
    ('{"prompt": "q", "responses": [{"text": "a", "quality": NaN}, {"text": "b", "quality": 1}]}', ":1:", "NaN"),
    ('{"prompt": "q", "responses": [{"text": "a", "quality": Infinity}]}', ":1:", "Infinity"),
    ('{"prompt": "q", "responses": ["a\\ud800", "b"]}', ":1:", "surrogate"),
    ('{"id": ' + "9" * 5000 + ', "prompt": "q", "responses": ["a"]}', ":1:", "malformed JSON"),
    ("[" * 100000, ":1:", "malformed JSON"),
    ('{"prompt": "q", "prompt": "r", "responses": ["a"]}', ":1: field 'prompt'", "appears twice"),
    (
        '{"prompt": "q", "responses": [{"text": "a", "quality": 1, "quality": 2}]}',
        ":1: field 'responses[0].quality'",
        "appears twice",
    ),
    ('{"r": [{"a": 1, "a": 2}], "z": }', ":1: field 'a'", "appears twice"),  # found before the bad end: its name
]


@pytest.mark.parametrize("content,where,what", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, content, where, what):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(content + "\n")
    p = tourney("rank", src, "-o", out, "--judge", "simulated", "--no-cache")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert str(src) in lines[0] and where in lines[0] and what in lines[0]
    assert not out.exists() and os.listdir(tmp_path) == ["in.jsonl"]


def test_invalid_utf8(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD.encode() + b'\n{"prompt": "\xff", "responses": ["a"]}\n')
    p = tourney("rank", src, *SIM)
    assert p.returncode == 2 and f"{src}:2:" in p.stderr and "UTF-8" in p.stderr and p.stdout == ""


@pytest.mark.parametrize(
    "args",
    [["--votes", "0"], ["--strategy", "no-such"], ["--rating", "glicko"], ["--sim-tau", "-1"], ["--seed", "x"],
     ["--no-such-option"], ["--sim-position-bias", "nan"], ["--sim-position-bias", "-inf"]],
)  # fmt: skip
def test_bad_option_values(tmp_path, args):
    out = tmp_path / "o"
    p = tourney("rank", EXAMPLE, "-o", out, *SIM, *args)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not out.exists()


def test_missing_input_file(tmp_path):
    p = tourney("rank", tmp_path / "nope.jsonl", *SIM)
    assert p.returncode == 2 and "nope.jsonl" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_unwritable_outputs_fail_before_judging_and_leave_nothing(tmp_path):
    for bad in (tmp_path / "missing" / "o.jsonl", tmp_path):
        p = tourney("rank", EXAMPLE, "-o", bad, "--judgments", tmp_path / "j.jsonl", "--summary", tmp_path / "s", *SIM)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
        assert os.listdir(tmp_path) == []  # no output, no judgments, no summary, no temp file
    p = tourney("rank", EXAMPLE, "--judgments", "-", *SIM)  # two outputs on stdout
    assert p.returncode == 2 and p.stdout == ""


def test_simulator_cache_keys_the_quality_it_reads(tmp_path):
    cache = tmp_path / "c.sqlite"
    row = {"prompt": "q", "responses": [{"text": "a", "quality": 10}, {"text": "b", "quality": -10}]}
    first = tourney("best-of-n", "-", "--judge", "simulated", "--cache", cache, stdin=json.dumps(row))
    row["responses"][0]["quality"], row["responses"][1]["quality"] = -10, 10
    second = tourney("best-of-n", "-", "--judge", "simulated", "--cache", cache, stdin=json.dumps(row))
    assert json.loads(first.stdout)["best_index"] == 0 and json.loads(second.stdout)["best_index"] == 1


def test_extreme_qualities_and_bias_do_not_overflow():
    row = {"prompt": "q", "responses": [{"text": "a", "quality": 1e300}, {"text": "b", "quality": -1e300}]}
    p = tourney("best-of-n", "-", *SIM, "--sim-tau", "1e-300", "--sim-position-bias", "-1000", stdin=json.dumps(row))
    assert p.returncode == 0 and json.loads(p.stdout)["best_index"] == 0


def test_utf8_bom_and_crlf_are_accepted():
    text = "\ufeff" + EXAMPLE.read_text().replace("\n", "\r\n")
    p = tourney("rank", "-", *SIM, stdin=text)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 3


@pytest.mark.parametrize(
    "prompt,family,what",
    [
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "rm-r1", "end with a user turn"),
        ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "?"}],
         "rrm", "single-turn"),
        ([{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}, {"role": "user", "content": "?"}],
         "rm-r1", "message 1 has role 'system'"),
    ],
)  # fmt: skip
def test_prompts_a_family_cannot_take_fail_up_front_with_their_line(tmp_path, prompt, family, what):
    src = tmp_path / "in.jsonl"
    bad = json.dumps({"prompt": prompt, "responses": ["a", "b"]})
    src.write_text('{"prompt": "ok", "responses": ["a", "b"]}\n' + bad)
    p = tourney("rank", src, "--family", family, "--no-cache", "--dry-run")  # no model is loaded to find this
    assert p.returncode == 2 and f"{src}:2: field 'prompt'" in p.stderr and what in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_help_lists_exactly_the_registered_choices():
    from click.testing import CliRunner

    from strategies.registry import RATINGS, STRATEGIES
    from tourney.cli import cli
    from tourney.config import BACKENDS
    from tourney.forcing import VERDICT_MODES

    text = " ".join(CliRunner().invoke(cli, ["rank", "--help"], terminal_width=400).output.split())
    assert f"--strategy [{'|'.join(sorted(STRATEGIES))}]" in text
    assert f"--rating [{'|'.join(RATINGS)}]" in text and f"--backend [{'|'.join(BACKENDS)}]" in text
    assert f"--verdict [{'|'.join(VERDICT_MODES)}]" in text


def test_judge_families_do_not_import_backends():
    import ast
    from pathlib import Path

    for path in (Path(__file__).parents[1] / "tourney" / "judges").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("tourney.backends") for n in names), (path.name, names)


def test_budget_and_adaptive_votes_from_the_cli(tmp_path):
    data = Path(__file__).parent / "data" / "sim12.jsonl"
    summary = tmp_path / "s.json"
    p = tourney("best-of-n", data, *SIM, "--strategy", "adaptive-knockout", "--budget", "30", "--votes", "5",
                "--adaptive-votes", "--summary", summary, "-o", tmp_path / "o")  # fmt: skip
    assert p.returncode == 0, p.stderr
    stats = json.loads(summary.read_text())
    assert stats["budget"] == 30 and stats["adaptive_votes"] and stats["judgments"] <= 30 * 12
    p = tourney("best-of-n", data, *SIM, "--strategy", "knockout", "--budget", "5")
    line = p.stderr.strip()
    assert p.returncode == 2 and f"{data}:1: option --budget" in line and "over the budget of 5" in line
    assert "pick a budgeted strategy (lucb, adaptive-knockout, swiss)" in line and len(p.stderr.splitlines()) == 1
    p = tourney("best-of-n", data, *SIM, "--strategy", "adaptive-knockout", "--budget", "5")
    assert p.returncode == 2 and p.stderr.strip().endswith("(raise --budget or use --strategy lucb)")
    p = tourney("best-of-n", data, *SIM, "--strategy", "swiss", "--budget", "30", "--votes", "9")
    assert p.returncode == 2 and "needs at least" in p.stderr and "over the budget of 30" in p.stderr
    assert p.stderr.strip().endswith("(raise --budget or use --strategy lucb)") and len(p.stderr.splitlines()) == 1
    p = tourney("rank", data, *SIM, "--votes", "1", "--adaptive-votes")
    assert p.returncode == 2 and "--adaptive-votes has no effect with --votes 1" in p.stderr


@pytest.mark.parametrize("command, plain", [("best-of-n", "knockout"), ("rank", "round-robin")])
def test_a_budget_alone_picks_the_budgeted_default(command, plain, tmp_path):
    from strategies.registry import BUDGETED_DEFAULT

    data = Path(__file__).parent / "data" / "sim12.jsonl"
    for extra, strategy in (["--budget", "30"], BUDGETED_DEFAULT), ([], plain):
        p = tourney(command, data, *SIM, *extra, "--summary", tmp_path / "s.json", "-o", tmp_path / "o")
        assert p.returncode == 0, p.stderr
        stats = json.loads((tmp_path / "s.json").read_text())
        assert stats["strategy"] == strategy and stats["budget"] == (30 if extra else None)
        assert stats["judgments"] <= 30 * stats["prompts"] or not extra


def test_empty_input_says_so_and_writes_an_empty_output(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for command in ("rank", "best-of-n"):
        p = tourney(command, empty, *SIM, "-o", tmp_path / "o.jsonl")
        assert p.returncode == 0 and (tmp_path / "o.jsonl").read_text() == ""
        assert p.stderr.splitlines()[0] == f"tourney: warning: {empty} has no prompts: nothing to judge", p.stderr


def test_python_m_tourney_is_the_same_program():
    """The real entry point (a new interpreter, pipes): the same bytes and exit codes as the in-process runs above."""
    args = ["rank", "-", "--strategy", "round-robin", "--votes", "3", "--seed", "5", *SIM]
    text = EXAMPLE.read_text()
    real = subprocess.run(python_m_tourney(*args), input=text, capture_output=True, text=True, timeout=120)
    assert real.returncode == 0 and real.stdout == tourney(*args, stdin=text).stdout and real.stdout
    real = subprocess.run(python_m_tourney("rank", EXAMPLE, *SIM, "--votes", "0"), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert real.returncode == 2 and real.stdout == "" and len(real.stderr.strip().splitlines()) == 1
    assert real.stderr == tourney("rank", EXAMPLE, *SIM, "--votes", "0").stderr


@pytest.mark.parametrize("command", ["rank", "best-of-n", "pairs"])
def test_limit_reads_only_the_first_prompts(tmp_path, command):
    src = tmp_path / "in.jsonl"
    src.write_text(EXAMPLE.read_text() + "{not json\n")  # a bad line after the limit is never read
    whole = tourney(command, EXAMPLE, *SIM, "-o", "-").stdout.splitlines()
    p = tourney(command, src, *SIM, "--limit", "2", "-o", "-")
    assert p.returncode == 0, p.stderr
    if command == "pairs":
        assert {json.loads(r)["prompt_id"] for r in p.stdout.splitlines()} <= {"capital", "arithmetic"}
    else:
        assert p.stdout.splitlines() == whole[:2]
    dry = json.loads(tourney(command, src, *SIM, "--limit", "1", "--dry-run").stdout)
    assert dry["prompts"] == 1


def test_sample_limit_reads_only_the_first_prompts(tmp_path, tiny_model_dir):
    from tourney.sample import read_prompts

    src = tmp_path / "p.jsonl"
    src.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y"}\n{oops\n')
    assert [r.id for r in read_prompts(str(src), 2)] == ["a", "b"]
    p = tourney(
        "sample", src, "--limit", "1", "--policy", tiny_model_dir, "--dry-run", "--cache", tmp_path / "s.sqlite"
    )
    assert p.returncode == 0 and json.loads(p.stdout)["prompts"] == 1, p.stderr


def test_intervals_bound_each_bradley_terry_score_and_are_seeded(tmp_path):
    args = ["rank", EXAMPLE, *SIM, "--rating", "bt", "--votes", "3", "--intervals", "-o", "-"]
    p = tourney(*args)
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    for row in rows:
        assert len(row["intervals"]) == len(row["scores"])
        assert all(lo <= s <= hi for s, (lo, hi) in zip(row["scores"], row["intervals"], strict=True))
    assert any(lo < hi for row in rows for lo, hi in row["intervals"])
    assert tourney(*args).stdout == p.stdout  # same seed, same bytes
    assert "intervals" not in tourney("rank", EXAMPLE, *SIM, "--rating", "bt", "-o", "-").stdout


@pytest.mark.parametrize("extra", [[], ["--strategy", "knockout"]])
def test_intervals_need_round_robin_bradley_terry(extra):
    p = tourney("rank", EXAMPLE, *SIM, "--intervals", *extra, "-o", "-")
    assert p.returncode == 2 and p.stdout == "" and "--strategy round-robin --rating bt" in p.stderr
    assert p.stderr.startswith("tourney: error: option --intervals: needs Bradley–Terry scores")  # an option, as given


@pytest.mark.parametrize(
    ("messages", "what"),
    [
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "must end with a user turn"),
        ([{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "user", "content": "r"}],
         "prompt message 1 has role 'system'"),
        ([{"role": "system", "content": "s"}], "prompt message 0 has role 'system'"),
    ],
)  # fmt: skip
def test_the_simulated_judge_checks_a_prompt_as_a_family_does(tmp_path, messages, what):
    """The prompt's shape is an input rule, not a model's: the simulator refuses what every family refuses."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(
        json.dumps({"prompt": messages, "responses": [{"text": "a", "quality": 1}, {"text": "b", "quality": 2}]}) + "\n"
    )
    for command in ("rank", "pairs"):
        p = tourney(command, src, *SIM, "-o", out)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert p.stderr.startswith(f"tourney: error: {src}:1: field 'prompt': ") and what in p.stderr
        assert not out.exists()


def test_a_parquet_file_piped_in_is_named_as_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    responses = [[{"text": "a", "quality": 1.0}, {"text": "b", "quality": 2.0}]]
    pq.write_table(pa.table({"prompt": ["q"], "responses": responses}), path)
    p = tourney("rank", "-", "--judge", "simulated", "--no-cache", stdin=path.read_bytes())
    assert (
        p.returncode == 2
        and p.stderr == "tourney: error: <stdin>: is Parquet: give its path (only JSONL is read from a pipe)\n"
    )
    assert tourney("rank", path, "--judge", "simulated", "--no-cache").returncode == 0
