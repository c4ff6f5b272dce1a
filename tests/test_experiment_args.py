"""The experiments' shared parser and option types: one-line errors, output folders checked before any work."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.args import Parser, at_least_two, out_dir


def test_a_bad_option_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = Parser(prog="python -m experiments.x")
    parser.add_argument("--n", type=at_least_two, default=2)
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("go").add_argument("--k", type=at_least_two)
    for argv, what in ((["--n", "1"], "argument --n: expected an integer >= 2, got '1'"),
                       (["--bogus"], "unrecognized arguments: --bogus"),
                       (["go", "--k", "x"], "argument --k: expected an integer >= 2, got 'x'")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        err = capsys.readouterr().err
        prog = "python -m experiments.x go" if argv[0] == "go" else "python -m experiments.x"
        assert exit_.value.code == 2 and err == f"{prog}: error: {what}\n"


def test_an_output_folder_is_checked_and_nothing_is_left_behind(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    assert out_dir(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    assert out_dir(str(tmp_path)) == tmp_path
    assert sorted(os.listdir(tmp_path)) == ["afile"]  # the probe is gone, nothing was created
    with pytest.raises(argparse.ArgumentTypeError, match="afile: exists and is not a folder"):
        out_dir(str(tmp_path / "afile"))
    with pytest.raises(argparse.ArgumentTypeError, match="cannot create a folder there"):
        out_dir(str(tmp_path / "afile" / "sub"))
    with pytest.raises(argparse.ArgumentTypeError, match=r"cannot create a folder there \(/proc is not"):
        out_dir("/proc/no-such/out")  # root may write almost anywhere, not here: a real probe tells


@pytest.mark.parametrize(
    ("module", "argv", "line"),
    [
        ("bench_pipeline", ["--sweep", "--prompts", "5"], "--prompts has no effect with --sweep (it runs the built-in"
         " settings)"),
        ("bench_scale", ["--quick", "--sizes", "10"], "--sizes has no effect with --quick (it runs 1,000 prompts)"),
        ("bench_scale", ["--sizes", "10", "--cache-sizes", "20"], "--cache-sizes 20 must be among --sizes (those runs"
         " are repeated with the cache)"),
        ("bench_strategies", ["--scenarios", "a,a"], "argument --scenarios: expected comma-separated names, each once,"
         " got 'a,a'"),
        ("bench_strategies", ["--sizes", "8,8"], "argument --sizes: each N once, got '8,8'"),
        ("bench_engine", ["--max-tokens", "1537"], "argument --max-tokens: at most 1536 (the judge's context here is"
         " 2048 tokens, its prompts up to ~330), got 1537"),
    ],
)  # fmt: skip
def test_an_option_another_makes_pointless_is_refused(module, argv, line, monkeypatch, capsys):
    import importlib

    main = importlib.import_module(f"experiments.{module}").main
    monkeypatch.setattr("sys.argv", [module, *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and capsys.readouterr().err == f"python -m experiments.{module}: error: {line}\n"


def test_bench_engine_max_tokens_fit_beside_its_longest_judge_prompt(tmp_path: Path) -> None:
    """The bound --max-tokens is checked against (before the model starts) leaves room for every prompt the bench
    makes, at any --n: vLLM would otherwise cut the judge short and the table would claim tokens never made."""
    from transformers import AutoTokenizer

    from experiments.bench_engine import CONTEXT, MAX_TOKENS, make_items
    from tourney.judges import get_family
    from tourney.testing import build_tiny_model

    tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "tiny"))
    family = get_family("rm-r1")
    longest = 0
    for seed in (0, 1, 100, 101):  # the warm-up's and the timed runs' prompts
        for item in make_items(128, 16, seed=seed):
            a, b = sorted(item.texts, key=len)[-2:]
            text = tok.apply_chat_template(family.render(item.prompt, a, b), add_generation_prompt=True, tokenize=False)
            longest = max(longest, len(tok(text, add_special_tokens=False).input_ids))
    assert 250 < longest <= 340 and longest + MAX_TOKENS <= CONTEXT


def test_importing_an_experiment_leaves_the_processs_vllm_settings_alone():
    code = ("import os, experiments.bench_engine, experiments.gpu_check, experiments.scaling.__main__; "
            "print(sorted(k for k in ('VLLM_LOGGING_LEVEL', 'VLLM_LOGGING_STREAM', 'VLLM_CPU_KVCACHE_SPACE') "
            "if k in os.environ))")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
