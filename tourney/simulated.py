"""A SIMULATED judge: a statistical stand-in for a reasoning reward model, for tests and experiments.

It never reads the texts. Each response carries a ``quality`` number and the judge prefers the better one with
P(A wins) = σ((q_A − q_B)/τ + bias), where ``bias`` (a logit) models a judge's preference for position A. A share
of votes comes back invalid, as unparseable outputs do. Randomness comes from the request's own seed, so a verdict
does not depend on how requests were batched (two uniforms hashed from that seed, ``strategies.base.seeded_uniforms``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

from strategies.base import seeded_uniforms
from tourney.errors import InputError
from tourney.types import JudgeBase, Judgment, Request


class SimulatedJudge(JudgeBase):
    """Bradley–Terry coin flips from each response's ``quality`` field; not a model."""

    def __init__(
        self, tau: float = 1.0, position_bias: float = 0.0, invalid_rate: float = 0.0, latency: float = 0.0
    ) -> None:
        """Set the temperature ``tau``, the logit bias toward position A, the invalid-vote rate and a per-call delay."""
        if not tau > 0:
            raise InputError(f"tau must be > 0; got {tau}", field="--sim-tau")
        if not 0.0 <= invalid_rate <= 1.0:
            raise InputError(f"invalid_rate must be in [0, 1]; got {invalid_rate}", field="--sim-invalid-rate")
        self.tau, self.position_bias, self.invalid_rate = tau, position_bias, invalid_rate
        self.latency = latency  # seconds per call, to stand in for a real backend's round trip

    def identity(self) -> dict[str, Any]:
        """Describe the simulator's settings (they key the cache)."""
        return {"backend": "simulated", "tau": self.tau, "position_bias": self.position_bias,
                "invalid_rate": self.invalid_rate}  # fmt: skip

    def key_fields(self) -> tuple[str, ...]:
        """Response fields the verdicts depend on (beyond the texts), so the cache keys them too."""
        return ("quality",)

    def p_a(self, request: Request) -> float:
        """Return the model's probability that the response in position A wins."""
        qa, qb = float(request.a_fields["quality"]), float(request.b_fields["quality"])
        logit = (qa - qb) / self.tau + self.position_bias  # Python floats overflow to inf silently: tanh saturates
        return 0.5 * (1.0 + math.tanh(logit / 2.0))  # the logistic function, without exp() overflow

    def judge(self, requests: Sequence[Request]) -> list[Judgment]:
        """Draw one verdict per request from its own seeded generator."""
        if self.latency:
            time.sleep(self.latency)
        return self.verdicts(requests)

    async def ajudge(self, requests: Sequence[Request]) -> list[Judgment]:
        """As ``judge``, on the caller's event loop: its latency is awaited, not slept on a thread."""
        if self.latency:
            await asyncio.sleep(self.latency)
        return self.verdicts(requests)

    def verdicts(self, requests: Sequence[Request]) -> list[Judgment]:
        """One verdict per request, from two uniforms hashed from the request's own seed (no latency)."""
        out = []
        for req in requests:
            draw, coin = seeded_uniforms(str(req.seed), 2)
            if draw < self.invalid_rate:
                out.append(Judgment(verdict=None, p_a=None, raw="[simulated] no verdict"))
                continue
            verdict = "A" if coin < self.p_a(req) else "B"
            out.append(Judgment(verdict=verdict, p_a=1.0 if verdict == "A" else 0.0, raw=f"[simulated] {verdict}"))
        return out

    def close(self) -> None:
        """Nothing to release."""
