"""A realistic morning on the alert desk, for the console's browser test and its screenshot
(docs/console.png): alerts of the bank's rules over three hours, some already worked, a
few customers with earlier alerts, and each customer's recent interactions. Deterministic:
the same ``start_ms`` gives the same desk, byte for byte."""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from engine.store import keys
from engine.store.alerts import AlertDesk
from engine.store.layout import KeyLayout

# (rule, severity, typology, channel, reason template, condition values, evidence)
RULES: dict[str, tuple[str, str, str, str, dict[str, Any], dict[str, Any]]] = {
    "pin_bruteforce": (
        "high",
        "card_compromise",
        "atm",
        "3 PIN failures in the last hour (terminal {t})",
        {"event.type": "pin_failure", "state.pin_failures_1h": 3},
        {"distance_km": -1, "new_device": 0},
    ),
    "impossible_travel": (
        "critical",
        "card_compromise",
        "atm",
        "1742 km from the previous interaction, at 1306 km/h",
        {"state.distance_km": 1742.4, "state.speed_kmh": 1306.2},
        {"distance_km": 1742.4, "speed_kmh": 1306.2, "new_device": 0},
    ),
    "new_device_large_transfer": (
        "high",
        "account_takeover",
        "internet",
        "transfer of {a} from a device never seen before for this customer",
        {"event.type": "transfer", "state.new_device": 1, "event.amount": 4800.0},
        {"new_device": 1, "amt_30d_avg": 310.5},
    ),
    "password_reset_new_payee": (
        "high",
        "account_takeover",
        "mobile",
        "transfer of {a} to a new payee 412 s after a password reset",
        {"state.secs_since_password_reset": 412, "event.amount": 2950.0},
        {"new_device": 0, "secs_since_password_reset": 412},
    ),
    "structuring_below_threshold": (
        "high",
        "money_mule",
        "internet",
        "transfer of {a} just under the 10000 threshold; 28,700.00 of this type in 24 h",
        {"event.amount": 9800.0, "state.amt_24h_type": 28700.0},
        {"amt_24h_type": 28700.0},
    ),
    "rapid_outbound_transfers": (
        "medium",
        "money_mule",
        "mobile",
        "6 transfers totalling 5,400.00 in the last hour",
        {"state.n_1h_type": 6, "state.amt_1h_type": 5400.0},
        {"amt_1h_type": 5400.0},
    ),
    "withdrawal_above_baseline": (
        "medium",
        "cash_out",
        "atm",
        "withdrawal of {a} is 6.2x this customer's 30-day average withdrawal",
        {"event.amount": 500.0, "state.amount_ratio_30d": 6.2},
        {"amount_ratio_30d": 6.2},
    ),
    "night_cash_withdrawal": (
        "medium",
        "cash_out",
        "atm",
        "withdrawal of {a} between 23:00 and 05:00 in the customer's time zone (Europe/London)",
        {"event.amount": 400.0, "state.night": 1},
        {"night": 1},
    ),
    "complaint_spike_service_recovery": (
        "low",
        "",
        "call_centre",
        "3 complaints in 7 days: hand to the service-recovery team",
        {"state.complaints_7d": 3},
        {},
    ),
    "password_reset_new_device": (
        "medium",
        "account_takeover",
        "internet",
        "password reset from a device never seen before for this customer",
        {"event.type": "password_reset", "state.new_device": 1},
        {"new_device": 1},
    ),
}
# (minutes after start, customer, rule, amount): in the order they arrived.
TIMELINE = [
    (2, "C104233", "complaint_spike_service_recovery", None),
    (7, "C100871", "withdrawal_above_baseline", 500.0),
    (11, "C102390", "pin_bruteforce", None),
    (15, "C107712", "rapid_outbound_transfers", None),
    (19, "C100415", "night_cash_withdrawal", 400.0),
    (24, "C103001", "password_reset_new_device", None),
    (28, "C105566", "structuring_below_threshold", 9800.0),
    (33, "C101208", "withdrawal_above_baseline", 300.0),
    (37, "C102390", "impossible_travel", None),
    (41, "C108830", "new_device_large_transfer", 4800.0),
    (46, "C104402", "complaint_spike_service_recovery", None),
    (50, "C106019", "pin_bruteforce", None),
    (55, "C109911", "rapid_outbound_transfers", None),
    (59, "C100233", "password_reset_new_payee", 2950.0),
    (63, "C107004", "withdrawal_above_baseline", 450.0),
    (68, "C105566", "rapid_outbound_transfers", None),
    (72, "C103377", "night_cash_withdrawal", 260.0),
    (77, "C101950", "new_device_large_transfer", 7200.0),
    (81, "C108121", "pin_bruteforce", None),
    (86, "C102777", "structuring_below_threshold", 9900.0),
    (90, "C106650", "complaint_spike_service_recovery", None),
    (95, "C104233", "password_reset_new_device", None),
    (99, "C109300", "withdrawal_above_baseline", 600.0),
    (104, "C100871", "night_cash_withdrawal", 380.0),
    (108, "C107712", "structuring_below_threshold", 9750.0),
    (113, "C103950", "pin_bruteforce", None),
    (117, "C105101", "password_reset_new_payee", 3400.0),
    (122, "C108830", "impossible_travel", None),
    (126, "C101411", "rapid_outbound_transfers", None),
    (131, "C106019", "withdrawal_above_baseline", 520.0),
    (135, "C102255", "new_device_large_transfer", 5600.0),
    (140, "C109911", "structuring_below_threshold", 9600.0),
    (144, "C104870", "night_cash_withdrawal", 300.0),
    (149, "C100552", "pin_bruteforce", None),
    (153, "C107439", "impossible_travel", None),
    (158, "C103610", "password_reset_new_payee", 1800.0),
    (162, "C105930", "withdrawal_above_baseline", 700.0),
    (167, "C108464", "new_device_large_transfer", 6100.0),
]
# Worked already: (index in TIMELINE, moves as (action, who, assignee, disposition)).
WORKED = {
    0: [("ack", "sam", "", ""), ("resolve", "sam", "", "legitimate")],
    1: [("ack", "sam", "", "")],
    2: [("assign", "sam", "olive", ""), ("resolve", "olive", "", "fraud")],
    4: [("ack", "raj", "", "")],
    6: [("assign", "raj", "raj", "")],
    9: [("assign", "sam", "olive", "")],
    10: [("ack", "raj", "", ""), ("resolve", "raj", "", "needs_information")],
    12: [("ack", "sam", "", "")],
    16: [("assign", "raj", "olive", "")],
    20: [("escalate", "sla", "", "")],
}


