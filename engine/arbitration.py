"""Arbitration: from eligible offers to the ranked candidates for a channel.

priority = propensity x value x levers. A risk verdict of step_up or block suppresses
sales offers (service messages stay). Contact-policy caps are applied afterwards, in
the commit step, atomically with the impression counters (engine/lua/commit.lua);
it walks this ranking and shows the first ``max_actions`` that are under their caps,
or the channel's fallback.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.decision import VERDICT_ORDER, Action, Risk
from engine.rules import Dropped, Offer
from engine.scoring import Scores

_SUPPRESSED_KINDS = frozenset({"offer", "retention"})


def arbitrate(
    eligible: tuple[Offer, ...], scores: Scores, risk: Risk, channel: str
) -> tuple[tuple[Action, ...], tuple[Dropped, ...]]:
    """Rank the eligible offers; drop sales offers when the risk verdict says so."""
    suppress = VERDICT_ORDER[risk.verdict] >= VERDICT_ORDER["step_up"]
    ranked: list[Action] = []
    dropped: list[Dropped] = []
    for offer in eligible:
        if suppress and offer.kind in _SUPPRESSED_KINDS:
            why = f"risk verdict {risk.verdict}: " + ("; ".join(risk.reasons) or "risk")
            dropped.append(Dropped(offer.id, "risk", why))
            continue
        propensity = scores.offer.get(offer.id, 0.0)
        ranked.append(
            Action(
                id=offer.id,
                kind=offer.kind,
                score=propensity * offer.value * offer.lever,
                treatment={"channel": channel, "content": offer.treatments.get(channel, offer.name)},
                reasons=(
                    f"eligible: {offer.name}",
                    f"propensity {propensity:.3f} x value {offer.value:g} x levers {offer.lever:g}",
                ),
            )
        )
    ranked.sort(key=lambda a: (-a.score, a.id))
    return tuple(ranked), tuple(dropped)


def fallback_action(fallbacks: Mapping[str, Mapping[str, str]], channel: str) -> Action:
    fallback = fallbacks.get(channel, {"id": f"{channel}_default", "text": ""})
    return Action(
        id=fallback["id"],
        kind="fallback",
        score=0.0,
        treatment={"channel": channel, "content": fallback.get("text", "")},
        reasons=("no eligible offer left for this channel",),
    )


def without_caps(actions: tuple[Action, ...], fallback: Action, max_actions: int) -> tuple[Action, ...]:
    """What would be shown if no contact-policy cap applied (rule tests, previews)."""
    return actions[:max_actions] or (fallback,)
