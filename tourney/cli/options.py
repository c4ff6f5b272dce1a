"""Every command-line option tourney's commands share, declared once.

An option is declared with ``option(...)``; a command uses it as ``SEED()`` or, with its own help or default,
``SEED(help="...")``. Groups of options that always go together are lists applied with ``apply_to``. This module imports
only click and tourney's light registries: the training environment (no vLLM) imports it too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import click

from strategies.registry import ELO_K, RATINGS, STRATEGIES
from tourney.config import BACKENDS, DTYPES, MODES, REPLICA_TIMEOUT
from tourney.forcing import VERDICT_MODES

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class Finite(click.ParamType):
    """A finite number: nan or inf would pass as a float and make every later number nan."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """The number, or click's one-line error."""
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"expected a finite number, got {value}", param, ctx)
        return float(number)


FINITE = Finite()


def option(*decls: str, **attrs: Any) -> Callable[..., Decorator]:
    """Declare an option once; calling the result builds it, with any attribute (help, default) overridden and,
    optionally, its own parameter name (``OUTPUT("out_dir", required=True)``)."""

    def make(*name: str, **override: Any) -> Decorator:
        merged = attrs | override
        if merged.get("required"):  # a default (even None) would satisfy click's check: a required option has none
            merged.pop("default", None)
            merged.pop("show_default", None)
        return click.option(*decls, *name, **merged)

    return make


