"""The commit step's wire forms: what the commit script needs, and what it answers.

The script (engine/store/lua/commit.lua) picks the actions under their contact-policy caps
and the alerts outside their suppression windows, then stores the channel's answer.
It builds that answer by splicing the picked JSON fragments into the body prepared
here, so what it stores for a repeated event is byte for byte what the channel got.

"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.domain.decision import Action, Decision
from engine.rules.ruleset import Dropped, Offer

_MARKS = (b'"\\u0000A\\u0000"', b'"\\u0000B\\u0000"', b'"\\u0000C\\u0000"')


def payload(decision: Decision, offers: dict[str, Offer], timings_ms: dict[str, float]) -> bytes:
    """One decision's argument to the commit script."""
    ev = decision.event
    view = decision.channel_view(timings_ms)
    view["actions"], view["alerts"], view["dropped"] = "\x00A\x00", "\x00B\x00", "\x00C\x00"
    head, mid, mid2, tail = _split(orjson.dumps(view), list(_MARKS))
    summary = orjson.dumps(decision.summary_head())
    fallback = decision.fallback or Action(f"{ev.channel}_default", "fallback", 0.0, {"channel": ev.channel})
    return orjson.dumps(
        {
            "dd": f"{ev.channel}:{ev.event_id}",
            "did": decision.decision_id,
            "ts": ev.ts,
            "ch": ev.channel,
            "day": datetime.fromtimestamp(ev.ts, UTC).strftime("%Y%m%d"),
            "max": decision.max_actions,
            "head": head.decode(),
            "mid": mid.decode(),
            "mid2": mid2.decode(),
            "tail": tail.decode(),
            "dropped": ",".join(orjson.dumps(d.short()).decode() for d in decision.dropped),
            "sumhead": summary[:-1].decode() + ',"actions":[',
            "fallback": {"id": fallback.id, "frag": orjson.dumps(fallback.to_dict()).decode()},
            "cands": [_candidate(a, offers.get(a.id)) for a in decision.actions],
            "alerts": [
                {
                    "id": a.alert_id,
                    "rule": a.rule_id,
                    "frag": orjson.dumps(a.to_dict()).decode(),
                    "inbox": decision.alert_bytes(a).decode(),
                    "sup": a.suppress_s,
                }
                for a in decision.alerts
            ],
        }
    )


def _candidate(action: Action, offer: Offer | None) -> dict[str, Any]:
    caps: list[list[Any]] = []
    cool = daily = 0
    if offer is not None:
        policy = offer.contact
        for kind, cap in (
            ("offer", policy.per_offer),
            ("channel", policy.per_channel),
            ("overall", policy.overall),
        ):
            if cap is not None:
                caps.append([kind, cap.max, cap.window_s, cap.label])
        cool, daily = policy.decline_cooldown_s, policy.daily_cap
    return {
        "id": action.id,
        "frag": orjson.dumps(action.to_dict()).decode(),
        "caps": caps,
        "cool": cool,
        "daily": daily,
    }


def apply(decision: Decision, reply: dict[str, Any]) -> tuple[Decision, bytes]:
    """The decision as committed (actions shown, alerts raised, caps explained) and its body."""
    picked = [int(i) for i in _as_list(reply.get("picked"))]
    capped = {int(i): str(why) for i, why in _as_list(reply.get("capped"))}
    raised = {int(i) for i in _as_list(reply.get("alerts"))}
    shown = tuple(decision.actions[i] for i in picked)
    dropped = list(decision.dropped)
    for i, action in enumerate(decision.actions):
        if i in capped:
            dropped.append(Dropped(action.id, "contact_policy", capped[i]))
        elif i not in picked:
            dropped.append(Dropped(action.id, "rank", f"ranked below the top {decision.max_actions}"))
    suppressed = [a.rule_id for i, a in enumerate(decision.alerts) if i not in raised]
    explanation = dict(decision.explanation)
    if suppressed:
        explanation["suppressed_alerts"] = suppressed
    final = replace(
        decision,
        actions=shown or ((decision.fallback,) if decision.fallback else ()),
        alerts=tuple(a for i, a in enumerate(decision.alerts) if i in raised),
        dropped=tuple(dropped),
        explanation=explanation,
    )
    return final, str(reply["body"]).encode()


def _as_list(value: Any) -> list[Any]:
    # cjson encodes an empty Lua table as {}.
    return value if isinstance(value, list) else []


def _split(text: bytes, marks: list[bytes]) -> list[bytes]:
    parts: list[bytes] = []
    for mark in marks:
        before, found, text = text.partition(mark)
        if not found:
            raise ValueError(f"placeholder {mark!r} missing from the decision body")
        parts.append(before)
    return [*parts, text]
