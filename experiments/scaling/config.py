"""Read and check a scaling config (TOML): every key known, every value possible, before any judging.

A bad config stops with one line naming the file, the line (found by scanning the TOML text) and the key, e.g.
``tourney: error: sim.toml:14: field 'sweep.n': N=64 is more than the 32 candidates of prompt 'gsm8k-test-0'``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import args
from strategies.registry import RATINGS, strategy_options
from tourney.config import DTYPES
from tourney.errors import InputError
from tourney.forcing import VERDICT_MODES
from tourney.tournament import Tournament

# Outputs of a run not given --out or `out`: an untracked folder of the current directory (.gitignore lists it), so
# trying a config never rewrites the tracked experiments/results/<name>; those are regenerated with --out only.
DEFAULT_OUT = "scaling-results"
TOP_KEYS = {"name", "seed", "bootstrap", "cache", "out", "data", "judge", "sweep"}
DATA_KEYS = {
    "synthetic": {"source", "prompts", "start", "pool", "p_correct", "distractors", "answer"},
    "jsonl": {"source", "path", "prompts", "label", "answer"},
}
JUDGE_KEYS = {
    "simulated": {"name", "kind", "accuracy", "position_bias", "invalid_rate"},
    "vllm": {"name", "kind", "model", "family", "max_tokens", "temperature", "top_p", "verdict", "dtype",
             "max_model_len", "mode", "seed", "enforce_eager", "tensor_parallel_size", "gpu_memory_utilization",
             "engine_args"},
}  # fmt: skip
# kind = "ray": the same model judge on Ray replicas (tourney.backends.ray): the vllm keys plus these.
JUDGE_KEYS["ray"] = JUDGE_KEYS["vllm"] | {"replicas", "ray_address", "replica_timeout"}
MODEL_KINDS = ("vllm", "ray")
SWEEP_KEYS = ("judge", "strategy", "rating", "max_tokens", "budget", "votes", "n")


@dataclass(frozen=True)
class JudgeSpec:
    """One judge of the config: its name, kind (simulated or vllm) and options."""

    name: str
    kind: str
    options: dict[str, Any]

    def describe(self) -> str:
        """One line for tables and plots (the simulator says it is one)."""
        if self.kind == "simulated":
            o = self.options
            bias = f", position bias {o['position_bias']:+g}" if o.get("position_bias") else ""
            return f"{self.name}: SIMULATED judge, pairwise accuracy {o['accuracy']:g}{bias}"
        return f"{self.name}: {self.options['model']} (vLLM)"


@dataclass(frozen=True)
class Cell:
    """One point of the sweep."""

    judge: str
    strategy: str
    rating: str | None
    max_tokens: int | None
    budget: int | None
    votes: int
    n: int

    def label(self) -> str:
        """A short name for progress lines."""
        parts = [self.judge, self.strategy + (f"/{self.rating}" if self.rating else ""), f"N={self.n}",
                 f"k={self.votes}"]  # fmt: skip
        parts += [f"max_tokens={self.max_tokens}"] if self.max_tokens else []
        parts += [f"budget={self.budget}"] if self.budget else []
        return " ".join(parts)

    def tournament(self, seed: int) -> Tournament:
        """The tournament this cell plays on every prompt."""
        return Tournament(strategy=self.strategy, rating=self.rating or "elo", votes=self.votes, budget=self.budget,
                          seed=seed)  # fmt: skip


@dataclass
class Config:
    """A checked config."""

    path: Path
    name: str
    seed: int
    bootstrap: int
    cache: str | None  # a path, "default", or None (no cache)
    out: Path
    data: dict[str, Any]
    judges: dict[str, JudgeSpec]
    sweep: list[dict[str, list[Any]]]  # one or more blocks
    cells: list[Cell] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # printed before anything runs (e.g. greedy votes)
    where: Any = None  # finds a key's line, for errors found after loading (N larger than the candidates)

    def error(self, key: str, message: str) -> InputError:
        """An InputError naming this config file, the line of ``key`` and the key."""
        return self.where.error(key, message)


class _Where:
    """Find the line of a key in the TOML text, for error messages (tomllib gives none)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines: dict[str, int] = {}  # "table.key" (or "table[i]" for the i-th of an array of tables) -> line
        table = ""
        counts: dict[str, int] = {}  # array-of-tables name -> index of the last one seen
        for lineno, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if m := re.match(r"^\[\[\s*([\w.-]+)\s*\]\]", stripped):
                counts[m.group(1)] = counts.get(m.group(1), -1) + 1
                table = f"{m.group(1)}[{counts[m.group(1)]}]"
                self.lines.setdefault(table, lineno)
            elif m := re.match(r"^\[\s*([\w.-]+)\s*\]", stripped):
                table = m.group(1)
                self.lines.setdefault(table, lineno)
            elif m := re.match(r"^([\w-]+|\"[^\"]+\")\s*=", stripped):
                key = m.group(1).strip('"')
                self.lines.setdefault(f"{table}.{key}" if table else key, lineno)

    def error(self, key: str, message: str) -> InputError:
        """An InputError at the line of ``key`` (or of its table)."""
        line = self.lines.get(key) or self.lines.get(key.rsplit(".", 1)[0])
        return InputError(message, file=str(self.path), line=line, field=key)


