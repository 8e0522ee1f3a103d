"""The wire forms of the state scripts: what they are sent and what they answer.

Ingest (engine/store/lua/ingest.lua) gets each event in a compact form
(:func:`ingest_payload`) and answers, per event, the facts, windows, profile and contact
history the decision needs, which :func:`snapshot_from_reply` turns into a
:class:`~engine.domain.state.Snapshot`. Each script gets the deployment's settings it
reads as its first argument (:func:`ingest_config`, :func:`commit_config`).

Commit (engine/store/lua/commit.lua) picks the actions under their contact-policy caps
and the alerts outside their suppression windows, then stores the channel's answer.
It builds that answer by splicing the picked JSON fragments into the body prepared
by :func:`commit_payload`, so what it stores for a repeated event is byte for byte what
the channel got; :func:`apply_commit` turns its reply into the decision as committed.

The reads of :meth:`engine.store.state.StateStore.customer_view` are decoded here too
(:func:`customer_view`, :func:`window_tallies`). Pure: no Redis calls here.

>>> snap = snapshot_from_reply({"windows": [], "contact": ["d1|gold|atm", "100.0"]}, "atm", "login")
>>> snap.contacts, snap.duplicate
((('d1|gold|atm', 100.0),), False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.domain.decision import Action, Decision
from engine.domain.events import Event, payload_digest
from engine.domain.labels import is_label_event, label_of
from engine.domain.state import CONTACT_WINDOW_S, MARKED, WINDOWS, Snapshot, Tally, to_cents
from engine.rules.ruleset import Dropped, Offer
from engine.settings import Settings
from engine.store import keys

_MARKS = (b'"\\u0000A\\u0000"', b'"\\u0000B\\u0000"')
# The audit record's holes, in the order they come in it: actions, alerts, kept, dropped,
# and the optional suppressed-alerts entry (a key of its own, comma included).
_AUDIT_MARKS = (*_MARKS, b'"\\u0000K\\u0000"', b'"\\u0000D\\u0000"', b',"\\u0000S\\u0000":0')
# The attributes of a label event its history entry keeps (engine.domain.labels).
_LABEL_FIELDS = ("decision_id", "action_id", "response", "ref_event_id", "ref_channel", "product")
PIN_BOUND = 50  # PIN failures kept per customer (24 h)
DECLINED_BOUND = 64  # declined offers kept per customer for cool-downs (ids come from channels)
DEVICE_CUSTOMERS_BOUND = 100  # customers kept per device (24 h)


def ingest_config(settings: Settings) -> bytes:
    """The ingest script's first argument: windows, channels, bounds, TTLs, the key prefix."""
    return orjson.dumps(
        {
            "windows": [[w.name, w.bucket_s, w.buckets] for w in WINDOWS],
            "channels": list(settings.channels),
            "state_ttl": settings.state_ttl_s,
            "dedupe_ttl": settings.dedupe_ttl_s,
            "profile_ttl": settings.profile_ttl_s,  # read by scripts before 2026-12-04 only
            "known_devices": settings.known_devices,
            "recent_events": settings.recent_events,
            "recent_pins": PIN_BOUND,
            "contact_window": CONTACT_WINDOW_S,
            "marked": list(MARKED),
            "key_prefix": settings.key_prefix,
            "device_customers": DEVICE_CUSTOMERS_BOUND,
            "declined_bound": DECLINED_BOUND,
        }
        # On a Redis Cluster the device's customers are counted beside the call.
        | ({"devices_apart": True} if settings.redis_cluster else {})
    )


def commit_config(settings: Settings, outbox: str = "", granted: Iterable[str] = ()) -> bytes:
    """The commit script's first argument: only what it reads (it decodes it every call).
    On a Redis Cluster: the group's outbox stream, and the daily-capped candidates granted
    an impression before the call (``<decision>|<offer>``): the day's counts are elsewhere."""
    config: dict[str, Any] = {
        "state_ttl": settings.state_ttl_s,
        "answer_ttl": min(settings.dedupe_answer_ttl_s, settings.dedupe_ttl_s),
        "recent_decisions": settings.recent_decisions,
        "contact_window": CONTACT_WINDOW_S,
        "contact_history": settings.contact_history,
        "open_alerts": settings.open_alerts,
        "key_prefix": settings.key_prefix,
        "outbox": outbox or keys.outbox(settings.key_prefix),
    }
    if outbox:  # a Redis Cluster's group
        config["granted"] = dict.fromkeys(granted, True)
    return orjson.dumps(config)


def ingest_payload(event: Event) -> bytes:
    """The compact form of an event the ingest script reads."""
    out: dict[str, Any] = {"id": event.event_id, "ch": event.channel, "ty": event.type}
    out["ts"] = event.ts
    if event.amount is not None:
        out["amt"] = to_cents(event.amount)
    if event.device_id:
        out["dev"] = event.device_id
    if event.terminal_id:
        out["term"] = event.terminal_id
    if event.geo is not None:
        out["lat"], out["lon"] = event.geo.lat, event.geo.lon
    if event.type == "offer_response":
        action, response = event.attributes.get("action_id"), event.attributes.get("response")
        if isinstance(action, str) and isinstance(response, str):
            out["act"], out["resp"] = action, response
    out["cid"] = event.customer_id
    if is_label_event(event):  # feedback: the script logs it, but updates no activity state
        out["fb"] = 1
    out["summary"] = orjson.dumps(event_summary(event)).decode()
    out["h"] = payload_digest(event)  # bound to the dedupe key: a repeat must carry the same
    return orjson.dumps(out)


