"""``beacon backtest``: the I/O around the pure backtest (engine/decide/backtest.py).

Reads the audit records of a period (``decisions.audit``, or a JSON Lines file of its
records), the fraud labels known so far (the ``feedback`` topic: customers' reports,
chargebacks and risk officers' dispositions; for a file, the label events in it), builds
the candidate (a folder of rule packs, compiled and dry-run as a worker loads them, and
model snapshot versions verified as a worker verifies them) and writes the report:
``backtest.json``, ``backtest.md`` and ``backtest.png``.

Records are put in one order (event time, channel, event id, customer) and a record
delivered twice is counted once, so the report does not depend on the order the topic's
partitions were read in.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from engine.decide.backtest import Candidate, Redecided, fraud_labels, labels_in, redecide, skip_reason
from engine.decide.backtestsum import markdown, summarize
from engine.decide.pipeline import DecisionPolicy
from engine.decide.rulebook import load
from engine.errors import BeaconError
from engine.rules.pack import bundle_digest, read_bundle
from engine.settings import Settings

JSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2
YIELD_EVERY = 200  # records between yields to the event loop (a worker decides beside it)


@dataclass(frozen=True)
class Request:
    rules_dir: Path | None  # None: the candidate's rules come from elsewhere (a shadow version)
    since: float
    until: float | None = None
    models: tuple[str, ...] = ()  # snapshot versions, e.g. fraud-v12-0123456789ab
    file: Path | None = None  # else the decisions.audit topic
    channels: tuple[str, ...] = ()  # only these channels' events (all when empty)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def candidate_rules(settings: Settings, rules_dir: Path) -> tuple[Any, str]:
    """The candidate's rules, loaded as a worker loads a version, named by their digest."""
    files = read_bundle(rules_dir)
    version = f"candidate-{bundle_digest(files)}"
    return load(files, frozenset(settings.channels), version, settings.event_types).rules, version


def decision_policy(settings: Settings) -> DecisionPolicy:
    """The thresholds and action count a worker decides with."""
    return DecisionPolicy(settings.risk_step_up, settings.risk_block, settings.max_actions)


async def build_candidate(settings: Settings, request: Request) -> Candidate:
    """The rules of ``request.rules_dir`` and the models of ``request.models``, loaded
    from the snapshot store and verified (needs Redis and ``BEACON_SIGNING_PUBLIC_KEYS``,
    as a worker does). To try models alone, pass the live rules' folder."""
    if request.rules_dir is None:
        raise BeaconError("a backtest needs the candidate's rules: --rules DIR")
    rules, _ = candidate_rules(settings, request.rules_dir)
    policy = decision_policy(settings)
    if not request.models:
        return Candidate(rules, policy)
    if not settings.redis_url:
        raise BeaconError("--models reads model snapshots from Redis: set BEACON_REDIS_URL or --redis-url")
    from engine.store.redisio import connect
    from engine.store.snapshots import SnapshotStore
    from models.featureconfig import load_feature_config
    from models.scorer import ModelScorer
    from models.signing import SnapshotVersion

    scorer = ModelScorer(load_feature_config(settings.model_features))
    names = []
    client = connect(settings)
    try:
        store = SnapshotStore(client, settings)
        for version in request.models:
            name = SnapshotVersion.parse(version).name
            scorer.install(name, version, await store.load(name, version))
            names.append(name)
    finally:
        await client.aclose()
    return Candidate(rules, policy, scorer, frozenset(names))


def in_period(record: Mapping[str, Any], since: float, until: float | None) -> bool:
    event = record.get("event")
    ts = event.get("ts") if isinstance(event, dict) else None
    if not isinstance(ts, int | float):
        return False
    return since <= ts and (until is None or ts < until)