def _int(where: _Where, key: str, value: Any, lo: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise where.error(key, f"expected an integer, got {value!r}")
    if value < lo:
        raise where.error(key, f"must be >= {lo}, got {value}")
    return value


def _num(where: _Where, key: str, value: Any, lo: float, hi: float, open_lo: bool = False, open_hi: bool = False):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise where.error(key, f"expected a number, got {value!r}")
    if value < lo or value > hi or (open_lo and value == lo) or (open_hi and value == hi):
        lb, rb = "(" if open_lo else "[", ")" if open_hi else "]"
        raise where.error(key, f"must be in {lb}{lo:g}, {hi:g}{rb}, got {value:g}")
    return float(value)


def _unknown(where: _Where, prefix: str, given: dict[str, Any], allowed: set[str] | tuple[str, ...]) -> None:
    for key in given:
        if key not in allowed:
            raise where.error(f"{prefix}{key}", f"unknown key; expected one of {', '.join(sorted(allowed))}")


def load(path: str | Path, out: str | Path | None = None) -> Config:
    """Parse and check a config file; raise InputError naming the key on the first problem."""
    from strategies.registry import STRATEGIES

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read config: {getattr(err, 'strerror', None) or err}", file=str(path)) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"\(at line (\d+)", str(err))
        raise InputError(f"not valid TOML: {str(err).split(' (at')[0]}", file=str(path),
                         line=int(m.group(1)) if m else None) from None  # fmt: skip
    where = _Where(path, text)
    _unknown(where, "", raw, TOP_KEYS)
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
        raise where.error("name", "expected a plain name (letters, digits, _ . -)")
    seed = _int(where, "seed", raw.get("seed", 0), lo=0)
    bootstrap = _int(where, "bootstrap", raw.get("bootstrap", 1000), lo=10)
    cache = raw.get("cache", True)
    if cache is True:
        cache = "default"
    elif cache is False:
        cache = None
    elif isinstance(cache, str) and cache:  # a file path; paths in a config are relative to the current directory
        try:  # its folder, now: a run would fail on it only after loading the data
            if Path(cache).is_dir():
                raise argparse.ArgumentTypeError(f"{cache}: is a folder, not a file")
            args.out_dir(str(Path(cache).parent))
        except argparse.ArgumentTypeError as err:
            raise where.error("cache", str(err)) from None
    else:
        raise where.error("cache", "expected true, false or a file path")
    if not isinstance(raw.get("out", ""), str):
        raise where.error("out", "expected a folder path")
    out_dir = Path(out) if out is not None else Path(raw.get("out") or f"{DEFAULT_OUT}/{name}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("output folder is a file", file=str(out_dir))

    data = _data(where, raw.get("data"))
    judges = _judges(where, raw.get("judge"))
    sweep = _sweep(where, raw.get("sweep"), judges, STRATEGIES)
    cfg = Config(path, name, seed, bootstrap, cache, out_dir, data, judges, sweep, where=where)
    cfg.cells = cells(cfg, STRATEGIES)
    cfg.warnings = greedy_warnings(cfg)
    return cfg


def greedy_warnings(cfg: Config) -> list[str]:
    """A warning per model judge swept with more than two votes at temperature 0 (the same two judgments repeated)."""
    from tourney.config import JudgeConfig, greedy_votes, judge_sampling, resolve_family

    out = []
    for name, spec in cfg.judges.items():
        votes = max((c.votes for c in cfg.cells if c.judge == name), default=1)
        if spec.kind not in MODEL_KINDS or votes <= 2:
            continue
        o = spec.options
        judge = JudgeConfig(o["model"], family=o.get("family"), temperature=o.get("temperature"))
        family = resolve_family(judge)
        assert family is not None
        warning = greedy_votes(votes, judge_sampling(judge, family).temperature, "votes =")
        if warning:
            line = cfg.where.lines.get(f"judge[{list(cfg.judges).index(name)}]")
            out.append(f"{cfg.path}:{line}: judge {name!r}: {warning}")
    return out


def _data(where: _Where, data: Any) -> dict[str, Any]:
    if isinstance(data, list):
        raise where.error("data[0]", "expected one [data] table, got [[data]] (an array of tables)")
    if not isinstance(data, dict):
        raise where.error("data", "missing [data] table")
    source = data.get("source", "synthetic")
    if not isinstance(source, str) or source not in DATA_KEYS:
        raise where.error("data.source", f"expected one of {', '.join(DATA_KEYS)}, got {source!r}")
    _unknown(where, "data.", data, DATA_KEYS[source])
    out: dict[str, Any] = {"source": source, "answer": data.get("answer", "strict")}
    if out["answer"] not in ("strict", "flexible"):
        raise where.error("data.answer", f"expected strict or flexible, got {out['answer']!r}")
    out["prompts"] = _int(where, "data.prompts", data["prompts"]) if "prompts" in data else None
    if source == "synthetic":
        if out["prompts"] is None:
            raise where.error("data.prompts", "missing: how many GSM8K questions")
        out["start"] = _int(where, "data.start", data.get("start", 0), lo=0)
        if out["start"] + out["prompts"] > 1319:
            raise where.error("data.prompts", "GSM8K test has 1,319 questions; start + prompts is past the end")
        out["pool"] = _int(where, "data.pool", data.get("pool", 16))
        out["p_correct"] = _num(where, "data.p_correct", data.get("p_correct", 0.4), 0, 1, True, True)
        out["distractors"] = _int(where, "data.distractors", data.get("distractors", 3))
    else:
        if not isinstance(data.get("path"), str) or not data["path"]:
            raise where.error("data.path", "expected the path of a JSONL file")
        out["path"] = data["path"]
        if not isinstance(data.get("label", False), bool):
            raise where.error("data.label", "expected true or false")
        out["label"] = data.get("label", False)
    return out


def _judges(where: _Where, judges: Any) -> dict[str, JudgeSpec]:
    if not isinstance(judges, list) or not judges:
        raise where.error("judge", "missing: at least one [[judge]] table")
    out: dict[str, JudgeSpec] = {}
    for k, j in enumerate(judges):
        pre = f"judge[{k}]."
        if not isinstance(j, dict):
            raise where.error("judge", "expected [[judge]] tables")
        kind = j.get("kind")
        if not isinstance(kind, str) or kind not in JUDGE_KEYS:
            raise where.error(pre + "kind", f"expected one of {', '.join(JUDGE_KEYS)}, got {kind!r}")
        _unknown(where, pre, j, JUDGE_KEYS[kind])
        name = j.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
            raise where.error(pre + "name", "expected a plain name (letters, digits, _ . -)")
        if name in out:
            raise where.error(pre + "name", f"duplicate judge name {name!r}")
        opts = {key: value for key, value in j.items() if key not in ("name", "kind")}
        if kind == "simulated":
            if "accuracy" not in opts:
                raise where.error(pre + "accuracy", "missing: the judge's pairwise accuracy on correct-vs-wrong pairs")
            opts["accuracy"] = _num(where, pre + "accuracy", opts["accuracy"], 0.5, 1.0, True, True)
            opts["position_bias"] = _num(where, pre + "position_bias", opts.get("position_bias", 0.0), -10, 10)
            opts["invalid_rate"] = _num(where, pre + "invalid_rate", opts.get("invalid_rate", 0.0), 0, 1)
        else:
            _vllm_options(where, pre, opts)
            if kind == "ray":
                _ray_options(where, pre, opts)
        out[name] = JudgeSpec(name, kind, opts)
    return out


def _vllm_options(where: _Where, pre: str, opts: dict[str, Any]) -> None:
    from tourney.judges import detect_family, get_family

    if not isinstance(opts.get("model"), str) or not opts["model"]:
        raise where.error(pre + "model", "missing: a model name, directory or hub id (e.g. smollm2)")
    from tourney.models import resolve_model

    try:
        resolve_model(opts["model"], convert=False)  # no download, no conversion: is it a dir, hub id or built-in?
    except InputError as err:
        raise where.error(pre + "model", err.message) from None
    try:
        if "family" in opts:
            get_family(opts["family"])
        elif opts["model"] != "smollm2":
            get_family(detect_family(opts["model"]))
    except (InputError, ValueError, KeyError) as err:
        raise where.error(pre + "family", str(getattr(err, "message", err))) from None
    for key in ("max_tokens", "max_model_len", "seed"):
        if key in opts:
            _int(where, pre + key, opts[key], lo=0 if key == "seed" else 1)
    if "temperature" in opts:
        _num(where, pre + "temperature", opts["temperature"], 0, 10)
    if "top_p" in opts:
        _num(where, pre + "top_p", opts["top_p"], 0, 1, open_lo=True)
    checks = {"verdict": VERDICT_MODES, "mode": ("lockstep", "pipelined"), "dtype": DTYPES}
    for key, allowed in checks.items():
        if key in opts and opts[key] not in allowed:
            raise where.error(pre + key, f"expected one of {', '.join(allowed)}, got {opts[key]!r}")
    if "enforce_eager" in opts and not isinstance(opts["enforce_eager"], bool):
        raise where.error(pre + "enforce_eager", "expected true or false")
    _engine_options(where, pre, opts)


def _ray_options(where: _Where, pre: str, opts: dict[str, Any]) -> None:
    """kind = "ray": the replicas, the cluster's address, the replicas' timeout (as --replicas and friends)."""
    if "replicas" in opts:
        _int(where, pre + "replicas", opts["replicas"])
    if "ray_address" in opts and not (isinstance(opts["ray_address"], str) and opts["ray_address"]):
        raise where.error(pre + "ray_address", "expected 'auto' or HOST:PORT")
    if "replica_timeout" in opts:
        _num(where, pre + "replica_timeout", opts["replica_timeout"], 0, 1e9, open_lo=True)


def _engine_options(where: _Where, pre: str, opts: dict[str, Any]) -> None:
    """The GPU engine options, checked as ``JudgeConfig`` checks them (engine_args against vLLM's EngineArgs)."""
    from tourney.config import OWN_ENGINE_ARGS, check_engine_args

    if "tensor_parallel_size" in opts:
        _int(where, pre + "tensor_parallel_size", opts["tensor_parallel_size"])
    if "gpu_memory_utilization" in opts:
        _num(where, pre + "gpu_memory_utilization", opts["gpu_memory_utilization"], 0, 1, open_lo=True)
    extra = opts.get("engine_args", {})
    if not isinstance(extra, dict):
        raise where.error(pre + "engine_args", "expected a table of vLLM engine arguments, e.g. {enforce_eager = true}")
    if "enforce_eager" in opts and "enforce_eager" in extra:  # two values for one setting: say so, do not pick one
        raise where.error(pre + "engine_args", f"enforce_eager is set twice: as {pre}enforce_eager and here")
    try:
        own = {key: f"the judge's {key} key" for key in OWN_ENGINE_ARGS}
        check_engine_args(extra | ({"enforce_eager": opts["enforce_eager"]} if "enforce_eager" in opts else {}), own)
    except InputError as err:
        raise where.error(pre + "engine_args", err.message) from None


def _sweep(
    where: _Where, sweep: Any, judges: dict[str, JudgeSpec], strategies: Mapping[str, Any]
) -> list[dict[str, list[Any]]]:
    """Check the [sweep] table, or each [[sweep]] block (the cells are the union of their products)."""
    if isinstance(sweep, list) and sweep and all(isinstance(b, dict) for b in sweep):
        return [_block(where, f"sweep[{k}]", b, judges, strategies) for k, b in enumerate(sweep)]
    if not isinstance(sweep, dict):
        raise where.error("sweep", "missing: a [sweep] table or [[sweep]] blocks")
    return [_block(where, "sweep", sweep, judges, strategies)]


def _block(
    where: _Where, pre: str, sweep: dict[str, Any], judges: dict[str, JudgeSpec], strategies: Mapping[str, Any]
) -> dict:
    """Check one sweep block: every key known, every value possible."""
    _unknown(where, f"{pre}.", sweep, SWEEP_KEYS)
    out: dict[str, list[Any]] = {}
    for key in SWEEP_KEYS:
        value = sweep.get(key)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if not values:
            raise where.error(f"{pre}.{key}", "empty list")
        if len(set(map(repr, values))) != len(values):
            raise where.error(f"{pre}.{key}", "a value is listed twice")
        out[key] = values
    if "n" not in out:
        raise where.error(f"{pre}.n", "missing: the numbers of candidates N to sweep")
    for n in out["n"]:
        _int(where, f"{pre}.n", n)
    for k in out.setdefault("votes", [1]):
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise where.error(f"{pre}.votes", f"votes (k) must be an integer >= 1, got {k!r}")
    for s in out.setdefault("strategy", ["knockout"]):
        if not isinstance(s, str) or s not in strategies:
            raise where.error(f"{pre}.strategy", f"unknown strategy {s!r}; choose from {', '.join(sorted(strategies))}")
    rating_given = "rating" in out
    for r in out.setdefault("rating", ["elo"]):
        if not isinstance(r, str) or r not in RATINGS:
            raise where.error(f"{pre}.rating", f"unknown rating {r!r}; choose from {', '.join(RATINGS)}")
    if rating_given and not any("rating" in strategy_options(s) for s in out["strategy"]):
        raise where.error(f"{pre}.rating", f"no strategy in {pre}.strategy takes a rating")  # it would be ignored
    for j in out.setdefault("judge", list(judges)):
        if not isinstance(j, str) or j not in judges:
            raise where.error(f"{pre}.judge", f"no [[judge]] named {j!r}; have {', '.join(judges)}")
    if "max_tokens" in out:
        for m in out["max_tokens"]:
            _int(where, f"{pre}.max_tokens", m)
        if not any(judges[j].kind in MODEL_KINDS for j in out["judge"]):
            raise where.error(f"{pre}.max_tokens", "only model judges have a token budget; no [[judge]] here is one")
    if "budget" in out:
        for b in out["budget"]:
            _int(where, f"{pre}.budget", b)
        budgeted = [s for s in out["strategy"] if "budget" in strategy_options(s)]
        if not budgeted:
            raise where.error(f"{pre}.budget", f"no strategy in {pre}.strategy takes a budget")
        for s, n, k, b in itertools.product(budgeted, out["n"], out["votes"], out["budget"]):
            try:  # a budget under a strategy's floor (one Swiss round, a bracket) fails here, not mid-run
                Tournament(strategy=s, votes=k, budget=b).build(n, 0)
            except ValueError as err:
                raise where.error(f"{pre}.budget", f"{err} (votes={k})") from None
    return out


def cells(cfg: Config, strategies: Mapping[str, Any]) -> list[Cell]:
    """Expand the sweep blocks into cells (in order, each once); options a strategy or judge cannot use collapse."""
    seen: dict[Cell, None] = {}
    for sw in cfg.sweep:
        for judge, strategy, rating, max_tokens, budget, votes, n in itertools.product(
            sw["judge"], sw["strategy"], sw["rating"], sw.get("max_tokens", [None]), sw.get("budget", [None]),
            sw["votes"], sw["n"],
        ):  # fmt: skip
            accepts = strategy_options(strategy)
            cell = Cell(
                judge=judge,
                strategy=strategy,
                rating=rating if "rating" in accepts else None,
                max_tokens=max_tokens if cfg.judges[judge].kind in MODEL_KINDS else None,
                budget=budget if "budget" in accepts else None,
                votes=votes,
                n=n,
            )
            seen.setdefault(cell, None)
    order = list(cfg.judges)
    return sorted(seen, key=lambda c: order.index(c.judge))  # judge by judge: each is built once, then closed
