"""Test-time compute scaling experiments: GSM8K data and scoring, metrics on hand-made data, configs, a tiny run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from experiments import gsm8k
from experiments.scaling import config as config_mod
from experiments.scaling import metrics, report, run
from experiments.scaling.__main__ import main
from tourney.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
Rec = namedtuple("Rec", "a b p_a")

TINY = """
name = "tiny"
seed = 3
bootstrap = 200
cache = "{cache}"

[data]
source = "synthetic"
prompts = 12
pool = 8
p_correct = 0.4

[[judge]]
name = "sim-0.8"
kind = "simulated"
accuracy = 0.8

[sweep]
n = [1, 2, 4, 8]
votes = [1, 3]
strategy = ["knockout", "round-robin"]
rating = ["elo"]
"""


# ---- GSM8K: answer extraction and comparison as verl's scorer does -------------------------------------------


@pytest.mark.parametrize(
    ("text", "method", "expected"),
    [
        ("She makes 9 * 2 = $18.\n#### 18", "strict", "18"),
        ("#### 1,234", "strict", "1234"),  # commas removed
        ("#### -7", "strict", "-7"),
        ("#### 3.5", "strict", "3.5"),
        ("first #### 5 then corrected #### 7", "strict", "7"),  # the last one counts
        ("####5", "strict", None),  # the space after #### is required
        ("The answer is 18.", "strict", None),
        ("#### 18" + " padding" * 50, "strict", None),  # only the last 300 characters are searched
        ("so 3 apples and 12 pears: 15", "flexible", "15"),
        ("total: 1,000", "flexible", "1,000"),  # flexible keeps commas, as verl does
        ("no numbers here . at all", "flexible", None),
    ],
)
def test_extract_answer(text, method, expected):
    assert gsm8k.extract_answer(text, method) == expected


def test_is_correct_compares_strings_exactly():
    assert gsm8k.is_correct("... #### 1,000", "1000")
    assert not gsm8k.is_correct("... #### 1000.0", "1000")  # verl compares strings, not numbers
    assert not gsm8k.is_correct("no answer", "1000")


def test_load_gsm8k_and_gold_answers():
    problems = gsm8k.load(limit=3)
    assert [p.id for p in problems] == ["gsm8k-test-0", "gsm8k-test-1", "gsm8k-test-2"]
    assert problems[0].gold == "18" and problems[0].question.startswith("Janet")
    assert problems[0].prompt.endswith('output the final answer after "####".')
    assert gsm8k.gold_answer("x\n#### 70,000") == "70000"
    assert len(gsm8k.gold_by_id()) == 1319


def test_synthetic_candidates_are_labelled_by_the_scorer_and_marked():
    problems = gsm8k.load(limit=30)
    rows = gsm8k.synthetic(problems, pool=12, p_correct=0.4, distractors=3, seed=1)
    assert rows == gsm8k.synthetic(problems, pool=12, p_correct=0.4, distractors=3, seed=1)  # seeded
    shares = []
    for row, prob in zip(rows, problems):
        assert row["synthetic"] is True and row["gold"] == prob.gold
        texts = [r["text"] for r in row["responses"]]
        for r in row["responses"]:
            assert r["synthetic"] is True
            assert r["correct"] == gsm8k.is_correct(r["text"], prob.gold)
            assert r["answer"] == gsm8k.extract_answer(r["text"])
            assert "<<" not in r["text"]  # calculator annotations removed from every candidate alike
        wrong = {r["answer"] for r in row["responses"] if not r["correct"]}
        assert prob.gold not in wrong and len(wrong) <= 3
        assert len(set(texts)) >= len(texts) // 2  # worded differently, mostly
        shares.append(np.mean([r["correct"] for r in row["responses"]]))
    assert 0.2 < np.mean(shares) < 0.6


def test_wrong_solution_carries_the_error_forward():
    prob = gsm8k.load(limit=1)[0]  # 16 - 3 - 4 = 9 eggs; 9 * 2 = 18 dollars
    for seed in range(20):
        text, answer = gsm8k.wrong_solution(prob.solution, prob.gold, np.random.default_rng(seed))
        assert answer != prob.gold and text.rstrip().endswith(f"#### {answer}")
        assert gsm8k.extract_answer(text) == answer


def test_label_sets_correct_by_answer_match():
    rows = [
        {"id": "gsm8k-test-0", "prompt": "q", "responses": ["... #### 18", {"text": "#### 17", "model": "m"}]},
        {"id": "other", "prompt": "q2", "gold": "5", "responses": ["#### 5", "five"]},
    ]
    out = gsm8k.label(rows, gsm8k.gold_by_id(gsm8k.load(limit=1)))
    assert [r["correct"] for r in out[0]["responses"]] == [True, False]
    assert out[0]["responses"][1]["model"] == "m" and out[0]["gold"] == "18"
    assert [r["correct"] for r in out[1]["responses"]] == [True, False]
    assert out[1]["responses"][1]["answer"] is None
    assert rows[0]["responses"][0] == "... #### 18"  # input rows untouched
    with pytest.raises(KeyError):
        gsm8k.label([{"id": "nope", "prompt": "q", "responses": ["#### 1"]}], {})


def test_pairs_are_correct_vs_wrong():
    rows = gsm8k.synthetic(gsm8k.load(limit=10), pool=8, seed=0)
    pairs = gsm8k.pairs(rows, per_prompt=3, seed=0)
    assert pairs and all(p["source"] == "synthetic" for p in pairs)
    by_id = {r["id"]: r for r in rows}
    for p in pairs:
        row = by_id[p["id"].split("/")[0]]
        assert row["responses"][p["chosen_index"]]["correct"] is True
        assert row["responses"][p["rejected_index"]]["correct"] is False
        assert p["chosen"] != p["rejected"]
    assert max(sum(p["id"].startswith(r["id"] + "/") for p in pairs) for r in rows) <= 3


# ---- metrics on hand-made data -------------------------------------------------------------------------------


def test_oracle_bounds_best_of_n_and_random_pick_is_its_expectation():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        correct = [bool(x) for x in rng.random(n) < 0.4]
        ranking = [int(i) for i in rng.permutation(n)]
        assert metrics.oracle(correct) >= metrics.best_of_n(correct, ranking)
        # a uniformly random pick puts each candidate on top with probability 1/n
        expected = np.mean([metrics.best_of_n(correct, [i]) for i in range(n)])
        assert metrics.random_pick(correct) == pytest.approx(expected)
    assert metrics.oracle([False, False]) == 0.0 and metrics.oracle([False, True]) == 1.0
    assert metrics.best_of_n([False, True, False], [1, 0, 2]) == 1.0


def test_majority_vote():
    assert metrics.majority_vote(["5", "5", "7"], [True, True, False]) == 1.0
    assert metrics.majority_vote(["7", "5", "7"], [False, True, False]) == 0.0
    assert metrics.majority_vote(["5", "7"], [True, False]) == 0.5  # a tie splits the credit
    assert metrics.majority_vote([None, None, "5"], [False, False, True]) == 1.0  # no answer abstains
    assert metrics.majority_vote([None, None], [True, False]) is None


def test_judge_quality_on_hand_made_records():
    labels = [[True, False, False]]
    records = [[
        Rec(0, 1, 1.0),  # correct in A, A wins: right
        Rec(1, 0, 1.0),  # correct in B, A wins: wrong
        Rec(0, 2, 0.0),  # correct in A, B wins: wrong
        Rec(2, 0, 0.25),  # correct in B, soft: right with 0.75
        Rec(1, 0, None),  # invalid: left out
        Rec(1, 2, 1.0),  # wrong vs wrong: only in pick_a
    ]]  # fmt: skip
    q = metrics.judge_quality(records, labels)
    assert q["pairwise_pairs"] == 4
    assert q["pairwise_accuracy"] == pytest.approx((1 + 0 + 0 + 0.75) / 4)
    # P(A | correct in A) = (1 + 0)/2 = 0.5; P(A | correct in B) = (1 + 0.25)/2 = 0.625
    assert q["position_bias"] == pytest.approx(0.5 * (0.5 + 0.625) - 0.5)
    assert q["pick_a"] == pytest.approx((1 + 1 + 0 + 0.25 + 1) / 5)
    unbiased = metrics.judge_quality([[Rec(0, 1, 1.0), Rec(1, 0, 0.0)]], [[True, False]])
    assert unbiased["position_bias"] == 0.0 and unbiased["pairwise_accuracy"] == 1.0
    assert metrics.judge_quality([[Rec(0, 1, 1.0)]], [[True, True]])["pairwise_accuracy"] is None


def test_bootstrap_ci():
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = metrics.bootstrap_ci(values, draws=500, seed=0)
    assert lo < 0.3 < hi and hi - lo < 0.25
    assert metrics.bootstrap_ci([None, None]) is None
    assert metrics.bootstrap_ci([1.0, None, 1.0], draws=50) == [1.0, 1.0]


# ---- a tiny config end to end (simulated judge) --------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_tiny_config_end_to_end_and_resumes_from_the_cache(tmp_path):
    cfg = _write(tmp_path, TINY.format(cache=tmp_path / "cache.sqlite"))
    out = tmp_path / "out"
    assert main([cfg, "--out", str(out), "--quiet"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["accuracy_vs_calls.png", "accuracy_vs_k.png", "accuracy_vs_n.png", "results.jsonl", "results.md"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 8 + 8  # 4 N x 2 k for each strategy
    assert {r["rating"] for r in rows if r["strategy"] == "knockout"} == {None}  # knockout takes no rating
    for r in rows:
        assert r["synthetic"] is True and "SYNTHETIC" in r["data"] and "SIMULATED" in r["judge_desc"]
        assert r["oracle"] >= r["best_of_n"] - 1e-9
        assert r["best_of_n_ci"][0] <= r["best_of_n"] <= r["best_of_n_ci"][1]
        assert r["judgments"] == r["prompts"] * r["votes"] * (
            r["n"] - 1 if r["strategy"] == "knockout" else r["n"] * (r["n"] - 1) // 2
        )
        if r["n"] == 1:
            assert r["best_of_n"] == r["random"] == r["oracle"]
    assert "SYNTHETIC" in (out / "results.md").read_text()
    assert (out / "accuracy_vs_n.png").read_bytes()[:4] == b"\x89PNG"

    first = (out / "results.jsonl").read_text()
    assert main([cfg, "--out", str(out), "--quiet"]) == 0
    again = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["cached"] == r["judgments"] for r in again)  # resumed: nothing judged twice

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("cached", "backend_calls", "judge_s", "wall_s")}

    assert [strip(r) for r in again] == [strip(json.loads(line)) for line in first.splitlines()]


def test_sweep_blocks_expand_to_cells_without_duplicates(tmp_path):
    text = TINY.format(cache=tmp_path / "c.sqlite")
    blocks = """
