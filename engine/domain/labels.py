"""Labels from interaction events: what the ``feedback`` topic carries.

Channels report outcomes as ordinary interaction events, so the public API is the only
way in: an ``offer_response`` (attributes ``decision_id``, ``action_id``, ``response``:
accepted, clicked or declined) labels an offer shown; a ``fraud_report`` or
``chargeback`` (attributes ``ref_event_id`` and ``ref_channel`` of the transaction, at any
delay) labels a transaction as fraud; an ``account_closure`` labels the customer's churn.
Risk officers' dispositions (the alert console) publish the same fraud records.

>>> from engine.domain.events import Event
>>> ev = Event("r1", "C1", "mobile", "offer_response", 100.0,
...            attributes={"decision_id": "d1", "action_id": "gold", "response": "accepted"})
>>> label = label_of(ev)
>>> label["kind"], label["decision_id"], label["action_id"], label["label"]
('offer', 'd1', 'gold', True)
>>> label_of(Event("x", "C1", "atm", "withdrawal", 1.0)) is None
True

A ``fraud_report`` with ``"legitimate": true`` (the JSON boolean) confirms instead that the
transaction was the customer's (a dispute resolved in their favour, a customer confirming
a held payment): label False. The trainer learns each transaction once per verdict: a
transaction with no report is provisionally legitimate after ``BEACON_FRAUD_MATURITY_S``,
so a confirmation of it changes nothing, while a fraud report turns it over, and a
confirmation turns over an earlier fraud label (engine/service/trainer.py).

>>> confirm = Event("r2", "C1", "mobile", "fraud_report", 200.0,
...                 attributes={"ref_event_id": "t9", "ref_channel": "atm", "legitimate": True})
>>> label_of(confirm)["label"], label_of(confirm)["event_id"]
(False, 't9')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.domain.events import Event

POSITIVE_RESPONSES = frozenset({"accepted", "clicked"})
FRAUD_TYPES = frozenset({"fraud_report", "chargeback"})
# Who says a transaction was fraud, strongest first: a risk officer's disposition of the
# alert, the card scheme's chargeback, the customer's own report. Only a stronger source
# changes a verdict the trainer holds (engine/store/lua/fraud_verdict.lua).
SOURCE_RANKS = {"disposition": 3, "chargeback": 2, "customer_report": 1}
_SOURCE_OF = {"chargeback": "chargeback", "fraud_report": "customer_report"}


def source_rank(label: Mapping[str, Any]) -> tuple[str, int]:
    """(source, rank) of a fraud label; a label without a known source ranks lowest.

    >>> source_rank({"source": "disposition"}), source_rank({})
    (('disposition', 3), ('customer_report', 1))
    """
    source = str(label.get("source") or "customer_report")
    return (source, SOURCE_RANKS[source]) if source in SOURCE_RANKS else ("customer_report", 1)


def label_of(event: Event) -> dict[str, Any] | None:
    """The feedback record an event carries, or None (most events carry none)."""
    a = event.attributes
    base = {"customer_id": event.customer_id, "ts": event.ts}
    if event.type == "offer_response":
        response, did, action = a.get("response"), a.get("decision_id"), a.get("action_id")
        if not (isinstance(response, str) and isinstance(did, str) and isinstance(action, str)):
            return None
        return {"kind": "offer", "decision_id": did, "action_id": action,
                "label": response in POSITIVE_RESPONSES, "response": response, **base}  # fmt: skip
    if event.type in FRAUD_TYPES:
        ref, channel = a.get("ref_event_id"), a.get("ref_channel")
        if not (isinstance(ref, str) and isinstance(channel, str)):
            return None
        legit = a.get("legitimate") is True  # a dispute resolved in the customer's favour
        # Who sent it (the source, the channel it came in on, the report's own id): the
        # trainer ranks verdicts by source and the label says where it came from.
        sender = {"source": _SOURCE_OF[event.type], "by": event.channel, "report_id": event.event_id}
        return {"kind": "fraud", "event_id": ref, "channel": channel, "label": not legit, **base, **sender}
    if event.type == "account_closure":
        return {"kind": "churn", "label": True, **base}
    return None


# Types that report an outcome (feedback) rather than something the customer does now.
# An account closure is not one, though it carries the churn label: it pays the balance
# out, so it is decided and screened like any money movement (an account taken over is
# emptied this way). The trainer does not learn from its decision (engine/service/trainer.py).
# A conversion (a product opened, reported by the bank's core systems) is an outcome too:
# offer reports read it from decisions.audit (engine/decide/offerreport.py); it carries
# no label for the models.
LABEL_TYPES = FRAUD_TYPES | {"offer_response", "conversion"}


def is_label_event(event: Event) -> bool:
    """Whether an event is feedback: answered and recorded, but not decided, scored or
    counted as activity (issue 15, item 5). By type: a malformed one (no feedback
    record) is not an interaction either.

    >>> [is_label_event(Event("r", "C1", "atm", t, 1.0)) for t in ("chargeback", "login")]
    [True, False]
    """
    return event.type in LABEL_TYPES