def event_summary(event: Event) -> dict[str, Any]:
    """What the customer's recent-interactions list keeps of an event."""
    summary: dict[str, Any] = {
        "event_id": event.event_id,
        "ts": event.ts,
        "channel": event.channel,
        "type": event.type,
    }
    for name in ("amount", "device_id", "terminal_id"):
        value = getattr(event, name)
        if value is not None:
            summary[name] = value
    if is_label_event(event):  # what it reported: the history is where a label event shows
        for name in _LABEL_FIELDS:
            value = event.attributes.get(name)
            if isinstance(value, str):
                summary[name] = value
    return summary


def snapshot_from_reply(
    reply: dict[str, Any], channel: str, etype: str, event: Event | None = None
) -> Snapshot:
    """Turn one element of the ingest script's reply into a :class:`Snapshot`."""
    if reply.get("conflict"):  # a repeat with another payload: the script read nothing
        return Snapshot(windows={}, duplicate=True, conflict=True)
    if reply.get("late") and event is not None:  # a repeat whose answer is no longer kept
        return Snapshot(windows={}, duplicate=True, stored_decision=late_repeat_body(event, reply["late"]))
    duplicate = bool(reply.get("dup"))
    stored_decision: bytes | None = None
    facts: dict[str, Any] = reply.get("facts") or {}
    if duplicate:
        stored = orjson.loads(reply["stored"])
        if stored.get("pending"):
            facts = stored.get("facts") or {}  # first delivery never finished: redo
        else:
            stored_decision = reply["stored"].encode()
    profile_raw = reply.get("profile")
    contacts = reply.get("contact") or []
    return Snapshot(
        windows=_window_summary(reply.get("windows") or [], channel, etype),
        last=_as_map(facts.get("last")),
        device_known=facts.get("device_known"),
        devices=int(facts.get("devices") or 0),
        pin_failures_1h=int(reply.get("pin_recent") or 0),
        contacts=tuple((str(contacts[i]), float(contacts[i + 1])) for i in range(0, len(contacts), 2)),
        open_alerts=int(reply.get("open_alerts") or 0),
        profile=orjson.loads(profile_raw) if profile_raw else {},
        seen={str(k): float(v) for k, v in _as_map(facts.get("seen")).items()},
        device_customers_24h=int(reply.get("dev_customers") or 0),
        duplicate=duplicate,
        stored_decision=stored_decision,
    )


def late_repeat_body(event: Event, first_seen: float) -> bytes:
    """What a repeat gets once its answer has expired (``BEACON_DEDUPE_ANSWER_TTL_S``) but
    not its dedupe window (``BEACON_DEDUPE_TTL_S``): an acknowledgement that it is a repeat,
    nothing to show, nothing decided or counted again (its decision is in decisions.audit).

    >>> body = orjson.loads(late_repeat_body(Event("e1", "C1", "atm", "login", 1795428000.0), 1795428000))
    >>> body["replay"]["code"], body["actions"]
    ('answer_expired', [])
    """
    ev, first = event, datetime.fromtimestamp(float(first_seen), UTC).isoformat()
    replay = {"code": "answer_expired", "first_seen": first, "message": "a repeat of an event already"
              " decided; its answer is no longer kept (the decision is in decisions.audit)"}  # fmt: skip
    return orjson.dumps({"event_id": ev.event_id, "customer_id": ev.customer_id, "channel": ev.channel,
                         "actions": [], "alerts": [], "replay": replay})  # fmt: skip


def _as_map(value: Any) -> dict[str, str]:
    # cjson encodes an empty Lua table as {} but an empty HGETALL as []
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _window_summary(summary: list[Any], channel: str, etype: str) -> dict[str, dict[str, Tally]]:
    """The script's per-window numbers (see ``window_summary`` in ingest.lua) as tallies."""
    if not summary:
        return {}
    out: dict[str, dict[str, Tally]] = {}
    for w, (all_c, all_a, ch_c, ch_a, ty_c, ty_a) in zip(WINDOWS, summary, strict=False):
        out[w.name] = {
            "all": Tally(int(all_c), int(all_a)),
            "ch:" + channel: Tally(int(ch_c), int(ch_a)),
            "ty:" + etype: Tally(int(ty_c), int(ty_a)),
        }
    complaints = int(summary[len(WINDOWS)])
    if complaints and etype != "complaint":
        out["7d"]["ty:complaint"] = Tally(complaints, 0)
    return out


