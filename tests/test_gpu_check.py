"""experiments.gpu_check: the pairs, the arithmetic of its measures, its options, and a real run on a vLLM server."""

from __future__ import annotations

import io
import math

import pytest

from experiments import gpu_check
from experiments.gsm8k import extract_answer, load
from tourney.types import Judgment


def j(verdict: str | None, forced: bool = False, tokens: int = 10) -> Judgment:
    """A judgment with a verdict (None: invalid)."""
    p_a = None if verdict is None else float(verdict == "A")
    return Judgment(verdict, p_a, forced=forced, completion_tokens=tokens)


def test_wilson_interval() -> None:
    lo, hi = gpu_check.wilson(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    assert gpu_check.wilson(0, 10)[0] == 0.0 and gpu_check.wilson(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(x) for x in gpu_check.wilson(0, 0))


def test_pairs_are_seeded_and_differ_only_in_the_arithmetic() -> None:
    pairs = gpu_check.make_pairs(6, seed=1)
    assert pairs == gpu_check.make_pairs(6, seed=1) and pairs != gpu_check.make_pairs(6, seed=2)
    gold = {p.id: p.gold for p in load()}
    for p in pairs:
        assert extract_answer(p.correct) == gold[p.id] != extract_answer(p.wrong)
        assert "<<" not in p.correct + p.wrong and p.prompt.startswith(
            next(q.question for q in load(1, int(p.id[11:])))
        )
    assert len({p.id for p in pairs}) == 6


def test_requests_show_each_pair_in_both_orders() -> None:
    pairs = gpu_check.make_pairs(2)
    reqs = gpu_check.requests(pairs, seed=4)
    both_orders = [order for p in pairs for order in ((p.correct, p.wrong), (p.wrong, p.correct))]
    assert [(r.a, r.b) for r in reqs] == both_orders and len(both_orders) == 4
    assert len({r.seed for r in reqs}) == 4


def test_score_counts_each_measure() -> None:
    # Pair 1: right in both orders (one forced). Pair 2: "A" twice (position bias): one right, inconsistent.
    # Pair 3: one invalid judgment. Pair 4: wrong in both orders (consistent, both wrong).
    judgments = [j("A"), j("B", forced=True), j("A"), j("A"), j(None), j("B"), j("B"), j("A")]
    r = gpu_check.score(judgments, seconds=2.0, load_seconds=30.0)
    assert (r.parsed.hits, r.parsed.trials) == (6, 8)
    assert (r.forced.hits, r.forced.trials) == (1, 8)
    assert (r.consistent.hits, r.consistent.trials) == (2, 4)
    assert (r.accurate.hits, r.accurate.trials) == (4, 8)
    assert r.tokens == 80 and r.tokens_per_s == 40.0 and r.load_seconds == 30.0
    with pytest.raises(ValueError):
        gpu_check.score(judgments[:3])


def test_summary_line_says_what_to_make_of_it() -> None:
    good = gpu_check.score([j("A"), j("B")] * 20, seconds=1.0)
    assert gpu_check.looks_usable(good) and gpu_check.summary(good, "RRM-7B").endswith("looks usable")
    chance = gpu_check.score([j("A"), j("A")] * 20, seconds=1.0)
    assert not gpu_check.looks_usable(chance)
    line = gpu_check.summary(chance, "RRM-7B")
    assert line.startswith("gpu_check: RRM-7B: parse 100%, forced 0%, consistent 0%, accuracy 50% [")
    assert line.endswith("NOT one to trust yet")
    assert "WEAK judge" in gpu_check.summary(good, "smollm2")
    assert gpu_check.Rate(10, 16).text() == "62.5% [38.6, 81.5] (10/16)"


def test_the_simulator_runs_end_to_end() -> None:
    out = io.StringIO()
    args = gpu_check.parser().parse_args(["--judge", "simulated", "--pairs", "5", "--seed", "2"])
    report = gpu_check.run(args, out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "gpu_check: 5 GSM8K pairs x 2 orders, judge simulated (vllm)"
    assert report.accurate.trials == 10 and report.parsed.hits == 10 and report.forced.hits == 0
    assert lines[-1].startswith("gpu_check: simulated: parse 100%") and "SIMULATOR" in lines[-1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: --judge"),
        (["--judge", "x", "--pairs", "0"], "argument --pairs: expected an integer >= 1, got '0'"),
        (["--judge", "x", "--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["--judge", "x", "--temperature", "-1"], "argument --temperature: expected a number > 0, got '-1'"),
        (["--judge", "x", "--engine-arg", "tensor_parallel_size"], "expected KEY=VALUE, got 'tensor_parallel_size'"),
        (["--judge", "x", "--backend", "tgi"], "argument --backend: invalid choice: 'tgi'"),
        (["--judge", "x", "--dtype", "int4"], "argument --dtype: invalid choice: 'int4'"),
        (["--judge", "x", "--tensor-parallel-size", "0"], "argument --tensor-parallel-size: expected an integer >= 1"),
        (["--judge", "x", "--gpu-memory-utilization", "1.5"], "argument --gpu-memory-utilization: expected a number"),
    ],
)
def test_bad_options_are_one_line_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("python -m experiments.gpu_check: error: ") and message in err
    assert err.count("\n") == 1, err  # one line: the usage is in --help


def test_engine_args_parse_as_json_values() -> None:
    args = gpu_check.parser().parse_args(
        [
            "--judge",
            "x",
            "--engine-arg",
            "tensor_parallel_size=4",
            "--engine-arg",
            "enforce_eager=true",
            "--engine-arg",
            "quantization=fp8",
            "--temperature",
            "0",
        ]  # fmt: skip
    )
    assert dict(args.engine_arg) == {"tensor_parallel_size": 4, "enforce_eager": True, "quantization": "fp8"}
    assert args.temperature == 0.0
    argv = ["--judge", "x", "--engine-arg", "tensor_parallel_size=2", "--tensor-parallel-size", "4"]
    more = gpu_check.parser().parse_args([*argv, "--gpu-memory-utilization", "0.85"])
    assert gpu_check.engine_kwargs(more) == {"tensor_parallel_size": 4, "gpu_memory_utilization": 0.85}


def test_a_bad_judge_value_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--judge", "x", "--backend", "openai", "--base-url", "ftp://nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu_check: error: ") and err.count("\n") == 1


@pytest.mark.slow
def test_a_real_judge_on_a_vllm_server(vllm_server) -> None:
    out = io.StringIO()
    argv = ["--judge", "tiny", "--backend", "openai", "--base-url", vllm_server.url + "/v1", "--family", "rm-r1",
            "--pairs", "3", "--max-tokens", "12", "--temperature", "1"]  # fmt: skip
    report = gpu_check.run(gpu_check.parser().parse_args(argv), out)
    lines = out.getvalue().splitlines()
    # A random model writes no verdict in 12 tokens: every verdict is forced from log-probabilities.
    assert report.accurate.trials == 6 and report.forced.hits + report.parsed.hits == 6
    assert report.tokens > 0 and report.tokens_per_s > 0
    assert [line.split()[0] for line in lines[1:6]] == ["parse", "forced", "position", "accuracy", "speed"]
    assert lines[-1].startswith("gpu_check: tiny: parse ") and "tokens/s" in lines[-1]


@pytest.mark.slow
def test_the_script_on_an_in_process_engine_says_what_it_does_and_exits_cleanly(tiny_model_dir, tmp_path) -> None:
    """As a user runs it: a line before the engine's start-up and before the judging (they take minutes on a 32B
    model), the results on stdout, and no traceback from vLLM's AsyncLLM at the interpreter's teardown."""
    import os
    import subprocess
    import sys

    from tests.test_cli_models import tourney_env

    argv = [sys.executable, "-m", "experiments.gpu_check", "--judge", str(tiny_model_dir), "--family", "rm-r1",
            "--pairs", "1", "--max-tokens", "8", "--dtype", "float32",
            "--engine-arg", "enforce_eager=true"]  # fmt: skip
    env = tourney_env(tmp_path) | {"PYTHONPATH": os.getcwd()}
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == [
        f"gpu_check: starting {tiny_model_dir} (vllm)",
        "gpu_check: judging 1 pair x 2 orders",
    ]
    assert p.stdout.splitlines()[-1].startswith(f"gpu_check: {tiny_model_dir}: parse ")
