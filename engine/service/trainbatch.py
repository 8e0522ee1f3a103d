"""The trainer's batches: learning order, and the feedback store as one batch sees it.

Learning a record used to cost two to four Redis round trips (remember, recall,
first_time, last_of, resolve_offer): at ~2,000 records/s in-process the trainer spent
four fifths of its time in redis-py. ``BatchLedger`` reads what a consumed batch needs
in two pipelined round trips, serves the trainer's reads from memory while it learns,
queues its writes, and writes them back in one. It offers the trainer the same calls as
``engine.store.feedback.FeedbackStore``; a call it does not keep in memory (a fraud or
churn resolution, parking a label, a sweep's page) writes back what is queued first and
goes to Redis, so the store never sees writes out of order.

The learning order within a batch is event time, a decision before the labels of the
same instant (``event_order``), so replaying the same batches learns the same way.

>>> records = [("label", {"ts": 5.0, "kind": "offer"}), ("audit", {"event": {"ts": 5.0}}),
...            ("audit", {"event": {"ts": 2.0}})]
>>> [(kind, event_ts(kind, body)) for kind, body in event_order(records)]
[('audit', 2.0), ('audit', 5.0), ('label', 5.0)]
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

from engine.domain.decision import decision_id_of, legacy_decision_id_of
from engine.store.feedback import FeedbackStore, Remembered, latest

Record = tuple[str, Mapping[str, Any]]  # ("audit" | "label", decoded record)


def event_ts(kind: str, body: Mapping[str, Any]) -> float:
    if kind == "audit":
        return float((body.get("event") or {}).get("ts") or 0.0)
    return float(body.get("ts") or 0.0)


def event_order(records: Iterable[Record]) -> list[Record]:
    """By event time, decisions before labels at the same time; arrival order breaks ties
    (the sort is stable), so a decision and its labels keep their order on a partition."""
    return sorted(records, key=lambda r: (event_ts(*r), r[0] != "audit"))


class BatchLedger:
    """The feedback store for one batch: reads from memory, writes queued (see above).

    ``page`` bounds each sweep page (``due``, ``orphans``): the trainer checks its snapshot
    cadence before each page (``before_page``), so a sweep of many matured labels cannot
    carry the scoring model more than a page past ``snapshot_every_labels``. ``full``
    says a page came back full: more may be due.
    """

    def __init__(
        self, store: FeedbackStore, page: int, before_page: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self.store = store
        self.page = max(1, page)
        self.before_page = before_page
        self.full = False
        self._inputs: dict[str, dict[str, Any] | None] = {}
        self._last: dict[str, dict[str, Any] | None] = {}
        self._offers: dict[str, str] = {}  # decision_id|action -> pending | ignored | unknown
        self._fresh: dict[int, bool] = {}  # id(label) -> first_time, read ahead
        self._remembered: list[Remembered] = []
        self._answered: list[str] = []
        self._corrected: list[str] = []
        self._retried: set[bytes] = set()  # parked labels taken in this batch
        self._seen: list[str] = []  # digests of labels learned, to mark

    # -- read ahead -------------------------------------------------------------------

    async def load(self, records: Sequence[Record]) -> None:
        """What ``records`` will read: customers' latest decisions, the decisions labels
        name, offer states, label dedupe (two round trips and a pipelined SET NX)."""
        audits = [b for k, b in records if k == "audit"]
        labels = [b for k, b in records if k == "label"]
        customers = [str(b["customer_id"]) for b in audits if b.get("customer_id") is not None]
        await self._load_for(labels, customers)
        # Read now, marked when written back: a batch that fails half way marks none of
        # its labels learned, so its redelivery learns them (at least once).
        fresh = await self.store.unseen_many(labels)
        self._fresh.update(zip((id(label) for label in labels), fresh, strict=True))

    async def _load_for(self, labels: Sequence[Mapping[str, Any]], customers: list[str]) -> None:
        """What learning ``labels`` reads, and the latest decisions of ``customers``."""
        customers = customers + [str(b["customer_id"]) for b in labels if b.get("customer_id") is not None]
        dids: list[str] = []
        members: list[str] = []
        for label in labels:
            kind = label.get("kind")
            if kind == "offer" and "decision_id" in label:
                dids.append(str(label["decision_id"]))
                members.append(f"{label['decision_id']}|{label.get('action_id')}")
            elif kind == "fraud" and "event_id" in label and "channel" in label:
                ref = (str(label["channel"]), str(label["event_id"]))
                dids += [decision_id_of(str(label.get("customer_id")), *ref), legacy_decision_id_of(*ref)]
        self._last.update(await self.store.last_of_many([c for c in customers if c not in self._last]))
        dids += [str(last["d"]) for last in self._last.values() if last and "x" not in last]
        await self._load_inputs(dids)
        self._offers.update(await self.store.offer_states([m for m in members if m not in self._offers]))

    async def _load_inputs(self, dids: list[str]) -> None:
        missing = [d for d in dids if d not in self._inputs]
        if missing:
            self._inputs.update(await self.store.recall_many(missing))

    # -- the trainer's calls ----------------------------------------------------------

    async def remember(
        self,
        decision_id: str,
        inputs: Mapping[str, Any],
        offer_deadline: float | None,
        fraud_maturity: float | None,
        churn_due: float = float("inf"),
        churn_labelled: float = 0.0,
        keep: bool = True,
    ) -> None:
        self._inputs[decision_id] = dict(inputs) if keep else None
        self._last[str(inputs["customer_id"])] = latest(decision_id, inputs, churn_labelled, keep)
        if offer_deadline is not None:
            self._offers.update({f"{decision_id}|{a}": "pending" for a in inputs["shown"]})
        self._remembered.append(
            (decision_id, inputs, offer_deadline, fraud_maturity, churn_due, churn_labelled, keep)
        )

    async def recall(self, decision_id: str) -> dict[str, Any] | None:
        if decision_id not in self._inputs:
            await self.flush()
            self._inputs[decision_id] = await self.store.recall(decision_id)
        return self._inputs[decision_id]

    async def last_of(self, customer_id: str) -> dict[str, Any] | None:
        if customer_id not in self._last:
            await self.flush()
            self._last[customer_id] = await self.store.last_of(customer_id)
        return self._last[customer_id]

    async def first_time(self, label: Mapping[str, Any]) -> bool:
        fresh = self._fresh.pop(id(label), None)
        if fresh is None:
            return await self.store.first_time(label)
        if fresh:
            self._seen.append(self.store.digest(label))
        return fresh

    async def resolve_offer(self, decision_id: str, action: str) -> str:
        member = f"{decision_id}|{action}"
        state = self._offers.get(member)
        if state is None:
            await self.flush()
            return await self.store.resolve_offer(decision_id, action)
        self._offers[member] = "unknown"  # resolved: a second answer finds nothing
        if state == "pending":
            self._answered.append(member)
        elif state == "ignored":
            self._corrected.append(member)
        return state

    async def due(self, kind: str, now: float, limit: int = 500) -> list[str]:
        if self.before_page is not None:
            await self.before_page()
        await self.flush()
        limit = min(limit, self.page)
        members = await self.store.due(kind, now, limit)
        self.full = self.full or len(members) >= limit
        if kind == "offer":
            self._offers.update(dict.fromkeys(members, "ignored"))  # due() marks them ignored
            await self._load_inputs([m.rpartition("|")[0] for m in members])
        elif kind == "churn":
            self._last.update(await self.store.last_of_many([m for m in members if m not in self._last]))
            await self._load_inputs(
                [str(last["d"]) for m in members if (last := self._last.get(m)) and "x" not in last]
            )
        else:
            await self._load_inputs(members)
        return members

    async def orphans(self, limit: int = 500) -> list[dict[str, Any]]:
        """A page of parked labels; ``full`` if it is full of labels not retried yet in
        this batch (one that waits still is parked again, and comes back)."""
        if self.before_page is not None:
            await self.before_page()
        await self.flush()
        limit = min(limit, self.page)
        labels = await self.store.orphans(limit)
        keys = {orjson.dumps(label, option=orjson.OPT_SORT_KEYS) for label in labels}
        self.full = self.full or (len(labels) >= limit and not keys & self._retried)
        self._retried |= keys
        await self._load_for(labels, [])
        return labels

    async def flush(self) -> None:
        """Write back what is queued, in the order it was queued (one round trip)."""
        if self._remembered or self._answered or self._corrected or self._seen:
            queued = self._remembered, self._answered, self._corrected, self._seen
            self._remembered, self._answered, self._corrected, self._seen = [], [], [], []
            await self.store.write_many(*queued)

    def __getattr__(self, name: str) -> Any:
        """Any other call of the store (resolve_fraud, park, waiting...): queued writes
        first, then the store itself. A call not known to leave decisions' inputs, latest
        decisions and offer states alone (one added to the store later) also drops what
        this batch holds of them, so it is read again rather than served stale."""
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        async def after_flush(*args: Any, **kwargs: Any) -> Any:
            await self.flush()
            result = await attr(*args, **kwargs)
            if name not in _LEAVES_INPUTS:
                self._inputs.clear()
                self._last.clear()
                self._offers.clear()
            return result

        return after_flush


# Store calls that write no decision inputs, latest decision or offer state.
_LEAVES_INPUTS = frozenset(
    {"resolve_fraud", "resolve_churn", "park", "waiting", "save_quality", "load_quality"}
)
