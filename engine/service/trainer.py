"""The trainer: the one process that learns. Workers only score.

It reads ``decisions.audit`` (what each decision saw and showed) and ``feedback``
(labels), learns test-then-train, and publishes signed snapshots that every worker
installs within seconds, so learning never forks into divergent copies.

Label rules (times are stream time, the newest event time seen, so a replay of history
learns exactly as live traffic would):
- offers: an answer (accepted or clicked: positive; declined: negative) within
  ``offer_response_window_s`` of the decision; no answer by then counts as ignored
  (negative); a later acceptance is learned as a positive and counted as a correction.
- fraud: a fraud report or chargeback naming the transaction, at any delay while its
  inputs are kept (``feedback_ttl_s``); a transaction with no report after
  ``fraud_maturity_s`` (hours) is learned as legitimate, provisionally: a later report
  takes that back and learns the fraud (counted in ``corrections``). A report with
  ``legitimate: true`` confirms the transaction was the customer's: learned as
  legitimate unless it already was, or turning over a fraud label. Each transaction is
  learned once per verdict: a second report with the same verdict changes nothing.
- churn: an account closure, or no activity for ``churn_horizon_s`` after a decision
  (long dormancy), labels the customer's latest decision positive; a customer seen again
  at least a day but less than the horizon after their last churn label labels the
  previous decision negative (at most one churn label a day per customer).

What is kept for that (engine.store.keys.FeedbackKeys has the rule): the inputs of a
decision that showed an offer, is a monetary transaction or raised a risk alert, for
``feedback_ttl_s``; any other decision's only inside the customer's latest-decision
record, until the next decision replaces it (churn is the only label that can reach it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

from engine.domain.decision import decision_id_of, legacy_decision_id_of
from engine.domain.labels import source_rank
from engine.service.trainbatch import BatchLedger, Record, event_order
from engine.settings import Settings
from engine.store.base import FeedbackLedger
from engine.store.feedback import FeedbackStore
from models.learner import MONETARY_TYPES, Learner, inputs_of
from models.registry import shadows_of
from models.served import ServedQuality, decided_score
from models.trainer_metrics import TrainerMetrics

log = logging.getLogger("beacon.trainer")
CLOSURE = "account_closure"
_ORPHAN_RETRY_S = 600.0  # a label waits this long (stream time) for its decision record ...
_ORPHAN_WALL_S = 60.0  # ... and this long in real time: a fast replay runs hours of stream
# time in seconds, while the decision record is a broker linger or a spool retry behind.
_CHURN_LABEL_EVERY_S = 86400.0


class Trainer:
    def __init__(
        self, settings: Settings, learner: Learner, feedback: FeedbackLedger, snapshots: Any = None
    ) -> None:
        self.s = settings
        self.learner = learner
        self.fb = feedback
        self.snapshots = snapshots
        self.clock = 0.0  # stream time: the newest event time seen
        self.unmatched = 0  # labels that never found their decision
        self.unmatched_by: dict[tuple[str, str], int] = {}  # ... by (kind, reason): see _unmatched
        self._since_snapshot = dict.fromkeys(learner.models, 0)
        self._last_snapshot = time.monotonic()
        self.versions: dict[str, str] = {}
        self.metrics: TrainerMetrics | None = None  # when the trainer serves /metrics
        # The scores the channels got, joined with their labels (beacon models report).
        self.served = {name: ServedQuality() for name in learner.models}
        self.lag: dict[str, float] = {}  # labels and seconds behind, set by the stream loop
        self._summaries: dict[str, dict[str, Any]] = {}  # quality as of the last report

    async def on_audit(self, record: Mapping[str, Any]) -> None:
        if record.get("degraded"):
            # What the channel got without customer state (audited as such): the models
            # learn from the stateful decision of the same event, made once Redis is back.
            return
        if record.get("feedback") or (record.get("event") or {}).get("type") == CLOSURE:
            # A label event's acknowledgement (issue 15, item 5), or an account closure's
            # decision: the label comes on ``feedback`` (the closure's labels the customer's
            # decision before it); as a decision it would teach churn a "came back" negative,
            # and the closure would become the decision its own churn label lands on.
            return
        inputs = inputs_of(record, self.learner.specs)
        inputs["s"] = _decided_scores(record, inputs["shown"])
        self.learner.observe(inputs["f"], inputs["a"])
        self.clock = max(self.clock, inputs["ts"])
        did = str(record["decision_id"])
        labelled = await self._churn_on_return(inputs)
        deadline = inputs["ts"] + self.s.offer_response_window_s if inputs["shown"] else None
        maturity = inputs["ts"] + self.s.fraud_maturity_s if inputs["type"] in MONETARY_TYPES else None
        churn_due = inputs["ts"] + self.s.churn_horizon_s
        # Kept by id only if an offer answer, a fraud label or a disposition can reach it
        # (FeedbackKeys); otherwise only with the customer's latest decision, for churn.
        keep = deadline is not None or maturity is not None or bool(record.get("alerts"))
        await self.fb.remember(did, inputs, deadline, maturity, churn_due, labelled, keep)

    async def _churn_on_return(self, inputs: Mapping[str, Any]) -> float:
        """A returning customer did not churn after their previous decision (one label a
        day at most); returns when the customer's last churn label was learned."""
        prev = await self.fb.last_of(str(inputs["customer_id"]))
        if not prev:
            return 0.0
        last_label = float(prev.get("lab") or 0.0)
        gap = inputs["ts"] - float(prev["ts"])
        if gap < self.s.churn_horizon_s and inputs["ts"] - last_label >= _CHURN_LABEL_EVERY_S:
            await self._learn_latest(prev, False, gap)
            return float(inputs["ts"])
        return last_label

    async def _reported_decision(self, label: Mapping[str, Any]) -> str | None:
        """The id of the decision a fraud report refers to, if its inputs are remembered
        (under the id decisions had before 2026-12-03 if need be, for the feedback window)."""
        ref = (str(label["channel"]), str(label["event_id"]))
        for did in (decision_id_of(str(label["customer_id"]), *ref), legacy_decision_id_of(*ref)):
            if await self.fb.recall(did) is not None:
                return did
        return None

    async def on_label(self, label: Mapping[str, Any], retry: bool = False) -> None:
        self.clock = max(self.clock, float(label.get("ts") or 0.0))
        if not retry and not await self.fb.first_time(label):
            return  # redelivered: already learned
        kind = label.get("kind")
        if kind == "offer":
            await self._offer_label(label, retry)
        elif kind == "fraud":
            did = await self._reported_decision(label)
            if did is None:
                await self._park(label, retry)
                return
            await self._fraud_label(did, bool(label["label"]), label)
        elif kind == "churn":
            last = await self.fb.last_of(str(label["customer_id"]))
            if last is None:
                await self._park(label, retry)
                return
            await self.fb.resolve_churn(str(label["customer_id"]))  # closed: no dormancy label too
            await self._learn_latest(last, bool(label["label"]), None, label)

    async def _offer_label(self, label: Mapping[str, Any], retry: bool) -> None:
        did, action = str(label["decision_id"]), str(label["action_id"])
        inputs = await self.fb.recall(did)
        if inputs is not None and inputs.get("customer_id") not in (None, label.get("customer_id")):
            self._unmatched(label, "other_customer")  # a channel's mix-up: not this customer's answer
            return
        if inputs is None or action not in inputs["shown"]:
            await self._park(label, retry) if inputs is None else self._unmatched(label, "not_shown")
            return
        status = await self.fb.resolve_offer(did, action)
        if status == "ignored" and label["label"]:
            self.learner.corrections += 1
        delay = float(label.get("ts") or inputs["ts"]) - float(inputs["ts"])
        self._learn(inputs, "offers", bool(label["label"]), delay, offer=action)

    async def _fraud_label(self, did: str, fraud: bool, label: Mapping[str, Any]) -> None:
        """Learn a fraud verdict once per transaction; only from the decision's customer,
        and only a stronger source than the one that gave the standing verdict turns it
        over (engine.domain.labels.SOURCE_RANKS)."""
        source, rank = source_rank(label)
        inputs = await self.fb.recall(did)
        if inputs is None or inputs.get("customer_id") not in (None, label.get("customer_id")):
            reason = "unknown_decision" if inputs is None else "other_customer"
            self._fraud_counted(source, reason)
            self._unmatched(label, reason)
            return
        before = await self.fb.resolve_fraud(did, fraud, rank)
        if before == "settled" and inputs["type"] in MONETARY_TYPES:
            before = "legitimate"  # matured: learned as a provisional negative
        if before in ("outranked", "contested") or before == ("fraud" if fraud else "legitimate"):
            # learned so already (a second report, a confirmed provisional negative), or
            # the standing verdict came from a stronger or equal source: not learned again
            self._fraud_counted(source, "repeat" if before not in ("outranked", "contested") else before)
            return
        if before not in ("fraud", "legitimate"):  # pending, or an event that never matures
            self._fraud_counted(source, "learned")
            await self._learn_stored("fraud", did, fraud, None, label)
            return
        self._fraud_counted(source, "corrected")
        self.learner.fraud_corrections += 1  # learned the other way: turn it over
        delay = float(label.get("ts") or inputs["ts"]) - float(inputs["ts"])
        self.learner.correct("fraud", inputs["f"], inputs["a"], fraud, delay)
        decided = inputs.get("s") or {}
        for model in ("fraud", *shadows_of("fraud")):
            p = decided_score(decided, model)
            if p is not None and model in self.served:
                self.served[model].correct(fraud, p, delay, float(inputs["ts"]))

    def _fraud_counted(self, source: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.fraud_labels.labels(source, outcome).inc()

    async def sweep(self) -> None:
        """Pending offers past their window are ignored; transactions past maturity are
        legitimate; parked labels are retried."""
        for member in await self.fb.due("offer", self.clock):
            did, _, action = member.rpartition("|")
            inputs = await self.fb.recall(did)
            if inputs is not None:
                self._learn(inputs, "offers", False, self.s.offer_response_window_s, offer=action)
        for did in await self.fb.due("fraud", self.clock):
            await self._learn_stored("fraud", did, False, self.s.fraud_maturity_s)
        for customer in await self.fb.due("churn", self.clock):  # dormant for the horizon
            last = await self.fb.last_of(customer)
            if last is not None:
                await self._learn_latest(last, True, self.s.churn_horizon_s)
        for label in await self.fb.orphans():
            await self.on_label(label, retry=True)

    async def on_batch(self, records: Sequence[Record]) -> None:
        """Learn one consumed batch of ("audit" | "label", record): in event-time order
        (``trainbatch.event_order``), Redis read ahead and written back in bulk, every due
        label swept page by page until none is due, and a model published as soon as it
        is ``snapshot_every_labels`` labels ahead of its snapshot (after any record, and
        before any sweep page), so the scoring model is at most that plus one sweep page
        (``snapshot_every_labels // 4``) behind the trainer."""
        store = self.fb
        if not isinstance(store, FeedbackStore):  # a test double: one record at a time
            for kind, body in event_order(records):
                await (self.on_audit(body) if kind == "audit" else self.on_label(body))
            await self.sweep()
            return
        ordered = event_order(records)
        ledger = BatchLedger(store, self.s.snapshot_every_labels // 4, self._publish_full)
        self.fb = cast(FeedbackLedger, ledger)
        try:
            await ledger.load(ordered)
            for kind, body in ordered:
                await (self.on_audit(body) if kind == "audit" else self.on_label(body))
                await self._publish_full()
            while True:  # complete: matured and ignored labels, a page at a time
                ledger.full = False
                await self.sweep()
                if not ledger.full:
                    break
            await self._publish_full()
            await ledger.flush()
        finally:
            self.fb = store

    async def _publish_full(self) -> None:
        every = self.s.snapshot_every_labels
        if self.snapshots is not None and any(
            self.snapshot_gap(name) >= every for name in self.learner.models
        ):
            await self._publish(False)

    async def maybe_snapshot(self, force: bool = False) -> None:
        due = force or time.monotonic() - self._last_snapshot >= self.s.snapshot_interval_s
        report = self.report() if due else {}
        await self._publish(due)
        if due:
            self._last_snapshot = time.monotonic()
            await self.fb.save_quality(report)
            if self.metrics is not None:
                for name in self.learner.models:
                    self.metrics.quality.update(name, report[name])
                self.metrics.labels_waiting.set(await self.fb.waiting())

    async def _publish(self, due: bool) -> None:
        """Publish every model with labels learned since its snapshot if ``due``, else
        those ``snapshot_every_labels`` or more labels ahead of their snapshot."""
        for name, model in self.learner.models.items():
            fresh = self.learner.learned[name] - self._since_snapshot[name]
            if self.snapshots is not None and fresh and (due or fresh >= self.s.snapshot_every_labels):
                # Quality as of the last report (every snapshot_interval_s): a summary
                # sorts its window (~20 ms), too dear for every snapshot_every_labels.
                quality = self._summaries.get(name) or self._summaries.setdefault(
                    name, self.learner.quality[name].summary()
                )
                meta = {"labels": self.learner.learned[name], "quality": quality}
                # parent: the version this model grew from. If another trainer published
                # meanwhile, the publish is refused (SnapshotConflict) instead of forking.
                self.versions[name] = await self.snapshots.publish(
                    name, model, meta, parent=self.versions.get(name)
                )
                self._since_snapshot[name] = self.learner.learned[name]
                if self.metrics is not None:
                    self.metrics.published(name, self.versions[name], time.time())
                log.info("published %s (%d labels)", self.versions[name], self.learner.learned[name])
        if self.metrics is not None:
            for name in self.learner.models:
                self.metrics.snapshot_gap.labels(name).set(self.snapshot_gap(name))

    def snapshot_gap(self, name: str) -> int:
        """Labels the model learned since its last published snapshot."""
        return self.learner.learned[name] - self._since_snapshot[name]

    def report(self) -> dict[str, Any]:
        """Per model: the current model's progressive quality, and under ``served`` the
        quality of the scores the channels got; under ``_trainer``, the trainer's lag."""
        out: dict[str, Any] = {}
        for name, q in self.learner.quality.items():
            self._summaries[name] = q.summary()
            out[name] = {**self._summaries[name], "version": self.versions.get(name, f"{name}-fresh")}
            out[name]["served"] = self.served[name].summary()
        out["offers"]["corrections"] = self.learner.corrections
        out["fraud"]["corrections"] = self.learner.fraud_corrections
        gap = max((self.snapshot_gap(n) for n in self.learner.models), default=0)
        out["_trainer"] = {**self.lag, "snapshot_gap": gap}
        return out

    async def _learn_stored(
        self, name: str, did: str, label: bool, delay: float | None, source: Mapping[str, Any] | None = None
    ) -> None:
        inputs = await self.fb.recall(did)
        if inputs is None:
            self._unmatched(source or {"decision_id": did})
            return
        if delay is None and source is not None:
            delay = float(source.get("ts") or inputs["ts"]) - float(inputs["ts"])
        self._learn(inputs, name, label, delay)

    async def _learn_latest(
        self,
        last: Mapping[str, Any],
        label: bool,
        delay: float | None,
        source: Mapping[str, Any] | None = None,
    ) -> None:
        """Learn churn on a customer's latest decision (``last``): its inputs are in the
        record itself when no other label could reach it (FeedbackKeys), else kept by id."""
        if "x" not in last:
            await self._learn_stored("churn", str(last["d"]), label, delay, source)
            return
        inputs = last["x"]
        if delay is None and source is not None:
            delay = float(source.get("ts") or inputs["ts"]) - float(inputs["ts"])
        self._learn(inputs, "churn", label, delay)

    def _learn(
        self, inputs: Mapping[str, Any], name: str, label: bool, delay: float | None, offer: str | None = None
    ) -> None:
        self.learner.learn(name, inputs["f"], inputs["a"], label, delay, offer)
        decided = inputs.get("s")
        if decided is not None:  # decisions remembered before the trainer kept scores: none
            for model in (name, *shadows_of(name)):
                p = decided_score(decided, model, offer)
                if p is not None and model in self.served:
                    self.served[model].record(label, p, delay, float(inputs["ts"]))

    async def _park(self, label: Mapping[str, Any], retry: bool) -> None:
        parked_at = float(label.get("_parked", self.clock)) if retry else self.clock
        wall = float(label.get("_parked_wall", time.time())) if retry else time.time()
        if self.clock - parked_at >= _ORPHAN_RETRY_S and time.time() - wall >= _ORPHAN_WALL_S:
            self._unmatched(label)  # waited 10 minutes of stream time and a minute: not coming
        else:
            await self.fb.park({**label, "_parked_wall": wall}, parked_at)

    def _unmatched(self, label: Mapping[str, Any], reason: str = "unknown_decision") -> None:
        """A label dropped: ``not_shown`` (an offer response naming an offer its decision did
        not show), ``other_customer`` (naming another customer's decision) or
        ``unknown_decision`` (never seen, or its inputs expired, which the trainer cannot
        tell apart). Counted in ``unmatched_by`` for a metric to export."""
        self.unmatched += 1
        key = (str(label.get("kind") or "unknown"), reason)
        self.unmatched_by[key] = self.unmatched_by.get(key, 0) + 1
        if self.metrics is not None:
            self.metrics.labels_dropped.labels(*key).inc()
        what = {k: label.get(k) for k in ("kind", "decision_id", "event_id")}
        log.warning(
            "label dropped, %s (inputs of offers shown, transactions and alerted events are kept %ss): %s",
            reason,
            self.s.feedback_ttl_s,
            what,
        )


async def build_trainer(settings: Settings, client: Any) -> Trainer:
    """The trainer with its stores, warm-started from the latest published snapshots."""
    from engine.store.snapshots import SnapshotStore
    from models.featureconfig import input_mismatch, load_feature_config
    from models.registry import REGISTRY, build, spec_for

    snapshots = SnapshotStore(client, settings)
    specs = load_feature_config(settings.model_features)
    models = {name: build(name, specs) for name in REGISTRY}
    versions: dict[str, str] = {}
    for name in REGISTRY:  # warm start: carry on from the latest published snapshot
        latest = await snapshots.latest(name)
        if latest is None:
            continue
        versions[name] = latest[0]  # the parent of what this trainer publishes next
        mismatch = input_mismatch(latest[1], spec_for(name, specs))
        if mismatch is None:
            models[name] = latest[1]
            log.info("warm start from %s", versions[name])
        else:
            log.warning("%s: not warm-started from %s: %s; learning afresh", name, versions[name], mismatch)
    learner = Learner(models, {name: spec_for(name, specs) for name in REGISTRY})
    trainer = Trainer(
        settings, learner, FeedbackStore(client, settings.key_prefix, settings.feedback_ttl_s), snapshots
    )
    trainer.versions.update(versions)
    return trainer


def _decided_scores(record: Mapping[str, Any], shown: Sequence[str]) -> dict[str, Any]:
    """The scores a decision's channel got, as the trainer keeps them with its inputs:
    fraud, churn, challengers' (``shadow``), and the propensity of each offer shown."""
    scores = record.get("scores") or {}
    out: dict[str, Any] = {
        k: v for k, v in scores.items() if k in ("fraud", "churn") and isinstance(v, int | float)
    }
    offers = scores.get("offer") or {}
    out["offer"] = {a: offers[a] for a in shown if a in offers}
    out.update({k: v for k, v in (scores.get("shadow") or {}).items() if isinstance(v, int | float)})
    return out