def apply_to(options: Sequence[Decorator]) -> Decorator:
    """A decorator adding ``options`` to a command, in the order --help shows them."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(options):
            fn = opt(fn)
        return fn

    return decorate


INPUT: Decorator = click.argument("input_path", metavar="INPUT", type=str)
OUTPUT = option("-o", "--output", default="-", show_default=True, help="Output JSONL file ('-' = stdout).")
SEED = option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Run seed.")
FAMILY = option(
    "--family",
    default=None,
    help="Judge family: rm-r1, rrm, or a template .toml file (default: detected from the model).",
)
LIMIT = option("--limit", type=click.IntRange(min=1), default=None, metavar="K",
               help="Only the first K prompts of INPUT (a quick look; the rest is not read).")  # fmt: skip
DRY_RUN = option("--dry-run", is_flag=True)
SUMMARY = option("--summary", "summary_path", default=None, help="Write run counters as JSON.")
NO_CACHE = option("--no-cache", is_flag=True)
QUIET = option("-q", "--quiet", is_flag=True)
VAL_FRACTION = option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
                      help="Share of pairs (whole prompts) held out for validation.")  # fmt: skip
VERBOSE = option(
    "-v", "--verbose", is_flag=True,
    help="Show vLLM/torch logs on stderr (otherwise they go to logs/last-run.log in $TOURNEY_CACHE_DIR or "
         "~/.cache/tourney).",
)  # fmt: skip

# The model's backend: shared by the judge commands and `tourney sample` (a policy runs on the same backends).
SERVER: list[Decorator] = [
    click.option("--backend", type=click.Choice(list(BACKENDS)), default="vllm", show_default=True,
                 help="vllm: in-process engine; openai: OpenAI-compatible servers given by --base-url; ray: "
                      "--replicas engines as Ray actors on a cluster (see --ray-address)."),
    click.option("--base-url", "base_urls", multiple=True, metavar="URL",
                 help="OpenAI-compatible endpoint (repeatable; load is spread over all)."),
    click.option("--concurrency", type=click.IntRange(min=1), default=16, show_default=True,
                 help="Requests in flight per --base-url endpoint."),
]  # fmt: skip
# --backend ray: in-process engines as Ray actors (tourney.backends.ray).
RAY: list[Decorator] = [
    click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
                 help="--backend ray: vLLM engines, each a Ray actor with --tensor-parallel-size GPUs (CPUs on a "
                      "cluster without GPUs), spread over the nodes."),
    click.option("--ray-address", default=None, metavar="ADDRESS",
                 help="--backend ray: 'auto' joins the cluster `ray start` made on this machine, HOST:PORT another "
                      "(default: a private cluster on 127.0.0.1 that ends with the run)."),
    click.option("--replica-timeout", type=click.FloatRange(min=0, min_open=True), default=REPLICA_TIMEOUT,
                 show_default=True,
                 help="--backend ray: seconds a replica may take to load, or to come back after it is lost; "
                      "past it the run stops (exit 1, every judgment so far cached)."),
]  # fmt: skip
API_KEY: Decorator = click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
                       help="Environment variable holding the API key for --backend openai.")  # fmt: skip
VLLM: list[Decorator] = [
    click.option("--dtype", type=click.Choice(list(DTYPES)), default="auto", show_default=True,
                 help="vLLM dtype (auto: the model's; smollm2 runs float32)."),
    click.option("--max-model-len", type=click.IntRange(min=16), default=None,
                 help="vLLM context length (default: the longest prompt + --max-tokens, rounded up, at most the "
                      "model's own limit)."),
    click.option("--tensor-parallel-size", type=click.IntRange(min=1), default=1, show_default=True,
                 help="GPUs one vLLM engine spans (e.g. 4 for a 32B judge on 4 GPUs)."),
    click.option("--gpu-memory-utilization", type=click.FloatRange(0, 1, min_open=True), default=None,
                 help="Share of each GPU's memory vLLM may take for weights and KV cache (vLLM's default: 0.9)."),
    click.option("--engine-arg", "engine_args", multiple=True, metavar="KEY=VALUE",
                 help="Any other vLLM engine argument (repeatable; VALUE is read as JSON when it parses, e.g. "
                      "--engine-arg enforce_eager=true --engine-arg quantization=fp8)."),
]  # fmt: skip

# How long a server (--backend openai) is waited on and retried: judges (rank, best-of-n, pairs) and policies (sample).
RETRIES: list[Decorator] = [
    click.option("--max-retries", type=click.IntRange(min=0), default=6, show_default=True,
                 help="Retries per request on 429/5xx/timeouts/resets (exponential backoff, capped at 30 s; "
                      "--backend openai)."),
    click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True,
                 help="Seconds to wait for one server answer before retrying (--backend openai)."),
]  # fmt: skip

WINDOW = 4096  # prompts in flight: big batches for a GPU judge, a few hundred MB at most


def judging(output: Decorator | None = None) -> list[Decorator]:
    """The options of every command that runs tournaments (rank, best-of-n, pairs); ``output`` replaces the
    default ``-o`` (pairs also writes Parquet)."""
    return [INPUT, output or OUTPUT(), *_JUDGING]


_JUDGING: list[Decorator] = [
    LIMIT(),
    click.option("--judge", default="smollm2", show_default=True,
                 help="Judge: 'smollm2' (built-in weak CPU judge), a model directory or hub id (e.g. "
                      "Reward-Reasoning/RRM-7B), or 'simulated' (a statistical SIMULATOR reading each "
                      "response's 'quality'; not a model)."),
    *SERVER,
    *RAY,
    *RETRIES,
    API_KEY,
    FAMILY(),
    click.option("--strategy", type=click.Choice(sorted(STRATEGIES)), default=None,
                 help="Tournament (default: lucb with --budget; without one, knockout for best-of-n and "
                      "round-robin for rank and pairs)."),
    click.option("--rating", type=click.Choice(list(RATINGS)), default="elo", show_default=True,
                 help="Round-robin rating: sequential ELO or Bradley-Terry MLE."),
    click.option("--elo-k", type=click.FloatRange(min=0, min_open=True), default=ELO_K, show_default=True,
                 help="ELO K-factor (step size) for --rating elo."),
    click.option("--votes", type=click.IntRange(min=1), default=1, show_default=True,
                 help="voting@k: judgments per match, positions balanced."),
    click.option("--budget", type=click.IntRange(min=1), default=None,
                 help="Judge calls per prompt (votes included), never exceeded; adaptive strategies stop early "
                      "when they are sure. See the README's strategy guide."),
    click.option("--adaptive-votes", is_flag=True,
                 help="Stop a match's --votes once their majority is decided (--votes is then the most)."),
    SEED(),
    click.option("--mode", type=click.Choice(list(MODES)), default="auto",
                 show_default=True, help="pipelined: no barrier across prompts (default for model judges)."),
    click.option("--window", type=click.IntRange(min=1), default=WINDOW, show_default=True,
                 help="Prompts in flight at once: input is read lazily and memory is bounded by the window; "
                      "lockstep judges every ready match of the window in one call (16,384 at most)."),
    click.option("--max-tokens", type=click.IntRange(min=1), default=None, help="Override the family's budget."),
    click.option("--temperature", type=click.FloatRange(min=0), default=None, help="Override sampling."),
    click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
                 help="Override sampling."),
    click.option("--verdict", type=click.Choice(list(VERDICT_MODES)), default="auto",
                 show_default=True, help="auto: force a verdict from log-probs when unparseable; "
                                         "logprobs: always; parse: never."),
    *VLLM,
    click.option("--sim-tau", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
                 help="Simulator: temperature of P(i beats j) = sigmoid((q_i - q_j)/tau)."),
    click.option("--sim-position-bias", type=FINITE, default=0.0, show_default=True,
                 help="Simulator: logit added in favour of position A."),
    click.option("--sim-invalid-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                 help="Simulator: share of votes that come back unparseable."),
    click.option("--sim-latency", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="Simulator: seconds each judge call takes, standing in for a real backend."),
    click.option("--cache", "cache_path", default=None,
                 help="Judgment cache (SQLite). Default: judgments.sqlite in $TOURNEY_CACHE_DIR or ~/.cache/tourney."),
    NO_CACHE(help="Do not read or write the judgment cache."),
    click.option("--judgments", "judgments_path", default=None,
                 help="Write every judgment (ids, order shown, vote, verdict, raw text) as JSONL."),
    SUMMARY(),
    DRY_RUN(help="Print how many judgments the run would make and how many are cached; check every prompt "
                 "against the judge's context (no model is started, nothing is written)."),
    QUIET(help="No progress bar and no closing summary line (warnings and errors still show)."),
    VERBOSE(),
]  # fmt: skip
JUDGE = judging()
