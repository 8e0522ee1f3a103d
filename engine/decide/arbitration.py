"""Arbitration: from eligible offers to the ranked candidates for a channel.

priority = propensity x value x levers x context weight (per channel and action kind,
from the offers pack's ``arbitration:`` section, with exploration and a control group).
A risk verdict of step_up or block suppresses sales offers (service messages stay).
Contact-policy caps are applied afterwards, in the commit step, atomically with the
impression counters (engine/store/lua/commit.lua): it walks this ranking and shows the first
``max_actions`` that are under their caps, or the channel's fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.domain.decision import VERDICT_ORDER, Action, Risk
from engine.domain.policy import ArbitrationPolicy, in_control_group, unit_hash
from engine.domain.scoring import Scores
from engine.rules.ruleset import Dropped, Offer

_SUPPRESSED_KINDS = frozenset({"offer", "retention"})


def arbitrate(
    eligible: tuple[Offer, ...],
    scores: Scores,
    risk: Risk,
    channel: str,
    policy: ArbitrationPolicy | None = None,
    decision_id: str = "",
    customer_id: str = "",
) -> tuple[tuple[Action, ...], tuple[Dropped, ...], dict[str, Any]]:
    """Rank the eligible offers by propensity x value x levers x context weight; drop sales
    offers under risk and for the control group; explore with the policy's epsilon.

    Returns the ranking, what was dropped, and what arbitration did (explored, control
    group, and each action's probability of being ranked first, for offline evaluation)."""
    policy = policy or ArbitrationPolicy()
    suppress = VERDICT_ORDER[risk.verdict] >= VERDICT_ORDER["step_up"]
    control = in_control_group(customer_id, policy.control_group)
    ranked: list[Action] = []
    dropped: list[Dropped] = []
    for offer in eligible:
        if suppress and offer.kind in _SUPPRESSED_KINDS:
            why = f"risk verdict {risk.verdict}: " + ("; ".join(risk.reasons) or "risk")
            dropped.append(Dropped(offer.id, "risk", why))
            continue
        if control and offer.kind in _SUPPRESSED_KINDS:
            dropped.append(
                Dropped(offer.id, "control_group", "customer is in the control group (no sales offers)")
            )
            continue
        propensity = scores.offer.get(offer.id, 0.0)
        weight = policy.weight(offer.kind)
        ranked.append(
            Action(
                id=offer.id,
                kind=offer.kind,
                score=propensity * offer.value * offer.lever * weight,
                treatment={"channel": channel, "content": offer.treatments.get(channel, offer.name)},
                reasons=(f"eligible: {offer.name}",
                         f"propensity {propensity:.3f} x value {offer.value:g} x levers {offer.lever:g}"
                         f" x weight {weight:g}"),
            )
        )  # fmt: skip
    ranked.sort(key=lambda a: (-a.score, a.id))
    explored = (
        bool(ranked) and policy.exploration > 0 and unit_hash("explore:" + decision_id) < policy.exploration
    )
    greedy = ranked[0].id if ranked else None
    if explored:
        ranked.sort(key=lambda a: unit_hash(f"{decision_id}:{a.id}"))
    n = len(ranked)
    eps = policy.exploration
    first = {a.id: round((1 - eps) * (a.id == greedy) + eps / n, 6) for a in ranked} if n else {}
    record = {"explored": explored, "control": control, "epsilon": eps, "p_first": first}
    return tuple(ranked), tuple(dropped), record


def fallback_action(fallbacks: Mapping[str, Mapping[str, str]], channel: str) -> Action:
    fallback = fallbacks.get(channel, {"id": f"{channel}_default", "text": ""})
    return Action(
        id=fallback["id"],
        kind="fallback",
        score=0.0,
        treatment={"channel": channel, "content": fallback.get("text", "")},
        reasons=("no eligible offer left for this channel",),
    )


def shown_when_nothing_else(rules: Any, channel: str, verdict: str) -> Action:
    """What the channel shows when no offer or message is left: for a step_up or block
    verdict the channel's risk treatment from the rule pack (``risk_treatments``: decline
    and retain the card at an ATM, a one-time passcode in mobile banking), so the answer
    never thanks a customer for banking with us while it blocks them; else the fallback."""
    treatment = (rules.risk_treatments.get(channel) or {}).get(verdict)
    if treatment is None:
        return fallback_action(rules.fallbacks, channel)
    return Action(
        id=treatment["id"],
        kind="risk",
        score=0.0,
        treatment={"channel": channel, "content": treatment.get("text", ""), "verdict": verdict},
        reasons=(f"risk verdict {verdict}",),
    )


def without_caps(actions: tuple[Action, ...], fallback: Action, max_actions: int) -> tuple[Action, ...]:
    """What would be shown if no contact-policy cap applied (rule tests, previews)."""
    return actions[:max_actions] or (fallback,)
