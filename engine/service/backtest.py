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


@dataclass(frozen=True)
class Request:
    rules_dir: Path
    since: float
    until: float | None = None
    models: tuple[str, ...] = ()  # snapshot versions, e.g. fraud-v12-0123456789ab
    file: Path | None = None  # else the decisions.audit topic


def parse_time(text: str) -> float:
    """Epoch seconds of ``2026-11-01`` (UTC midnight), an ISO 8601 time (UTC unless it
    says otherwise) or a number of epoch seconds.

    >>> parse_time("2026-11-01"), parse_time("2026-11-01T06:00:00+01:00"), parse_time("1793491200")
    (1793491200.0, 1793509200.0, 1793491200.0)
    """
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BeaconError(f"{text!r} is not a date, an ISO 8601 time or epoch seconds") from exc
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def candidate_rules(settings: Settings, rules_dir: Path) -> tuple[Any, str]:
    """The candidate's rules, loaded as a worker loads a version, named by their digest."""
    files = read_bundle(rules_dir)
    version = f"candidate-{bundle_digest(files)}"
    return load(files, frozenset(settings.channels), version, settings.event_types).rules, version


async def build_candidate(settings: Settings, request: Request) -> Candidate:
    """The rules of ``request.rules_dir`` and the models of ``request.models``, loaded
    from the snapshot store and verified (needs Redis and ``BEACON_SIGNING_PUBLIC_KEYS``,
    as a worker does). To try models alone, pass the live rules' folder."""
    rules, _ = candidate_rules(settings, request.rules_dir)
    policy = DecisionPolicy(settings.risk_step_up, settings.risk_block, settings.max_actions)
    if not request.models:
        return Candidate(rules, policy)
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


def _order(record: Mapping[str, Any]) -> tuple[float, str, str, str]:
    ev = record.get("event") if isinstance(record.get("event"), dict) else {}
    assert isinstance(ev, dict)
    return (float(ev.get("ts") or 0.0), str(record.get("channel")), str(record.get("event_id")),
            str(record.get("customer_id")))  # fmt: skip


def backtest(
    records: Iterable[Mapping[str, Any]],
    labels: Iterable[Mapping[str, Any]],
    candidate: Candidate,
    request: Request,
    sources: Mapping[str, str],
) -> dict[str, Any]:
    """Decide every record of the period again and summarise. ``labels``: fraud labels
    known so far besides the label events among ``records`` (which are always used)."""
    all_records = list(records)
    kept = sorted((r for r in all_records if in_period(r, request.since, request.until)), key=_order)
    skipped: Counter[str] = Counter()
    seen: set[tuple[str, str, str]] = set()
    rows: list[Redecided] = []
    decided_with: Counter[str] = Counter()
    for record in kept:
        key = (str(record.get("customer_id")), str(record.get("channel")), str(record.get("event_id")))
        if key in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(key)
        why = skip_reason(record)
        if why is not None:
            skipped[why] += 1
            continue
        rows.append(redecide(record, candidate))
        decided_with[str((record.get("versions") or {}).get("rules"))] += 1
    skipped["outside_period"] = len(all_records) - len(kept)
    verdicts = fraud_labels([*labels_in(all_records), *labels])
    scorer = candidate.scorer
    models = {k: v for k, v in sorted((scorer.versions if scorer else {}).items()) if k in candidate.rescored}
    meta = {
        "period": {"since": iso(request.since), "until": iso(request.until) if request.until else "the end"},
        "candidate": {"rules": candidate.rules.version, "models": models or "as recorded"},
        "decided_with": {"rules": dict(sorted(decided_with.items()))},
        **sources,
    }
    return summarize(rows, verdicts, {k: v for k, v in skipped.items() if v}, meta)


async def run(settings: Settings, request: Request) -> dict[str, Any]:
    """Read, decide again, summarise: the report as a dict (see :func:`write`)."""
    candidate = await build_candidate(settings, request)
    if request.file is not None:
        from engine.service.auditlog import read_audit_file

        records = list(read_audit_file(request.file))
        sources = {"audit": request.file.name, "labels": "label events in the file"}
        return backtest(records, (), candidate, request, sources)
    if not settings.kafka_bootstrap:
        raise BeaconError("reading decisions.audit needs BEACON_KAFKA_BOOTSTRAP (or --kafka); or pass --file")
    from engine.service.auditlog import read_audit
    from engine.service.topicread import read_topic

    # Decided in the period means recorded at or after its start; later records are read
    # to the end and kept by their event's time (a decision is recorded after its event).
    records = [r async for r in read_audit(settings, request.since, None)]
    labels = [r async for r in read_topic(settings, "feedback", request.since, None)]
    sources = {"audit": "decisions.audit", "labels": "feedback topic and label events"}
    return backtest(records, labels, candidate, request, sources)


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
