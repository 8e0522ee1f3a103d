"""Redis adapter of the trainer: decision-time inputs, pending labels, label dedupe.

Keys: :class:`engine.store.keys.FeedbackKeys` (the trainer is their only writer; its
docstring has the rule for which decisions' inputs are kept, and for how long).

Inputs records and customers' latest decisions are stored compressed (:func:`pack`): raw
deflate with a preset dictionary of the models' feature names, ~220 bytes for a record
of ~770 bytes of JSON. Records written before as plain JSON are still read.

>>> record = {"f": {"n_30d": 4, "segment": "mass", "secs_since_login": 3600.0, "n_1h": 2,
...        "amount_ratio_30d": 1.25, "kyc_risk": "low", "home_distance_km": -1.0},
...        "a": {}, "ts": 1795758102.624213, "type": "transfer", "customer_id": "C000299",
...        "shown": ["gold"]}
>>> packed = pack(record)
>>> packed[:1], len(packed) < len(orjson.dumps(record)), unpack(packed) == record
(b'\\x01', True, True)
>>> unpack(orjson.dumps(record)) == record, pack({"d": "d1", "ts": 1.5}) == b'{"d":"d1","ts":1.5}'
(True, True)
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine.errors import StoreError
from engine.store.keys import FeedbackKeys
from engine.store.redisio import guarded

_ORPHANS_BOUND = 10_000
# The arguments of one ``remember`` call: decision id, inputs, offer deadline, fraud
# maturity, churn due, churn labelled, keep.
Remembered = tuple[str, Mapping[str, Any], float | None, float | None, float, float, bool]

# Format 1 of a packed record: b"\x01" + raw deflate (level 6, 2 KB window) of its JSON,
# with this preset dictionary: the built-in models' feature names and the record's own
# keys, as orjson writes them. Never edit it: records written with it live for
# feedback_ttl_s. A new dictionary is a new format byte (and this one kept for reading).
_ZDICT_1 = (
    b'{"f":{"age_band":0,"amount_ratio_30d":0,"amt_30d":0,"channel":0,"channel_switch":0,'
    b'"complaints_7d":0,"contacts_7d":0,"device_customers_24h":0,"home_distance_km":0,"hour":0,'
    b'"income_band":0,"known_devices":0,"kyc_risk":0,"log_amount":0,"n_10m":0,"n_10m_type":0,'
    b'"n_1h":0,"n_30d":0,"n_30d_channel":0,"n_7d":0,"new_device":0,"night":0,"pin_failures_1h":0,'
    b'"seconds_since_last":0,"secs_since_login":0,"secs_since_new_device":0,'
    b'"secs_since_password_reset":0,"segment":0,"speed_kmh":0,"terminal_changed":0,"type":0,'
    b'"weekday":0},"a":{},"ts":0,"type":"","customer_id":"","shown":[],'
    b'"s":{"fraud":0,"churn":0,"offer":{}}}'
)
_FORMAT_1 = b"\x01"
_PACK_ABOVE = 160  # bytes of JSON


def pack(record: Mapping[str, Any]) -> bytes:
    """A record as stored: see the module's docstring (~10 us more than orjson alone).
    A small one (a latest-decision record without inputs) stays JSON: too small to pay."""
    raw = orjson.dumps(record)
    if len(raw) < _PACK_ABOVE:
        return raw
    z = zlib.compressobj(6, zlib.DEFLATED, -11, 8, zdict=_ZDICT_1)
    return _FORMAT_1 + z.compress(raw) + z.flush()


def unpack(raw: bytes) -> Any:
    """A stored record: packed, or plain JSON (written before records were packed)."""
    if raw[:1] == _FORMAT_1:
        z = zlib.decompressobj(-11, zdict=_ZDICT_1)
        return orjson.loads(z.decompress(raw[1:]) + z.flush())
    return orjson.loads(raw)


def latest(decision_id: str, inputs: Mapping[str, Any], churn_labelled: float, keep: bool) -> dict[str, Any]:
    """A customer's latest decision as ``last:<customer>`` keeps it: its id, time, when the
    customer's churn was last labelled, and its inputs (``x``) when they are not kept under
    ``x:<decision>`` (only churn can reach them, and only while it is the latest)."""
    out = {"d": decision_id, "ts": inputs["ts"], "lab": churn_labelled}
    if not keep:
        out["x"] = dict(inputs)
    return out


class FeedbackStore:
    def __init__(self, client: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self._r = client
        self.keys = FeedbackKeys.of(prefix)
        self._ttl = ttl_s
        lua = resources.files("engine.store").joinpath("lua", "fraud_verdict.lua")
        self._verdict = client.register_script(lua.read_text())

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
        """Remember a decision: its inputs under ``x:<decision>`` if ``keep`` (a label other
        than churn can reach it: FeedbackKeys), else only inside the customer's ``last``
        record; the customer's latest decision; its pending labels."""
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                if keep:
                    pipe.set(self.keys.inputs(decision_id), pack(inputs), ex=self._ttl)
                pipe.set(
                    self.keys.last(inputs["customer_id"]),
                    pack(latest(decision_id, inputs, churn_labelled, keep)),
                    ex=self._ttl,
                )
                # Dormancy watch: if this stays the customer's latest decision past the
                # horizon, the customer went dormant (a churn positive).
                pipe.zadd(self.keys.pending("churn"), {str(inputs["customer_id"]): churn_due})
                if offer_deadline is not None:
                    pipe.zadd(
                        self.keys.pending("offer"),
                        {f"{decision_id}|{a}": offer_deadline for a in inputs["shown"]},
                    )
                if fraud_maturity is not None:
                    pipe.zadd(self.keys.pending("fraud"), {decision_id: fraud_maturity})
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"feedback store: {exc}") from exc

    async def recall(self, decision_id: str) -> dict[str, Any] | None:
        raw = await self._call(self._r.get(self.keys.inputs(decision_id)))
        return unpack(raw) if raw else None

    async def last_of(self, customer_id: str) -> dict[str, Any] | None:
        raw = await self._call(self._r.get(self.keys.last(customer_id)))
        return unpack(raw) if raw else None

    async def first_time(self, label: Mapping[str, Any]) -> bool:
        """True once per distinct label (Kafka redelivers; a label is learned once)."""
        digest = hashlib.blake2s(orjson.dumps(label, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()
        return bool(await self._call(self._r.set(self.keys.seen(digest), 1, nx=True, ex=self._ttl)))

    async def resolve_offer(self, decision_id: str, action: str) -> str:
        """'pending' (answered in time), 'ignored' (already counted as ignored: a late
        answer corrects it), or 'unknown' (not shown, or expired)."""
        member = f"{decision_id}|{action}"
        removed = await self._call(self._r.zrem(self.keys.pending("offer"), member))
        if removed:
            return "pending"
        if await self._call(self._r.delete(self.keys.ignored(member))):
            return "ignored"
        return "unknown"

    async def resolve_churn(self, customer_id: str) -> None:
        await self._call(self._r.zrem(self.keys.pending("churn"), customer_id))

    async def resolve_fraud(self, decision_id: str, fraud: bool, rank: int = 1) -> str:
        """Record the transaction's verdict (``fraud`` or legitimate) from a source of
        ``rank`` (engine.domain.labels.SOURCE_RANKS); returns how it stood: 'pending' (not
        learned yet), 'fraud' or 'legitimate' (a verdict was learned), or 'settled': no longer
        pending and no verdict, which for a monetary transaction means it matured as
        legitimate (the sweep is the only other way out of the pending set), and for other
        events that it never was pending. 'outranked' or 'contested': a stronger source, or
        an equal one, gave the other verdict, which stands (nothing written).

        So the store remembers which transactions matured as negatives without a key per
        transaction: only reported ones get one (``FeedbackKeys.fraud``), in one Lua step."""
        keys = [self.keys.pending("fraud"), self.keys.fraud(decision_id)]
        state, before = await self._call(
            self._verdict(keys=keys, args=[decision_id, int(fraud), max(1, rank), self._ttl])
        )
        state = state.decode() if isinstance(state, bytes) else str(state)
        if state == "was":
            return "fraud" if before in (b"1", "1") else "legitimate"
        return state

    async def due(self, kind: str, now: float, limit: int = 500) -> list[str]:
        """Pending items past their time, removed from the pending set (one trainer); an
        offer is marked ignored, so a late answer corrects it (a transaction needs no mark:
        see :meth:`resolve_fraud`)."""
        key = self.keys.pending(kind)
        members = await self._call(self._r.zrangebyscore(key, "-inf", now, start=0, num=limit))
        if members:
            await self._call(self._r.zrem(key, *members))
            if kind == "offer":
                async with self._r.pipeline(transaction=False) as pipe:
                    for m in members:
                        pipe.set(self.keys.ignored(m.decode()), 1, ex=self._ttl)
                    await pipe.execute()
        return [m.decode() for m in members]

    async def park(self, label: Mapping[str, Any], parked_at: float) -> None:
        """Keep a label whose decision is not known yet (the audit and feedback topics race);
        the trainer retries it at every sweep until it has waited long enough."""
        key = self.keys.orphans
        await self._call(self._r.zadd(key, {orjson.dumps({**label, "_parked": parked_at}): parked_at}))
        await self._call(self._r.zremrangebyrank(key, 0, -(_ORPHANS_BOUND + 1)))

    async def waiting(self) -> int:
        """How many labels are parked."""
        return int(await self._call(self._r.zcard(self.keys.orphans)))

    async def orphans(self, limit: int = 500) -> list[dict[str, Any]]:
        """Parked labels, oldest first, taken out (the trainer parks again what still waits)."""
        key = self.keys.orphans
        raw = await self._call(self._r.zrange(key, 0, limit - 1))
        if raw:
            await self._call(self._r.zrem(key, *raw))
        return [orjson.loads(r) for r in raw]

    async def save_quality(self, summaries: Mapping[str, Any]) -> None:
        """The trainer's progressive metrics, for ``beacon models report``."""
        if summaries:
            await self._call(
                self._r.hset(self.keys.quality, mapping={k: orjson.dumps(v) for k, v in summaries.items()})
            )

    async def load_quality(self) -> dict[str, Any]:
        raw = await self._call(self._r.hgetall(self.keys.quality))
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    async def _call(self, awaitable: Any) -> Any:
        return await guarded("feedback store", awaitable)

    # -- bulk: the trainer's batches (one round trip for many records) ---------------------
    # The trainer learns a consumed batch through engine.service.trainbatch.BatchLedger,
    # which reads what the batch needs with these, keeps it in memory while it learns, and
    # writes back once. Each writes exactly what its one-record counterpart above writes
    # (tests/integration/test_trainer_batch.py compares them key by key).

    async def recall_many(self, decision_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """``recall`` of each id (None: not kept)."""
        ids = list(dict.fromkeys(decision_ids))
        raw = await self._call(self._r.mget([self.keys.inputs(d) for d in ids])) if ids else []
        return {d: unpack(r) if r else None for d, r in zip(ids, raw, strict=True)}

    async def last_of_many(self, customer_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """``last_of`` of each customer."""
        ids = list(dict.fromkeys(customer_ids))
        raw = await self._call(self._r.mget([self.keys.last(c) for c in ids])) if ids else []
        return {c: unpack(r) if r else None for c, r in zip(ids, raw, strict=True)}

    def digest(self, label: Mapping[str, Any]) -> str:
        """What ``first_time`` keys a label by."""
        return hashlib.blake2s(orjson.dumps(label, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()

    async def unseen_many(self, labels: list[Mapping[str, Any]]) -> list[bool]:
        """For each label, in order, whether ``first_time`` would say True, without
        marking it (``write_many(seen=...)`` marks): a label repeated in the list is
        new once."""
        digests = [self.digest(label) for label in labels]
        distinct = list(dict.fromkeys(digests))
        raw = await self._call(self._r.mget([self.keys.seen(d) for d in distinct])) if distinct else []
        fresh = {d: r is None for d, r in zip(distinct, raw, strict=True)}
        out = []
        for d in digests:
            out.append(fresh[d])
            fresh[d] = False
        return out

    async def offer_states(self, members: list[str]) -> dict[str, str]:
        """What ``resolve_offer`` would answer for each ``decision_id|action``, without
        resolving: 'pending', 'ignored' or 'unknown'."""
        ids = list(dict.fromkeys(members))
        if not ids:
            return {}
        pending = self.keys.pending("offer")
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.zmscore(pending, ids)
                pipe.mget([self.keys.ignored(m) for m in ids])
                scores, ignored = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"feedback store: {exc}") from exc
        states = {}
        for m, score, late in zip(ids, scores, ignored, strict=True):
            states[m] = "pending" if score is not None else "ignored" if late else "unknown"
        return states

    async def write_many(
        self,
        remembered: Sequence[Remembered],
        answered: Sequence[str] = (),
        corrected: Sequence[str] = (),
        seen: Sequence[str] = (),
    ) -> None:
        """``remember`` of each (decision_id, inputs, offer_deadline, fraud_maturity,
        churn_due, churn_labelled, keep) in order, then ``resolve_offer`` of offers answered in
        time (``answered``) and of late answers to offers counted as ignored (``corrected``),
        and marks labels learned (``seen``: their ``digest``), all in one round trip."""
        if not (remembered or answered or corrected or seen):
            return
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                # Redis ends as after one remember() each, in fewer commands: the
                # customer's latest decision and its churn watch are last-wins, so one
                # write per customer and one ZADD per pending set carry the batch.
                last: dict[str, Mapping[str, Any]] = {}
                churn: dict[str, float] = {}
                offers: dict[str, float] = {}
                fraud: dict[str, float] = {}
                for did, inputs, offer_deadline, fraud_maturity, churn_due, labelled, keep in remembered:
                    if keep:
                        pipe.set(self.keys.inputs(did), pack(inputs), ex=self._ttl)
                    customer = str(inputs["customer_id"])
                    last[customer] = latest(did, inputs, labelled, keep)  # packed once: the last
                    churn[customer] = churn_due
                    if offer_deadline is not None:
                        offers.update({f"{did}|{a}": offer_deadline for a in inputs["shown"]})
                    if fraud_maturity is not None:
                        fraud[did] = fraud_maturity
                for customer, value in last.items():
                    pipe.set(self.keys.last(customer), pack(value), ex=self._ttl)
                for kind, members in (("churn", churn), ("offer", offers), ("fraud", fraud)):
                    if members:
                        pipe.zadd(self.keys.pending(kind), members)
                if answered:
                    pipe.zrem(self.keys.pending("offer"), *answered)
                for member in corrected:
                    pipe.delete(self.keys.ignored(member))
                for digest in seen:
                    pipe.set(self.keys.seen(digest), 1, ex=self._ttl)
                await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"feedback store: {exc}") from exc
