"""Arbitration policy per channel, from the offers pack's ``arbitration:`` section, and
the two random choices arbitration makes: exploration and the control group.

Both are drawn from hashes, not a clock or a global random generator, so the decision
stays a pure function of its inputs: a replay or a repeat decides the same.

>>> raw = {"default": {"max_actions": 2, "exploration": 0.1},
...        "atm": {"max_actions": 1, "weights": {"service": 2.0}}}
>>> p = parse_arbitration(raw, frozenset({"atm", "mobile"}))
>>> p["atm"].max_actions, p["atm"].exploration, p["atm"].weight("service"), p["mobile"].max_actions
(1, 0.1, 2.0, 2)
>>> in_control_group("C42", 0.0), in_control_group("C42", 1.0)
(False, True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine.errors import BeaconError

_KEYS = {"max_actions", "exploration", "control_group", "weights"}


class PolicyError(BeaconError):
    """The arbitration section of a pack is invalid."""


@dataclass(frozen=True)
class ArbitrationPolicy:
    max_actions: int = 3
    exploration: float = 0.0  # share of decisions whose ranking is shuffled (epsilon-greedy)
    control_group: float = 0.0  # share of customers held out of sales offers, to measure uplift
    weights: Mapping[str, float] = field(default_factory=dict)  # context weight per action kind

    def weight(self, kind: str) -> float:
        return self.weights.get(kind, 1.0)


def parse_arbitration(
    raw: Any, channels: frozenset[str], default_max: int = 3
) -> dict[str, ArbitrationPolicy]:
    """One policy per channel: ``default`` overridden by the channel's own entry."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict) or not set(raw) <= channels | {"default"}:
        raise PolicyError(f"arbitration: keys are `default` and channels ({', '.join(sorted(channels))})")
    base = _one("default", raw.get("default") or {}, ArbitrationPolicy(max_actions=default_max))
    return {ch: _one(ch, raw.get(ch) or {}, base) for ch in sorted(channels)}


def _one(where: str, raw: Any, base: ArbitrationPolicy) -> ArbitrationPolicy:
    if not isinstance(raw, dict) or set(raw) - _KEYS:
        raise PolicyError(f"arbitration {where}: allowed keys are {', '.join(sorted(_KEYS))}")
    out = base
    if "max_actions" in raw:
        n = raw["max_actions"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
            raise PolicyError(f"arbitration {where}: max_actions is a whole number from 1 to 10")
        out = replace(out, max_actions=n)
    for share in ("exploration", "control_group"):
        if share in raw:
            v = raw[share]
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 0.5:
                raise PolicyError(f"arbitration {where}: {share} is a share from 0 to 0.5")
            out = (
                replace(out, exploration=float(v))
                if share == "exploration"
                else replace(out, control_group=float(v))
            )
    if "weights" in raw:
        w = raw["weights"]
        if not isinstance(w, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in w.values()
        ):
            raise PolicyError(f"arbitration {where}: weights map action kinds to non-negative numbers")
        out = replace(out, weights={**out.weights, **{str(k): float(v) for k, v in w.items()}})
    return out


def unit_hash(text: str) -> float:
    """A number in [0, 1) fixed by the text."""
    return int.from_bytes(hashlib.blake2s(text.encode(), digest_size=8).digest(), "big") / 2**64


def in_control_group(customer_id: str, share: float) -> bool:
    """Stable per customer: the same customers stay held out across decisions."""
    return share > 0 and unit_hash("control:" + customer_id) < share
