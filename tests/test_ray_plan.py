"""--backend ray without a cluster: the option checks, the placement plan and the request shares (no Ray import)."""

from __future__ import annotations

import pytest
from clirun import tourney

from tourney.backends.ray import place, plan_lines, shares
from tourney.config import JudgeConfig
from tourney.errors import InputError

CPU2 = [{"address": "127.0.0.1", "CPU": 2, "GPU": 0}]
GPUS = [{"address": "10.0.0.1", "CPU": 16, "GPU": 8}, {"address": "10.0.0.2", "CPU": 16, "GPU": 4}]


def test_replicas_spread_over_the_nodes_and_fit_whole():
    assert place(GPUS, 3, 4, "GPU") == ["10.0.0.1", "10.0.0.2", "10.0.0.1"]
    assert place(CPU2, 2, 1, "CPU") == ["127.0.0.1", "127.0.0.1"]
    with pytest.raises(InputError, match=r"3 replicas x --tensor-parallel-size 4 do not fit .* room for 2"):
        place([GPUS[0]], 3, 4, "GPU")
    with pytest.raises(InputError, match="a replica needs 8 GPUs on one node"):  # 12 GPUs in all, 8 on no node
        place(GPUS[1:] + [{"address": "10.0.0.3", "CPU": 8, "GPU": 4}], 1, 8, "GPU")


def test_the_dry_run_says_where_each_replica_goes():
    assert plan_lines(GPUS, 3, 4) == [
        "ray: cluster of 2 nodes, 32 CPUs, 12 GPUs; each replica takes 4 GPUs",
        "ray: node 10.0.0.1: replicas 0, 2",
        "ray: node 10.0.0.2: replica 1",
    ]


def test_shares_are_contiguous_and_cover_the_batch():
    assert shares(5, 2) == [(0, 3), (3, 5)]
    assert shares(1, 4) == [(0, 1)]
    for n in range(0, 40):
        for parts in range(1, 5):
            got = shares(n, parts)
            assert [i for a, b in got for i in range(a, b)] == list(range(n))
            assert max(b - a for a, b in got) - min(b - a for a, b in got) <= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replicas", "2"], "--replicas only applies to --backend ray"),
        (["--ray-address", "auto"], "--ray-address only applies to --backend ray"),
        (["--backend", "openai", "--base-url", "http://x:1", "--replica-timeout", "5"],
         "--replica-timeout only applies to --backend ray"),
        (["--backend", "ray", "--base-url", "http://x:1"], "--base-url only applies to --backend openai"),
        (["--backend", "ray", "--replicas", "0"], "Invalid value for '--replicas'"),
    ],
)  # fmt: skip
def test_ray_options_are_checked_before_anything_loads(args, message, tmp_path):
    rows = tmp_path / "in.jsonl"
    rows.write_text('{"prompt": "q", "responses": ["a", "b"]}\n')
    run = tourney("best-of-n", rows, "-o", tmp_path / "out.jsonl", *args)
    assert run.returncode == 2 and message in run.stderr, run.stderr
    assert run.stderr.count("\n") <= 3 and not (tmp_path / "out.jsonl").exists()


def test_judge_config_checks_the_ray_values():
    with pytest.raises(InputError, match="--replicas"):
        JudgeConfig(backend="ray", replicas=0)
    with pytest.raises(InputError, match="--replica-timeout"):
        JudgeConfig(backend="ray", replica_timeout=-1)
    with pytest.raises(InputError, match="only applies to --backend ray"):
        JudgeConfig(backend="vllm", replicas=2)
    assert JudgeConfig(backend="ray", replicas=4, tensor_parallel_size=2).replicas == 4
