"""Customers answering offers, as channels report it: ``offer_response`` events.

When a decision shows an offer, the channel later reports what the customer did with it.
The load generator does the same for a share of the decisions it receives: a little
later (a random delay), it sends an ``offer_response`` naming the decision and the
action, accepted or declined (the shape ``engine/domain/labels.py`` reads; ``engine/cli/demo.py``
does the same for the demo).

The schedule stays open loop: an answer does not add a send, it takes the next slot of
the fixed schedule once its delay has passed (the generated event of that slot is left
out). So the arrival rate is exactly the one asked for, and answers make up whatever
share of the traffic the decisions produce.

>>> r = Responder(share=1.0, accept=1.0, delay_s=(0.5, 0.5), seed=1, id_prefix="t")
>>> decision = {"decision_id": "d1", "customer_id": "C1", "channel": "mobile",
...             "actions": [{"id": "gold_card", "kind": "offer"}]}
>>> r.seen(decision, at=10.0)
>>> r.take(now=10.2, ts=1795428000.0) is None  # not yet: the customer is still reading
True
>>> ev = r.take(now=10.6, ts=1795428000.0)
>>> ev["type"], ev["attributes"], ev["event_id"]
('offer_response', {'decision_id': 'd1', 'action_id': 'gold_card', 'response': 'accepted'}, 't-r000000001')
>>> r.seen({**decision, "actions": [{"id": "fallback", "kind": "fallback"}]}, at=11.0)
>>> r.take(now=99.0, ts=1.0) is None  # nothing was shown, nothing to answer
True
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

ANSWERED_KINDS = frozenset({"offer", "retention"})  # what a customer can take up


@dataclass
class Responder:
    share: float = 0.3  # of the decisions that show an offer, the share answered
    accept: float = 0.2  # of those answers, the share accepted (the rest declined)
    delay_s: tuple[float, float] = (0.2, 2.0)  # when the answer comes, after the decision
    seed: int = 5
    id_prefix: str = "resp"
    shown: int = 0  # decisions seen that showed an offer
    sent: int = 0  # answers handed out by take()
    _due: list[tuple[float, int, dict[str, Any]]] = field(init=False)
    _rng: random.Random = field(init=False)
    _n: int = field(init=False)  # answers queued so far (their ids)

    def __post_init__(self) -> None:
        self._due, self._rng, self._n = [], random.Random(self.seed), 0

    def seen(self, decision: Mapping[str, Any], at: float) -> None:
        """A decision arrived at ``at`` (the client's clock): maybe answer its top offer."""
        offer = _top_offer(decision)
        if offer is None:
            return
        self.shown += 1
        if self._rng.random() >= self.share:
            return  # ignored: the label rules count it as such after the response window
        response = "accepted" if self._rng.random() < self.accept else "declined"
        attributes = {"decision_id": decision.get("decision_id"), "action_id": offer, "response": response}
        answer = {
            "customer_id": decision.get("customer_id"),
            "channel": decision.get("channel"),
            "type": "offer_response",
            "attributes": attributes,
        }
        due = at + self._rng.uniform(*self.delay_s)
        self._n += 1
        heapq.heappush(self._due, (due, self._n, answer))

    def take(self, now: float, ts: float) -> dict[str, Any] | None:
        """The answer whose delay has passed (oldest first), stamped ``ts``, or None."""
        if not self._due or self._due[0][0] > now:
            return None
        _, n, answer = heapq.heappop(self._due)
        self.sent += 1
        return {"event_id": f"{self.id_prefix}-r{n:09d}", **answer, "ts": ts}

    @property
    def pending(self) -> int:
        return len(self._due)

    def fork(self, k: int) -> Responder:
        """A fresh responder like this one for generator process ``k`` (own ids and dice).

        >>> Responder(seed=1, id_prefix="x").fork(2).id_prefix
        'x-p2'
        """
        return replace(self, seed=self.seed * 1000 + k, id_prefix=f"{self.id_prefix}-p{k}", shown=0, sent=0)


def _top_offer(decision: Mapping[str, Any]) -> str | None:
    """Id of the first action a customer could take up, or None."""
    for action in decision.get("actions") or ():
        if isinstance(action, Mapping) and action.get("kind") in ANSWERED_KINDS:
            return str(action.get("id"))
    return None
