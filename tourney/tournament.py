"""The tournament as data: one frozen spec that builds, plans and checks every prompt's tournament.

Like vLLM's ``SamplingParams``: plain values, checked when built. The engine, ``--dry-run``, the CLI and the scaling
configs all build a prompt's tournament through ``Tournament.build``, so a prompt gets the same bracket, votes and
seeds wherever it is run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from strategies.registry import ELO_K, RATINGS, STRATEGIES, budgeted, make_tournament, strategy_options
from tourney.errors import InputError

if TYPE_CHECKING:
    from strategies.voting import Voting
    from tourney.io import Item


def derive_seed(*parts: Any) -> int:
    """Derive a stable 63-bit seed from JSON-able parts (no dependence on Python's salted hash)."""
    return encoded_seed(*(_json(p) for p in parts))


def _json(part: Any) -> str:
    """``json.dumps(part, sort_keys=True, ensure_ascii=False)``; a string or an int (a seed, an id) without its cost."""
    kind = type(part)
    if kind is str:
        return _encode_string(part)
    if kind is int:
        return int.__repr__(part)
    return json.dumps(part, sort_keys=True, ensure_ascii=False)


_encode_string: Callable[[str], str] = json.encoder.encode_basestring


def encoded_seed(*parts: str) -> int:
    """``derive_seed`` from parts already JSON-encoded (sorted keys, default separators), for callers that encode
    a text once and derive many seeds from it: the same value as ``derive_seed`` of the decoded parts."""
    digest = hashlib.sha256(("[" + ", ".join(parts) + "]").encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class Tournament:
    """How each prompt's candidates are compared: strategy, rating, votes per match, budget and seed.

    ``budget`` caps the judgments (votes included) per prompt; ``adaptive_votes`` stops a match's ``votes`` once
    their majority is decided; ``rating`` and ``elo_k`` apply to round robin. Invalid values raise ``InputError``
    naming the field.
    """

    strategy: str = "knockout"
    rating: str = "elo"
    votes: int = 1
    adaptive_votes: bool = False
    budget: int | None = None
    seed: int = 0
    elo_k: float = ELO_K
    intervals: bool = False  # 95 % bootstrap intervals on each candidate's Bradley–Terry score (round robin, bt)

    def __post_init__(self) -> None:
        """Check every value, as ``SamplingParams`` does."""
        if self.strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(sorted(STRATEGIES))}",
                             field="strategy")  # fmt: skip
        if self.rating not in RATINGS:
            raise InputError(f"unknown rating {self.rating!r}; choose one of {', '.join(RATINGS)}", field="rating")
        for name, least in (("votes", 1), ("seed", 0), ("budget", 1)):
            value = getattr(self, name)
            if value is None and name == "budget":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise InputError(f"expected an integer >= {least}, got {value!r}", field=name)
        if not self.elo_k > 0:
            raise InputError(f"expected a number > 0, got {self.elo_k!r}", field="elo_k")
        # As the CLI refuses --rating/--elo-k where they change nothing (the defaults stand for "not given").
        accepts = self.accepts()
        if self.rating != "elo" and "rating" not in accepts:
            raise InputError(f"has no effect with strategy {self.strategy!r}", field="rating")
        if self.elo_k != ELO_K and ("elo_k" not in accepts or self.rating != "elo"):
            raise InputError(f"has no effect with strategy {self.strategy!r} and rating {self.rating!r}", field="elo_k")
        if self.adaptive_votes and self.votes < 3:
            raise InputError(f"needs votes >= 3 to stop early, got votes={self.votes}", field="adaptive_votes")
        if self.intervals and (self.strategy, self.rating) != ("round-robin", "bt"):
            raise InputError("needs Bradley–Terry scores from every pair: --strategy round-robin --rating bt (Elo "
                             "depends on game order, and the other strategies judge too few pairs for a bootstrap)",
                             field="intervals")  # fmt: skip

    def accepts(self) -> set[str]:
        """The options the strategy's constructor takes (``rating``, ``elo_k``, ``budget``, ``seed`` ...)."""
        return strategy_options(self.strategy)

    def build(self, n: int, prompt_id: Any) -> Voting:
        """The vote-wrapped strategy for one prompt of ``n`` candidates, seeded by the run seed and the prompt id."""
        return make_tournament(self.strategy, n, rating=self.rating, seed=derive_seed(self.seed, prompt_id),
                               elo_k=self.elo_k, votes=self.votes, adaptive_votes=self.adaptive_votes,
                               budget=self.budget)  # fmt: skip

    def plan(self, items: Iterable[Item]) -> int:
        """The judgments a run over ``items`` would make (an upper bound for adaptive strategies)."""
        return sum(self.build(len(item.texts), item.id).budget() for item in items)

    def exact(self) -> bool:
        """Whether ``plan`` is exact whatever the verdicts: a round robin with every vote of every match asked."""
        return self.strategy == "round-robin" and not self.adaptive_votes

    def counted_exactly(self) -> bool:
        """Whether a dry run's count is what the run makes: round robin and knockout judge the same number of pairs
        whatever the verdicts; adaptive votes and the adaptive strategies (lucb, adaptive knockout, Swiss, which may
        stop early or find no pairing) are counted at most."""
        return self.strategy in ("round-robin", "knockout") and not self.adaptive_votes

    def check(self, items: Sequence[Item], file: str | None = None, field: str = "budget") -> None:
        """Every prompt's tournament must fit the budget (a knockout of N needs N-1 matches times the votes)."""
        if self.budget is None:
            return
        checked: set[int] = set()
        for item in items:
            if len(item.texts) in checked:  # the check depends on the number of candidates only
                continue
            checked.add(len(item.texts))
            try:
                self.build(len(item.texts), item.id)
            except ValueError as err:
                # lucb fits any budget; swiss and adaptive-knockout have a floor, the others a fixed size.
                names = budgeted()
                hint = ("raise --budget or use --strategy lucb" if self.strategy in names
                        else f"raise --budget or pick a budgeted strategy ({', '.join(names)})")  # fmt: skip
                raise InputError(f"{err} ({hint})", file, item.line, field) from None

    def summary(self) -> dict[str, Any]:
        """The fields a run's ``--summary`` reports."""
        return {"strategy": self.strategy, "votes": self.votes, "adaptive_votes": self.adaptive_votes,
                "budget": self.budget}  # fmt: skip