[[sweep]]
strategy = ["knockout", "round-robin"]
rating = ["elo", "bt"]
n = [2, 4]

[[sweep]]
strategy = ["knockout"]
n = [4, 8]
votes = [1, 3]
"""
    text = text[: text.index("[sweep]")] + blocks
    cfg = config_mod.load(_write(tmp_path, text))
    got = [(c.strategy, c.rating, c.n, c.votes) for c in cfg.cells]
    assert got == [
        ("knockout", None, 2, 1), ("knockout", None, 4, 1), ("round-robin", "elo", 2, 1), ("round-robin", "elo", 4, 1),
        ("round-robin", "bt", 2, 1), ("round-robin", "bt", 4, 1), ("knockout", None, 8, 1), ("knockout", None, 4, 3),
        ("knockout", None, 8, 3),
    ]  # fmt: skip
    bad = text.replace("n = [4, 8]", "n = [4, 9]")
    with pytest.raises(InputError, match="field 'sweep\\[1\\].n'"):
        run.load_data(config_mod.load(_write(tmp_path, bad, "bad.toml")))


def test_simulated_judge_meets_its_stated_accuracy(tmp_path):
    text = TINY.format(cache=tmp_path / "c.sqlite").replace("prompts = 12", "prompts = 60")
    text = text.replace("accuracy = 0.8", "accuracy = 0.75")
    text = text[: text.index("[sweep]")] + '[sweep]\nn = [8]\nstrategy = ["round-robin"]\nvotes = [2]\n'
    cfg = config_mod.load(_write(tmp_path, text))
    (row,) = run.run(cfg, run.load_data(cfg))
    assert row["pairwise_pairs"] > 1000
    assert row["pairwise_accuracy"] == pytest.approx(0.75, abs=0.04)
    assert abs(row["position_bias"]) < 0.04


def test_jsonl_candidates_with_correct_or_labelled(tmp_path):
    data = tmp_path / "samples.jsonl"
    rows = [{"id": f"q{k}", "prompt": f"question {k}", "gold": str(k),
             "responses": [f"#### {k}", f"#### {k + 1}", f"so #### {k}", "#### 99"]} for k in range(6)]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = TINY.format(cache=tmp_path / "c.sqlite")
    base = base[: base.index("[data]")] + f'[data]\nsource = "jsonl"\npath = "{data}"\nlabel = true\n'
    base += "\n".join(TINY[TINY.index("[[judge]]") :].splitlines()).replace("n = [1, 2, 4, 8]", "n = [2, 4]")
    out = tmp_path / "out"
    assert main([_write(tmp_path, base), "--out", str(out), "--quiet"]) == 0
    got = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    at4 = [r for r in got if r["n"] == 4]
    assert all(r["oracle"] == 1.0 and r["random"] == 0.5 and r["majority"] == 1.0 for r in at4)
    assert not any(r["synthetic"] for r in got)

    (tmp_path / "unlabelled.jsonl").write_text(json.dumps({"id": 1, "prompt": "p", "responses": ["a", "b"]}) + "\n")
    bad = base.replace(str(data), str(tmp_path / "unlabelled.jsonl")).replace("label = true", "label = false")
    assert main([_write(tmp_path, bad, "bad.toml"), "--out", str(tmp_path / "o2"), "--quiet"]) == 2


# ---- bad configs: one line, exit 2, the key named, nothing written -------------------------------------------


@pytest.mark.parametrize(
    ("edit", "field", "line"),
    [
        (lambda t: t.replace('name = "tiny"', 'name = "tiny"\ncolour = "red"'), "colour", 3),
        (lambda t: t.replace("votes = [1, 3]", "votes = [0, 3]"), "sweep.votes", 20),
        (lambda t: t.replace('"round-robin"]', '"swiss-cheese"]'), "sweep.strategy", 21),
        (lambda t: t.replace("n = [1, 2, 4, 8]", "n = [2, 16]"), "sweep.n", 19),  # pool is 8
        (lambda t: t.replace("accuracy = 0.8", "accuracy = 1.0"), "judge[0].accuracy", 16),
        (lambda t: t.replace("[sweep]", "[sweep]\nbest_of = 3"), "sweep.best_of", 19),
        (lambda t: t.replace("pool = 8", "pool = 8\nsize = 3"), "data.size", 11),
        (lambda t: t.replace('rating = ["elo"]', 'rating = ["glicko"]'), "sweep.rating", 22),
        # one Swiss round of N=8 with 3 votes is 12 judgments: a budget of 4 fails at load, not in the middle of the run
        (lambda t: t.replace('"round-robin"]', '"round-robin", "swiss"]\nbudget = [4]'), "sweep.budget", 22),
        (lambda t: t.replace('["knockout", "round-robin"]', '["knockout"]'), "sweep.rating", 22),  # would be ignored
        (lambda t: t.replace('source = "synthetic"', 'source = ["synthetic"]'), "data.source", 8),  # a list: no crash
        (lambda t: t.replace('kind = "simulated"', 'kind = ["simulated"]'), "judge[0].kind", 15),
        (lambda t: t.replace('["knockout", "round-robin"]', '[["knockout"]]'), "sweep.strategy", 21),
        (lambda t: t.replace('rating = ["elo"]', 'rating = [["elo"]]'), "sweep.rating", 22),
        (lambda t: t.replace("[data]", "[[data]]"), "data[0]", 7),  # an array of tables: said so, not "missing"
        (lambda t: re.sub(r'cache = ".*"', 'cache = "/proc/no-such/c.sqlite"', t), "cache", 5),  # before the data
    ],
)
def test_bad_config_fails_before_judging(tmp_path, capsys, edit, field, line):
    cfg = _write(tmp_path, edit(TINY.format(cache=tmp_path / "cache.sqlite")))
    out = tmp_path / "out"
    assert main([cfg, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"tourney: error: {cfg}:{line}: field '{field}': ")
    assert not out.exists() and not (tmp_path / "cache.sqlite").exists()


def test_a_setting_given_twice_is_refused(tmp_path, capsys):
    """enforce_eager as the judge's key and inside engine_args: one line naming both, not one silently winning."""
    text = (ROOT / "experiments" / "configs" / "rm-r1-gpu.toml").read_text()
    text = text.replace("max_model_len = 16384", "max_model_len = 16384\nenforce_eager = true\nengine_args = "
                        "{enforce_eager = false}", 1)  # fmt: skip
    cfg = _write(tmp_path, text)
    assert main([cfg, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("field 'judge[0].engine_args': enforce_eager is set twice: as judge[0].enforce_eager and here")


def test_an_output_folder_that_cannot_be_made_fails_before_any_cell(tmp_path, capsys):
    cfg = _write(tmp_path, TINY.format(cache=tmp_path / "cache.sqlite"))
    (tmp_path / "afile").write_text("")
    assert main([cfg, "--out", str(tmp_path / "afile" / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"tourney: error: output folder {tmp_path}/afile/out: cannot create a folder there ({tmp_path}/afile"
        " is not a writable folder)"
    )
    assert not (tmp_path / "cache.sqlite").exists()


def test_budget_sweep_respects_the_budget(tmp_path):
    text = TINY.format(cache=tmp_path / "c.sqlite")
    text = (
        text[: text.index("[sweep]")]
        + '[sweep]\nn = [8]\nstrategy = ["adaptive-knockout", "lucb"]\nbudget = [10, 20]\n'
    )
    cfg = _write(tmp_path, text)
    assert main([cfg, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert sorted((r["strategy"], r["budget"]) for r in rows) == [("adaptive-knockout", 10), ("adaptive-knockout", 20),
                                                                  ("lucb", 10), ("lucb", 20)]  # fmt: skip
    assert all(0 < r["judgments_per_prompt"] <= r["budget"] for r in rows)


def test_cli_exit_code_and_one_line(tmp_path):
    cfg = _write(tmp_path, TINY.format(cache=tmp_path / "c.sqlite").replace("votes = [1, 3]", "votes = [-1]"))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "experiments.scaling", cfg, "--dry-run"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"tourney: error: {cfg}:20: field 'sweep.votes': votes (k) must be an integer >= 1, got -1"
    ]


@pytest.mark.parametrize("name", ["sim", "smollm2", "rm-r1-gpu", "rrm-gpu"])
def test_shipped_configs_pass_a_dry_run(name, capsys):
    assert main([str(ROOT / "experiments" / "configs" / f"{name}.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "total judgments:" in out and "SYNTHETIC" in out
    assert int(out.split("total judgments:")[1].split()[0]) > 0
    # Without --out a run goes to an untracked folder: the README's command leaves experiments/results/ alone.
    assert out.rstrip().endswith(f"outputs would go to scaling-results/{name}/")


def test_a_run_without_out_writes_under_scaling_results_which_git_ignores(tmp_path, monkeypatch):
    text = TINY.format(cache=tmp_path / "c.sqlite").replace("n = [1, 2, 4, 8]", "n = [2, 4]")
    cfg = _write(tmp_path, text)
    monkeypatch.chdir(tmp_path)
    assert main([cfg, "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "scaling-results" / "tiny").iterdir())[-2:] == ["results.jsonl",
                                                                                             "results.md"]  # fmt: skip
    assert "Regenerate: `python -m experiments.scaling " in (tmp_path / "scaling-results/tiny/results.md").read_text()
    ignored = subprocess.run(["git", "check-ignore", "-q", "scaling-results/sim/results.md"], cwd=ROOT)
    assert ignored.returncode == 0


# ---- plots -----------------------------------------------------------------------------------------------------


def _cell(strategy, n, votes, acc, rating=None, judge="j"):
    """A results.jsonl row with just what the plots read."""
    return {"judge": judge, "judge_desc": f"{judge}: SIMULATED", "config": "c", "data": "SYNTHETIC",
            "strategy": strategy, "rating": rating, "n": n, "votes": votes, "max_tokens": None, "budget": None,
            "best_of_n": acc, "best_of_n_ci": [acc - 0.1, acc + 0.1], "oracle": 0.9, "majority": 0.4, "random": 0.3,
            "judgments_per_prompt": float(votes * (n - 1)), "pairwise_accuracy": 0.8, "position_bias": 0.0,
            "tokens_per_prompt": 0.0, "invalid": 0, "forced": 0, "wall_s": 0.0}  # fmt: skip


def test_plot_against_k_keeps_one_n_and_says_so():
    # knockout swept k at N = 8 and 32, round robin at N = 8 only (as sim.toml: round robin at N = 32 is k = 1)
    rows = [_cell("knockout", n, k, 0.5) for n in (8, 32) for k in (1, 3)]
    rows += [_cell("round-robin", 8, k, 0.6, "elo") for k in (1, 3)] + [_cell("round-robin", 32, 1, 0.7, "elo")]
    n, at_n = report.one_n_for_k(rows)
    assert n == 8 and {r["n"] for r in at_n} == {8} and len(at_n) == 4
    assert report.one_n_for_k([_cell("knockout", n, k, 0.5) for n in (8, 32) for k in (1, 3)])[0] == 32
    assert report.one_n_for_k([_cell("knockout", n, 1, 0.5) for n in (8, 32)])[0] == 32  # k never swept
    files = report.outputs(rows, "o", "cmd")
    assert files["o/accuracy_vs_k.png"][:4] == b"\x89PNG"


def test_plots_dodge_series_and_name_the_intervals():
    rows = [_cell(s, n, 1, 0.5, r) for s, r in (("knockout", None), ("round-robin", "elo"), ("round-robin", "bt"))
            for n in (2, 4, 8)]  # fmt: skip
    for x, label in (("n", "N"), ("votes", "k")):
        data = rows if x == "n" else [dict(r, votes=k) for r in rows if r["n"] == 8 for k in (1, 3)]
        fig = report.figure(data, x, label)
        try:
            ax = fig.axes[0]
            assert "95% bootstrap" in ax.get_ylabel()
            assert any("95% bootstrap intervals over prompts" in t.get_text() for t in fig.texts)
            firsts = sorted(float(c.lines[0].get_xdata()[0]) for c in ax.containers)  # three series at the same x
            assert len(firsts) == 3 and firsts[0] < firsts[1] < firsts[2]
            low = 2 if x == "n" else 1
            assert all(abs(v - low) / low < 0.1 for v in firsts)  # a little: still next to its tick
        finally:
            report.plt.close(fig)


def test_gsm8k_command_labels_and_names_a_row_without_gold(tmp_path, capsys):
    src = tmp_path / "s.jsonl"
    src.write_text('{"id": "gsm8k-test-0", "prompt": "q", "responses": ["#### 18", "#### 19"]}\n'
                   '{"id": "gsm8k-1", "prompt": "q", "responses": ["#### 3", "#### 4"]}\n'
                   '{"id": "mine", "gold": "7", "prompt": "q", "responses": ["#### 7"]}\n')  # fmt: skip
    out = tmp_path / "labelled.jsonl"
    assert gsm8k.main(["label", str(src), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [[r["correct"] for r in row["responses"]] for row in rows] == [[True, False], [True, False], [True]]
    assert [row["gold"] for row in rows] == ["18", "3", "7"] and rows[1]["id"] == "gsm8k-1"  # the id is kept
    for row, field, message in [
        ('{"id": "x", "prompt": "q", "responses": ["#### 1"]}', "id", "unknown id 'x': no GSM8K test question has "
         "it (gsm8k-test-K or gsm8k-K, K from 0 to 1318) and the row has no 'gold' field"),
        ('{"id": "gsm8k-test-1319", "prompt": "q", "responses": ["#### 1"]}', "id", "unknown id 'gsm8k-test-1319'"),
        ('{"prompt": "q", "responses": ["#### 1"]}', "gold",
         "no gold answer: give the row a 'gold' field or a GSM8K id (gsm8k-test-K or gsm8k-K)"),
    ]:  # fmt: skip
        src.write_text(f'{{"id": "gsm8k-test-0", "prompt": "q", "responses": ["#### 18"]}}\n{row}\n')
        assert gsm8k.main(["label", str(src), "-o", str(tmp_path / "o.jsonl")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"tourney: error: {src}:2: field '{field}': {message}") and "\n" not in err
        assert not (tmp_path / "o.jsonl").exists()


def test_canonical_id_reads_both_spellings():
    assert gsm8k.canonical_id("gsm8k-test-17") == gsm8k.canonical_id("gsm8k-17") == "gsm8k-test-17"
    assert [gsm8k.canonical_id(x) for x in ("gsm8k-017", "gsm8k-train-1", "x", 17, None)] == [None] * 5
    gold = gsm8k.gold_by_id(gsm8k.load(limit=1))
    assert gsm8k.label([{"id": "gsm8k-0", "prompt": "q", "responses": ["#### 18"]}], gold)[0]["gold"] == "18"


@pytest.mark.parametrize(
    "argv",
    [["synthetic", "--pool", "0"], ["synthetic", "--p-correct", "1"], ["prompts", "--start", "-5"],
     ["pairs", "x.jsonl", "--per-prompt", "two"]],
)  # fmt: skip
def test_gsm8k_options_are_checked_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        gsm8k.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"python -m experiments.gsm8k {argv[0]}: error: argument")


def test_gsm8k_pairs_of_unlabelled_rows_is_an_error_not_an_empty_file(tmp_path, capsys):
    src, out = tmp_path / "unl.jsonl", tmp_path / "p.jsonl"
    src.write_text('{"id": "x", "prompt": "q", "responses": ["a", {"text": "b"}]}\n')
    assert gsm8k.main(["pairs", str(src), "-o", str(out)]) == 2
    assert (
        capsys.readouterr().err == f"tourney: error: {src}: no response has a `correct` label (true/false): label"
        " the rows first (python -m experiments.gsm8k label)\n"
    )
    assert not out.exists()


def test_gsm8k_a_range_past_the_end_is_refused(tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    assert gsm8k.main(["synthetic", "--start", "1318", "--limit", "5", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "tourney: error: --start 1318 --limit 5 is past the end of GSM8K test (1319 questions, 0-1318)\n"
    assert not out.exists()
    assert gsm8k.main(["prompts", "--start", "1318", "-o", str(out)]) == 0 and len(out.read_text().splitlines()) == 1