class Backtest:
    """Records in one at a time (a month of them need not fit in memory, only one small
    row per event), then :meth:`report`. A record delivered twice counts once: both
    copies decide the same, so which one is kept does not matter."""

    def __init__(self, candidate: Candidate, request: Request) -> None:
        self.candidate = candidate
        self.request = request
        self.rows: list[Redecided] = []
        self.labels: list[dict[str, Any]] = []
        self.skipped: Counter[str] = Counter()
        self.decided_with: Counter[str] = Counter()
        self._seen: set[tuple[str, str, str]] = set()

    def add(self, record: Mapping[str, Any]) -> None:
        if "decision_id" not in record and isinstance(record.get("value"), dict):
            record = record["value"]  # a consumed message {key, headers, value}, as exported
        self.labels += labels_in((record,))  # a label event outside the period labels one inside
        if not in_period(record, self.request.since, self.request.until):
            self.skipped["outside_period"] += 1
            return
        if self.request.channels and record.get("channel") not in self.request.channels:
            self.skipped["other_channel"] += 1
            return
        key = (str(record.get("customer_id")), str(record.get("channel")), str(record.get("event_id")))
        if key in self._seen:
            self.skipped["duplicate"] += 1
            return
        self._seen.add(key)
        why = skip_reason(record)
        if why is not None:
            self.skipped[why] += 1
            return
        self.rows.append(redecide(record, self.candidate))
        self.decided_with[str((record.get("versions") or {}).get("rules"))] += 1

    def report(self, labels: Iterable[Mapping[str, Any]], sources: Mapping[str, str]) -> dict[str, Any]:
        """The summary; ``labels``: fraud labels known besides the label events read."""
        request, candidate = self.request, self.candidate
        verdicts = fraud_labels([*self.labels, *labels])
        scorer = candidate.scorer
        models = {
            k: v for k, v in sorted((scorer.versions if scorer else {}).items()) if k in candidate.rescored
        }
        meta = {
            "period": {
                "since": iso(request.since),
                "until": iso(request.until) if request.until else "the end",
            },
            "channels": list(request.channels) or "all",
            "candidate": {"rules": candidate.rules.version, "models": models or "as recorded"},
            "decided_with": {"rules": dict(sorted(self.decided_with.items()))},
            **sources,
        }
        return summarize(self.rows, verdicts, dict(self.skipped), meta)


def backtest(
    records: Iterable[Mapping[str, Any]],
    labels: Iterable[Mapping[str, Any]],
    candidate: Candidate,
    request: Request,
    sources: Mapping[str, str],
) -> dict[str, Any]:
    """Decide every record of the period again and summarise (:class:`Backtest`)."""
    acc = Backtest(candidate, request)
    for record in records:
        acc.add(record)
    return acc.report(labels, sources)


async def run(settings: Settings, request: Request) -> dict[str, Any]:
    """Read, decide again, summarise: the report as a dict (see :func:`write`)."""
    candidate = await build_candidate(settings, request)
    if request.file is not None:
        from engine.service.auditlog import read_audit_file

        sources = {"audit": request.file.name, "labels": "label events in the file"}
        try:
            return backtest(read_audit_file(request.file), (), candidate, request, sources)
        except OSError as exc:
            raise BeaconError(f"cannot read {request.file}: {exc}") from exc
    if not settings.kafka_bootstrap:
        raise BeaconError("reading decisions.audit needs BEACON_KAFKA_BOOTSTRAP (or --kafka); or pass --file")
    return await backtest_topics(settings, candidate, request)


async def backtest_topics(settings: Settings, candidate: Candidate, request: Request) -> dict[str, Any]:
    """The backtest of ``candidate`` over ``decisions.audit`` and the ``feedback`` topic
    (``request.file`` is not read). It yields to the event loop every ``YIELD_EVERY``
    records and summarises in a thread, so a worker can run it beside its decisions
    (``GET /v1/reports/backtest``); raises BrokerError when the broker is away."""
    from engine.service.auditlog import read_audit
    from engine.service.topicread import read_topic

    # Decided in the period means recorded at or after its start; later records are read
    # to the end and kept by their event's time (a decision is recorded after its event).
    acc = Backtest(candidate, request)
    n = 0
    async for record in read_audit(settings, request.since, None):
        acc.add(record)
        n += 1
        if n % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    labels = []
    async for label in read_topic(settings, "feedback", request.since, None):
        labels.append(label)
        if len(labels) % YIELD_EVERY == 0:
            await asyncio.sleep(0)
    sources = {"audit": "decisions.audit", "labels": "feedback topic and label events"}
    return await asyncio.to_thread(acc.report, labels, sources)


def report_bytes(report: Mapping[str, Any], fmt: str) -> bytes:
    if fmt == "json":
        return orjson.dumps(report, option=JSON_OPTIONS) + b"\n"
    return markdown(report).encode() + b"\n"


def write(report: Mapping[str, Any], out: Path, formats: Sequence[str] = ("json", "md", "png")) -> list[str]:
    """Write the report's files into ``out``; returns what was written, and why the
    picture was not (matplotlib missing) as a line starting with ``no ``."""
    from engine.service.backtestplot import plot

    out.mkdir(parents=True, exist_ok=True)
    done = []
    for fmt in ("json", "md"):
        if fmt in formats:
            (out / f"backtest.{fmt}").write_bytes(report_bytes(report, fmt))
            done.append(str(out / f"backtest.{fmt}"))
    if "png" in formats:
        why = plot(report, out / "backtest.png")
        done.append(str(out / "backtest.png") if why is None else f"no {out / 'backtest.png'}: {why}")
    return done
