"""The library entry point, the tournament spec and the CLI package's shape: no cycles, cheap imports."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from tourney import JudgeConfig, SimConfig, Tournament, rank, read_items
from tourney.engine import Engine
from tourney.errors import InputError
from tourney.simulated import SimulatedJudge

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "best_of_n.jsonl"
SIM = JudgeConfig("simulated", sim=SimConfig(tau=0.5))


def rows(prompts: int = 4, n: int = 5) -> list[dict]:
    return [{"id": f"p{k}", "prompt": f"q{k}", "responses": [{"text": f"r{i}", "quality": float(i)} for i in range(n)]}
            for k in range(prompts)]  # fmt: skip


def test_rank_takes_rows_or_items_and_returns_results_and_counters(tmp_path):
    run = rank(rows(), judge=SIM, tournament=Tournament("knockout", seed=3))
    assert [r.item.id for r in run.results] == ["p0", "p1", "p2", "p3"]
    assert run.stats.judgments == 4 * 4 and run.stats.prompts == 4 and run.stats.backend_calls == 3
    items = read_items(str(EXAMPLE))
    league = rank(items, judge=JudgeConfig("simulated"), tournament=Tournament("round-robin"))
    assert league.stats.judgments == sum(len(it.texts) * (len(it.texts) - 1) // 2 for it in items)
    assert [sorted(r.ranking) for r in league.results] == [list(range(len(it.texts))) for it in items]


def test_rank_with_a_cache_path_resumes_and_dry_run_counts(tmp_path):
    cache = tmp_path / "c.sqlite"
    first = rank(rows(), judge=SIM, tournament=Tournament("round-robin", votes=2), cache=cache)
    dry = rank(rows(), judge=SIM, tournament=Tournament("round-robin", votes=2), cache=cache, dry_run=True)
    assert dry.stats.judgments == dry.stats.cached == first.stats.judgments == 4 * 10 * 2
    again = rank(rows(), judge=SIM, tournament=Tournament("round-robin", votes=2), cache=cache)
    assert again.stats.cached == again.stats.judgments and again.stats.backend_calls == 0
    assert [r.scores for r in again.results] == [r.scores for r in first.results]


def test_rank_checks_rows_and_budget_before_judging():
    with pytest.raises(InputError, match=r"<items>:2: field 'responses'"):
        rank([rows(1)[0], {"prompt": "x"}], judge=SIM)
    with pytest.raises(InputError, match="duplicate id"):
        rank(rows(1) + rows(1), judge=SIM)
    with pytest.raises(InputError, match="over the budget of 3"):
        rank(rows(), judge=SIM, tournament=Tournament("knockout", budget=3))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"strategy": "nope"}, "strategy"), ({"rating": "glicko"}, "rating"), ({"votes": 0}, "votes"),
     ({"budget": 0}, "budget"), ({"seed": -1}, "seed"), ({"elo_k": 0.0}, "elo_k"),
     ({"votes": 2, "adaptive_votes": True}, "adaptive_votes"), ({"votes": True}, "votes"),
     ({"strategy": "knockout", "rating": "bt"}, "rating"), ({"strategy": "lucb", "elo_k": 4.0}, "elo_k"),
     ({"strategy": "round-robin", "rating": "bt", "elo_k": 4.0}, "elo_k")],
)  # fmt: skip
def test_tournament_validates_itself(kwargs, field):
    with pytest.raises(InputError, match=f"field '{field}'"):
        Tournament(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"temperature": -1.0}, "option --temperature: 'temperature' is out of range: -1.0"),
     ({"top_p": 0.0}, "option --top-p: 'top_p' is out of range: 0.0"),
     ({"max_tokens": 0}, "option --max-tokens: 'max_tokens' is out of range: 0"),
     ({"judge": "simulated", "family": "rm-r1"}, "--family has no effect with --judge simulated"),
     ({"judge": "simulated", "temperature": 0.5}, "--temperature has no effect with --judge simulated"),
     ({"judge": "simulated", "backend": "openai"}, "--backend has no effect with --judge simulated"),
     ({"sim": SimConfig(tau=2.0)}, "the simulator's settings (sim) only apply to --judge simulated")],
)  # fmt: skip
def test_judge_config_refuses_what_the_cli_refuses(kwargs, error):
    with pytest.raises(InputError) as err:
        JudgeConfig(**kwargs)
    assert str(err.value) == error


def test_a_second_run_of_one_engine_counts_from_zero_and_modes_agree():
    engine = Engine(SimulatedJudge(tau=1.0), Tournament("knockout", votes=3, seed=1), keep_records=True)
    items = read_items(str(EXAMPLE))
    items = [it for it in items if all("quality" in f for f in it.fields)] or items
    one = engine.run(items)
    two = engine.run(items)
    three = asyncio.run(engine.arun(items))
    assert one.stats.judgments == two.stats.judgments == three.stats.judgments
    assert [r.ranking for r in one.results] == [r.ranking for r in three.results]
    assert [len(r.records) for r in one.results] == [len(r.records) for r in three.results]


class _Stalls:
    """A strategy that is never done and, after one match, proposes nothing: a bug the engine must name."""

    def __init__(self, n: int) -> None:
        self.n, self.asked = n, 0

    def propose(self):
        from strategies.base import Match

        self.asked += 1
        return [Match(0, 0, 1)] if self.asked == 1 else []

    def receive(self, match_id, p_i):
        pass

    def done(self):
        return False

    def budget(self):
        return 1


@pytest.mark.parametrize("pipelined", [False, True])
def test_a_stalled_strategy_is_an_error_in_both_modes(monkeypatch, pipelined):
    from strategies.voting import Voting

    monkeypatch.setattr(Tournament, "build", lambda self, n, prompt_id: Voting(_Stalls(n)))
    engine = Engine(SimulatedJudge(), Tournament("knockout"))
    items = rank.__globals__["as_items"](rows(2, 2))
    with pytest.raises(RuntimeError, match="stalled on prompt 'p0'"):
        asyncio.run(engine.arun(items)) if pipelined else engine.run(items)


def module_imports(path: Path) -> set[str]:
    """The tourney/strategies modules a file imports when it is imported (top level, not inside functions)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports do not run
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ("tourney", "strategies")}


