"""Reading ``decisions.audit`` back for reports and backtests (issue 18): from a JSON Lines
export (:func:`read_audit_file`) or from the topic itself over a period
(:func:`read_audit`). Both yield each record as the decision wrote it (a dict).

From the topic: every partition is sought to the first record at or after ``since``
(``offsets_for_times``) and read up to the end offsets taken at the start (and the rest
of the batch holding the last), so a read ends even while workers keep deciding; records
stamped (broker time) before ``since`` or at or after ``until`` are skipped.
With record keys configured (``BEACON_RECORD_SIGNING_KEY`` / ``BEACON_RECORD_VERIFY_KEYS``)
each record's ``beacon-sig`` must verify, as the trainer checks it (agents/trainer.py):
an unsigned or forged record is skipped, logged and never reported on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.domain.recordsig import SIGNED_TOPICS, RecordSigner
from engine.errors import BeaconError
from engine.ops.kafkaauth import kafka_auth
from engine.settings import Settings

log = logging.getLogger(__name__)


class AuditReadError(BeaconError):
    """The audit could not be read (a bad export line, no such topic)."""


def read_audit_file(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines export of ``decisions.audit``, one object a line
    (blank lines skipped); a line that is not a JSON object is an error naming it."""
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise AuditReadError(f"{path}:{number}: not JSON: {exc}") from exc
            if not isinstance(record, dict):
                raise AuditReadError(f"{path}:{number}: not a JSON object")
            yield record


def audit_signer(settings: Settings) -> RecordSigner:
    """The verifier of signed records (as agents/bulk.py record_signer builds it)."""
    return RecordSigner(
        settings.record_signing_key,
        settings.record_key_id,
        settings.record_verify_keys,
        (settings.topic(t) for t in SIGNED_TOPICS),
    )


async def read_audit(settings: Settings, since: float, until: float | None) -> AsyncIterator[dict[str, Any]]:
    """The records of ``decisions.audit`` written from ``since`` (epoch seconds) to before
    ``until`` (None: up to the end offsets when the read starts), by broker timestamp."""
    topic = settings.topic("decisions.audit")
    signer = audit_signer(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        **kafka_auth(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    refused = 0
    try:
        await consumer.topics()  # fresh metadata
        ids = consumer.partitions_for_topic(topic)
        if not ids:
            raise AuditReadError(f"topic {topic} does not exist (or has no partitions)")
        tps = [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
        todo = {}
        for tp in tps:
            found = starts.get(tp)
            start = found.offset if found is not None else ends[tp]
            if start < ends[tp]:
                consumer.seek(tp, start)
                todo[tp] = ends[tp]
        since_ms, until_ms = int(since * 1000), None if until is None else int(until * 1000)
        while todo:
            # No max_records: whole fetched batches at once. A broker may place the end offset
            # at the last batch's start (the embedded one does): the rest of that batch comes
            # with it, rather than being cut off at the end offset.
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for records in batch.values():
                for r in records:
                    if r.timestamp < since_ms or (until_ms is not None and r.timestamp >= until_ms):
                        continue  # offsets_for_times may find the batch, not the record
                    reason = signer.refusal(r.topic, r.key, r.value, r.headers)
                    if reason is not None:
                        refused += 1
                        continue
                    value = orjson.loads(r.value)
                    if isinstance(value, dict):
                        yield value
            for tp in list(todo):
                if await consumer.position(tp) >= todo[tp]:
                    del todo[tp]
    finally:
        if refused:
            log.warning("skipped %d decisions.audit records not signed by a trusted producer", refused)
        await consumer.stop()