def window_tallies(pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, Tally]]:
    """Parse the totals hash (``<window>|<dim>|c|a`` fields) into tallies per window.

    The total over all events, ``all``, is the sum over channels: every event has
    exactly one channel, so the script need not store it.

    >>> w = window_tallies([("1h|ch:atm|c", "2"), ("1h|ch:atm|a", "500"), ("1h|ch:mobile|c", "1"),
    ...                     ("1h|_hi", "9"), ("1h|ty:login|c", "1")])
    >>> w["1h"]["all"], w["1h"]["ty:login"]
    (Tally(count=3, cents=500), Tally(count=1, cents=0))
    """
    raw: dict[str, dict[str, list[int]]] = {}
    for key, value in pairs:
        window, _, rest = key.partition("|")
        dim, _, kind = rest.rpartition("|")
        if not dim:
            continue  # window metadata (_hi, _lo)
        slot = raw.setdefault(window, {}).setdefault(dim, [0, 0])
        slot[0 if kind == "c" else 1] = int(value)
    out: dict[str, dict[str, Tally]] = {}
    for window, dims in raw.items():
        tallies = {dim: Tally(c, a) for dim, (c, a) in dims.items() if c or a}
        channels = [t for dim, t in tallies.items() if dim.startswith("ch:")]
        if channels:
            tallies["all"] = Tally(sum(t.count for t in channels), sum(t.cents for t in channels))
        out[window] = tallies
    return out


def commit_payload(decision: Decision, offers: Mapping[str, Offer], timings_ms: dict[str, float]) -> bytes:
    """One decision's argument to the commit script."""
    if decision.feedback:
        return _feedback_payload(decision, timings_ms)
    ev = decision.event
    view = decision.channel_view(timings_ms)
    view["actions"], view["alerts"] = "\x00A\x00", "\x00B\x00"
    head, mid, tail = _split(orjson.dumps(view), list(_MARKS))
    summary = orjson.dumps(decision.summary_head())
    fallback = fallback_of(decision)
    label = label_of(ev)
    return orjson.dumps(
        {
            "cust": ev.customer_id,
            "audit": [p.decode() for p in audit_parts(decision, view)],
            "label": orjson.dumps(label).decode() if label is not None else "",
            "dd": f"{ev.channel}:{ev.event_id}",
            "did": decision.decision_id,
            "ts": ev.ts,
            "ch": ev.channel,
            "day": datetime.fromtimestamp(ev.ts, UTC).strftime("%Y%m%d"),
            "max": decision.max_actions,
            "head": head.decode(),
            "mid": mid.decode(),
            "tail": tail.decode(),
            "sumhead": summary[:-1].decode() + ',"actions":[',
            "fallback": {
                "id": fallback.id,
                "frag": _json(fallback.to_dict()),
                "kept": _json(fallback.kept()),
            },
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


def _feedback_payload(decision: Decision, timings_ms: dict[str, float]) -> bytes:
    """A label event's argument to the commit script: its answer and audit record whole
    (nothing to pick, cap or raise), and its feedback record."""
    ev = decision.event
    label = label_of(ev)
    return orjson.dumps(
        {
            "fb": 1,
            "cust": ev.customer_id,
            "dd": f"{ev.channel}:{ev.event_id}",
            "body": decision.channel_bytes(timings_ms).decode(),
            "audit": decision.audit_bytes(timings_ms).decode(),
            "label": orjson.dumps(label).decode() if label is not None else "",
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
        "frag": _json(action.to_dict()),
        "kept": _json(action.kept()),
        "caps": caps,
        "cool": cool,
        "daily": daily,
    }


def fallback_of(decision: Decision) -> Action:
    """What the channel is shown when no candidate passes its caps."""
    ev = decision.event
    return decision.fallback or Action(f"{ev.channel}_default", "fallback", 0.0, {"channel": ev.channel})


def audit_parts(decision: Decision, view: dict[str, Any]) -> list[bytes]:
    """The decision's audit record (``decisions.audit``, as ``Decision.audit_bytes`` writes
    it) cut around what only the commit knows: the commit script fills in the actions
    shown, the alerts raised, the kept and dropped candidates and the suppressed alerts,
    and writes it to the outbox stream in the same step as the state. ``view`` is the
    channel view with its actions and alerts already holes (the body's own, reused); the
    last part is the candidates dropped before the commit (eligibility, risk...)."""
    explain = {"kept": "\x00K\x00", "dropped": "\x00D\x00", **decision.explanation, "\x00S\x00": 0}
    record = {**view, "explain": explain, "event": decision.audit_event(), "features": decision.features,
              "scores": decision.scores, "profile": decision.profile}  # fmt: skip
    parts = _split(orjson.dumps(record), list(_AUDIT_MARKS))
    prior = b",".join(orjson.dumps(d.to_dict()) for d in decision.dropped)
    return [*parts, prior]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def apply_commit(decision: Decision, reply: dict[str, Any]) -> tuple[Decision | None, bytes]:
    """The decision as committed (actions shown, alerts raised, caps explained) and its body;
    None and the stored body if an earlier send of the same call committed it already."""
    if reply.get("again"):
        return None, str(reply["body"]).encode()
    if decision.feedback:  # an acknowledgement: nothing was picked, capped or raised
        return decision, str(reply["body"]).encode()
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
        actions=shown or (fallback_of(decision),),
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
