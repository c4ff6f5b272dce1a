"""The experiments' shared parser and option types: one-line errors, output folders checked before any work."""

from __future__ import annotations

import argparse
import os
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
    ],
)  # fmt: skip
def test_an_option_another_makes_pointless_is_refused(module, argv, line, monkeypatch, capsys):
    import importlib

    main = importlib.import_module(f"experiments.{module}").main
    monkeypatch.setattr("sys.argv", [module, *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and capsys.readouterr().err == f"python -m experiments.{module}: error: {line}\n"
