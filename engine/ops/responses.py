"""How the demo's simulated customers answer the offers they are shown, and convert.

``react`` reads a ``decisions.audit`` record (what was shown, and which offers the
customer's control-group membership held back) and returns the customer's events:

- an ``offer_response`` to the top offer or message shown (accepted, declined, or no
  answer: ignored), with a taste per segment the offer model can learn;
- a ``conversion`` from the bank's core systems (a product opened) some minutes later,
  for the offers in :data:`PLANTED`: each customer converts at most once per offer, with
  the planted rate of the group the customer was in when first eligible: ``shown`` (the
  offer was shown) or ``control`` (held back: the control group). The uplift is planted
  on ``credit_card_gold`` (15% against 5%) and not on ``term_deposit_idle_balance``
  (6% either way), so the offers report has one to find and one not to.

Deterministic: the answer to a decision depends on the seed and the decision id only, and
whether a customer converts on the seed, the customer and the offer.

>>> r = Responses(seed=1, id_prefix="demo")
>>> rec = {"decision_id": "d1", "customer_id": "C000001", "channel": "mobile",
...        "event": {"type": "login"},
...        "actions": [{"id": "credit_card_gold", "kind": "offer"}], "explain": {"dropped": []}}
>>> [e["type"] for _, e in r.react(rec, {"segment": "affluent"}, 100.0)] in (
...     [], ["offer_response"], ["conversion"], ["offer_response", "conversion"])
True
>>> r.exposure[("C000001", "credit_card_gold")]
'shown'
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from engine.domain.policy import unit_hash

# offer id: (conversion rate when shown, conversion rate when held out in the control group)
PLANTED: dict[str, tuple[float, float]] = {
    "credit_card_gold": (0.15, 0.05),
    "term_deposit_idle_balance": (0.06, 0.06),
}
TASTE = {
    "young": ("savings_round_up", "mobile_app_adoption"),
    "affluent": ("mortgage_review", "credit_card_gold"),
    "private": ("term_deposit_idle_balance", "mortgage_review"),
    "mass": ("overdraft_protection", "bill_pay_autopay"),
}
CONVERSION_CHANNEL = "branch"  # the core systems report products opened; a configured channel
_NOT_OFFERS = frozenset({"fallback", "risk"})
_NOT_DECIDED = frozenset({"offer_response", "conversion", "fraud_report", "chargeback"})


class Responses:
    def __init__(
        self,
        seed: int = 0,
        id_prefix: str = "sim",
        planted: Mapping[str, tuple[float, float]] = PLANTED,
        delay_s: tuple[float, float] = (120.0, 1800.0),
    ) -> None:
        self.seed = seed
        self.id_prefix = id_prefix
        self.planted = dict(planted)
        self.delay_s = delay_s
        self.exposure: dict[tuple[str, str], str] = {}  # (customer, offer): shown | control
        self.converted: set[tuple[str, str]] = set()

    def react(
        self, record: Mapping[str, Any], profile: Mapping[str, Any], now: float
    ) -> list[tuple[float, dict[str, Any]]]:
        """(when, event) for what the customer does about this decision (maybe nothing)."""
        event = record.get("event") or {}
        if record.get("feedback") or event.get("type") in _NOT_DECIDED:
            return []
        cid, did = str(record["customer_id"]), str(record["decision_id"])
        rng = random.Random(f"{self.seed}:answer:{did}")
        out: list[tuple[float, dict[str, Any]]] = []
        actions = [a for a in record.get("actions") or [] if a.get("kind") not in _NOT_OFFERS]
        if actions:
            answer = self._answer(record, actions[0], profile, rng, now)
            if answer is not None:
                out.append((now + rng.uniform(2.0, 30.0), answer))
        shown = {a["id"] for a in actions}
        held = {d.get("id") for d in (record.get("explain") or {}).get("dropped") or []
                if d.get("stage") == "control_group"}  # fmt: skip
        for offer in self.planted:
            group = "shown" if offer in shown else "control" if offer in held else None
            if group is None or (cid, offer) in self.exposure:
                continue
            self.exposure[(cid, offer)] = group
            if self.converts(cid, offer, group):
                self.converted.add((cid, offer))
                out.append((now + rng.uniform(*self.delay_s), self._conversion(cid, offer, profile, rng)))
        return out

    def converts(self, customer_id: str, offer: str, group: str) -> bool:
        """Whether this customer, in this group, opens the offer's product (planted rate)."""
        shown_rate, control_rate = self.planted[offer]
        rate = shown_rate if group == "shown" else control_rate
        return unit_hash(f"{self.seed}:convert:{customer_id}:{offer}") < rate

    def _answer(self, record: Mapping[str, Any], top: Mapping[str, Any], profile: Mapping[str, Any],
                rng: random.Random, now: float) -> dict[str, Any] | None:  # fmt: skip
        liked = top["id"] in TASTE.get(str(profile.get("segment")), ())
        roll = rng.random()
        if roll < (0.5 if liked else 0.04):
            response = "accepted"
        elif roll < 0.7:
            response = "declined"
        else:
            return None  # ignored: no answer
        did = record["decision_id"]
        return {
            "event_id": f"resp-{did}",
            "customer_id": record["customer_id"],
            "channel": record["channel"],
            "type": "offer_response",
            "ts": now,
            "attributes": {"decision_id": did, "action_id": top["id"], "response": response},
        }

    def _conversion(
        self, cid: str, offer: str, profile: Mapping[str, Any], rng: random.Random
    ) -> dict[str, Any]:
        if offer == "term_deposit_idle_balance":  # the amount placed on deposit
            amount = round(float(profile.get("idle_balance") or 5000) * rng.uniform(0.5, 1.0), -2)
        else:  # the product's first-year value
            amount = 120.0
        return {
            "event_id": f"{self.id_prefix}-conv-{cid}-{offer}",
            "customer_id": cid,
            "channel": CONVERSION_CHANNEL,
            "type": "conversion",
            "ts": 0.0,  # set when sent
            "amount": amount,
            "currency": "EUR",
            "attributes": {"product": offer},
        }