def alert_record(n: int, start_ms: int) -> dict[str, Any]:
    minutes, customer, rule, amount = TIMELINE[n]
    severity, typology, channel, reason, values, evidence = RULES[rule]
    ts = (start_ms + minutes * 60_000) / 1000
    terminal = f"ATM-LDN-{100 + n:03d}"
    text = reason.format(t=terminal, a=f"{amount:,.2f}" if amount is not None else "")
    score = {"critical": 0.96, "high": 0.82, "medium": 0.58, "low": 0.21}[severity]
    verdict = {"critical": "block", "high": "step_up", "medium": "review", "low": "allow"}[severity]
    return {
        "alert_id": f"al-{start_ms // 1000}-{n:03d}", "rule_id": rule, "severity": severity, "reason": text,
        "action": verdict, "typologies": [typology] if typology else [], "customer_id": customer,
        "event_id": f"ev-{n:03d}", "decision_id": f"dc-{n:03d}", "channel": channel, "ts": ts,
        "currency": "GBP",
        "risk": {"score": score, "verdict": verdict, "reasons": [text],
                 "typologies": [{"id": typology, "score": score}] if typology else []},
        "versions": {"engine": "1.0", "rules": "risk-2026-12-01", "models": {"fraud": "fraud-4127"}},
        "conditions": {"rule": rule, "values": values}, "evidence": evidence,
    }  # fmt: skip


def interactions(n: int, start_ms: int) -> list[dict[str, Any]]:
    """What the customer did before the alert, oldest first."""
    minutes, _, rule, amount = TIMELINE[n]
    at = (start_ms + minutes * 60_000) / 1000
    channel = RULES[rule][2]
    kinds = {"atm": [("balance_inquiry", None), ("withdrawal", 60.0), ("pin_failure", None)],
             "internet": [("login", None), ("payee_added", None), ("transfer", amount or 250.0)],
             "mobile": [("login", None), ("password_reset", None), ("transfer", amount or 120.0)],
             "call_centre": [("complaint", None), ("complaint", None), ("complaint", None)]}  # fmt: skip
    out = []
    for i, (kind, value) in enumerate(kinds[channel]):
        summary: dict[str, Any] = {"event_id": f"ev-{n:03d}-{i}", "ts": at - (3 - i) * 540, "channel": channel,
                                   "type": kind}  # fmt: skip
        if value is not None:
            summary["amount"] = value
        if channel == "atm":
            summary["terminal_id"] = f"ATM-LDN-{100 + n:03d}"
        out.append(summary)
    return out


async def seed(client: aioredis.Redis, prefix: str, start_ms: int, retention_s: int) -> list[str]:
    """The desk of a busy morning from ``start_ms`` on; returns the alerts' ids, oldest first."""
    desk = AlertDesk(client, prefix, retention_s, group_window_s=3600, sla_s={})
    layout = KeyLayout.of(prefix, cluster=False, groups=1)
    ids = []
    for n in range(len(TIMELINE)):
        record = alert_record(n, start_ms)
        created = start_ms + TIMELINE[n][0] * 60_000
        alert_id, _ = await desk.raise_alert(record, created)
        ids.append(alert_id)
        recent = layout.customer(record["customer_id"]) + keys.EVENTS
        for summary in interactions(n, start_ms):
            await client.lpush(recent, orjson.dumps(summary))
        profile = {"segment": "mass", "timezone": "Europe/London", "tenure_months": 40 + n}
        await client.set(layout.customer(record["customer_id"]) + keys.PROFILE, orjson.dumps(profile))
    for n, moves in WORKED.items():
        at = start_ms + (TIMELINE[n][0] + 6) * 60_000
        for i, (action, who, assignee, disposition) in enumerate(moves):
            await desk.move(ids[n], action, who, at + i * 60_000, "", assignee, disposition)
    return ids