def test_no_import_cycle_among_modules():
    mods = {}
    for pkg in ("tourney", "strategies"):
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            mods[name] = path
    graph = nx.DiGraph()
    for name, path in mods.items():
        for dep in module_imports(path):
            if dep in mods and dep != name:
                graph.add_edge(name, dep)
            # importing a submodule runs its packages' __init__ first
    cycles = list(nx.simple_cycles(graph))
    assert cycles == []


def test_cli_modules_import_in_any_order_and_help_loads_no_model_library():
    mods = sorted(p.stem for p in (ROOT / "tourney" / "cli").glob("*.py") if p.stem != "__init__")
    code = "\n".join([
        "import importlib, sys",
        f"for m in {mods!r} + {mods[::-1]!r}:",
        "    for k in [k for k in sys.modules if k.startswith(('tourney', 'strategies'))]: del sys.modules[k]",
        "    importlib.import_module('tourney.cli.' + m)",
        "from tourney.cli import main",
        "try:",
        "    main(['--help'])",
        "except SystemExit:",
        "    pass",
        "heavy = [m for m in ('vllm', 'torch', 'transformers', 'scipy', 'networkx') if m in sys.modules]",
        "print('HEAVY', heavy, file=sys.stderr)",
    ])  # fmt: skip
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stderr and "best-of-n" in p.stdout


def test_python_example_in_the_readme_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    [block] = [b for b in blocks if "from tourney import" in b]
    monkeypatch.chdir(ROOT)
    scope: dict = {"__name__": "__main__"}
    code = block.replace('"smollm2"', '"simulated"').replace('"judgments.sqlite"', repr(str(tmp_path / "c.sqlite")))
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["run"].stats.judgments > 0
    json.dumps(scope["run"].stats.as_dict())
