"""Arbitration: from eligible offers to the ranked next-best actions for a channel.

priority = propensity x value x lever; offers over their contact cap are dropped;
a risk verdict of step_up or block suppresses sales offers (service messages stay);
when nothing is left the channel's fallback answers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from engine.decision import VERDICT_ORDER, Action, Risk
from engine.rules import Offer
from engine.scoring import Scores

_SUPPRESSED_KINDS = frozenset({"offer", "retention"})


def contact_counts(contacts: tuple[tuple[str, float], ...]) -> Counter[str]:
    """Impressions per action id in the contact history (members are decision|action|channel)."""
    return Counter(member.split("|")[1] for member, _ in contacts if member.count("|") == 2)


def arbitrate(
    eligible: tuple[Offer, ...],
    scores: Scores,
    risk: Risk,
    channel: str,
    contacts: tuple[tuple[str, float], ...],
    fallbacks: Mapping[str, Mapping[str, str]],
    max_actions: int,
) -> tuple[Action, ...]:
    shown = contact_counts(contacts)
    suppress = VERDICT_ORDER[risk.verdict] >= VERDICT_ORDER["step_up"]
    ranked: list[Action] = []
    for offer in eligible:
        if suppress and offer.kind in _SUPPRESSED_KINDS:
            continue
        if shown[offer.id] >= offer.max_per_7d:
            continue
        propensity = scores.offer.get(offer.id, 0.0)
        ranked.append(
            Action(
                id=offer.id,
                kind=offer.kind,
                score=propensity * offer.value * offer.lever,
                treatment={"channel": channel, "content": offer.treatments.get(channel, offer.name)},
                reasons=(f"eligible: {offer.name}", f"propensity {propensity:.3f} x value {offer.value:g}"),
            )
        )
    ranked.sort(key=lambda a: (-a.score, a.id))
    if ranked:
        return tuple(ranked[:max_actions])
    fallback = fallbacks.get(channel, {"id": f"{channel}_default", "text": ""})
    reason = "risk verdict suppresses offers" if suppress and eligible else "nothing eligible"
    return (
        Action(
            id=fallback["id"],
            kind="fallback",
            score=0.0,
            treatment={"channel": channel, "content": fallback.get("text", "")},
            reasons=(reason,),
        ),
    )
