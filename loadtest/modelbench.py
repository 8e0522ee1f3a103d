"""Beacon's online models on real public labelled data, through the public HTTP API,
against River used directly on the same rows, features and label delays.

    .venv/bin/python -m loadtest.modelbench --data fraud --rows 20000 --rate 200 --label-delay 1000

It starts the stack as the load tests do (embedded Redis and broker, one worker, the
trainer; every setting at its default but the run's isolation, no rate limit, the data
set's columns as event attributes of the model they label, in a ``BEACON_MODEL_FEATURES``
file, and any ``--set NAME=VALUE``), turns each row into an interaction event, sends the
rows in file order open loop at ``--rate`` through ``POST /v1/decisions``, and records the
score each answer carried. ``--label-delay K`` rows later the row's label goes in through
the same API:

- fraud data (``--data fraud``): a ``card_payment`` on ``internet`` per row (``amount``
  and every feature as event attributes); a ``fraud_report`` (``ref_event_id``,
  ``ref_channel``) for each fraud. Legitimate rows get no label event (a bank reports
  fraud, not its absence: Beacon learns them after ``BEACON_FRAUD_MATURITY_S``) unless
  ``--negatives confirm`` sends a ``fraud_report`` with ``legitimate: true`` for each.
- campaign data (``--data caravan``, ``credit``): a rule pack written for the run with one
  offer, ``campaign_offer``, always eligible on ``call_centre`` (no caps, no exploration,
  no control group); each row is a ``balance_inquiry`` on ``call_centre`` (the customer is
  on the line, the agent's screen shows the offer); its ``offer_response`` (``accepted``
  or ``declined``) names the decision. Rows where the offer was not shown get no label
  and are left out of both sides' figures (counted).

Each row is a customer of its own (these data sets carry no customer id), so Beacon's
rolling state adds nothing and the models see the same columns as River does.

The score of a row, in order of preference: the answer's ``scores`` block
(``?scores=true``, when the worker has one), the ``decisions.audit`` record's ``scores``
(read from the topic as the run goes), else the answer itself (``risk.score`` for fraud,
the offer's ``actions[].score`` for offers, rounded). The table says which was used.

River direct is ``StandardScaler | LogisticRegression`` (for fraud with
``loss=Log(weight_pos=5)``) scoring each row, then learning it ``K`` rows later: every
row's label, as a bank that knows them all would. Metrics are exact (loadtest.modeleval).

Writes ``results.json`` under ``loadtest/results/modelbench-*/`` and prints the Markdown
row for docs/models.md (``--append FILE`` appends it there too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from engine.ops import launcher
from engine.ops.infra import Embedded, ensure_topics, start_embedded, wait_kafka
from engine.settings import Settings
from loadtest import modeldata, modeleval
from loadtest.harness import isolated, machine, new_run_dir, start_worker
from loadtest.modeldata import DATASETS, DataSet, Row
from loadtest.openloop import run_schedule

ROOT = Path(__file__).resolve().parent.parent
OFFER_ID = "campaign_offer"
FRAUD_CHANNEL = "internet"
OFFER_CHANNEL = "call_centre"

CAMPAIGN_OFFERS = f"""\
# Written by loadtest.modelbench for one campaign replay: one offer, always eligible.
kind: offers
contact_policy:
  per_offer: {{max: 1000, window: 1d}}
  per_channel: {{max: 1000, window: 1d}}
  overall: {{max: 1000, window: 1d}}
  decline_cooldown: 1s
offers:
  - id: {OFFER_ID}
    kind: offer
    name: The campaign's product
    value: 1
    channels: [{OFFER_CHANNEL}]
    treatments:
      {OFFER_CHANNEL}: "Agent script: offer the campaign's product"
    eligibility: 'true'
    contact: {{max: 1000, window: 1d}}
arbitration:
  default: {{max_actions: 1, exploration: 0.0, control_group: 0.0}}
fallbacks:
  atm: {{id: atm_default, text: Thank you}}
  internet: {{id: internet_default, text: Thank you}}
  mobile: {{id: mobile_default, text: Thank you}}
  branch: {{id: branch_default, text: No suggestion}}
  call_centre: {{id: call_centre_default, text: No suggestion}}
"""


# ---- rows -> events (pure) --------------------------------------------------------------


def interaction(ds: DataSet, row: Row, run: str, ts: float) -> dict[str, Any]:
    """The interaction event of one row.

    >>> r = Row(7, {"V1": -1.5, "Amount": 12.5}, True, amount=12.5)
    >>> ev = interaction(DATASETS["fraud"], r, "mbx", 1000.0)
    >>> ev["event_id"], ev["customer_id"], ev["channel"], ev["type"], ev["amount"], ev["attributes"]
    ('mbx-7', 'mbx-c7', 'internet', 'card_payment', 12.5, {'V1': -1.5, 'Amount': 12.5})
    >>> interaction(DATASETS["caravan"], Row(3, {"MOSTYPE": 33.0}, False), "mbx", 1.0)["type"]
    'balance_inquiry'
    """
    ev: dict[str, Any] = {"event_id": f"{run}-{row.index}", "customer_id": f"{run}-c{row.index}", "ts": ts,
                          "attributes": dict(row.features)}  # fmt: skip
    if ds.kind == "fraud":
        ev.update(channel=FRAUD_CHANNEL, type="card_payment", currency="EUR")
        if row.amount is not None:
            ev["amount"] = row.amount
    else:
        ev.update(channel=OFFER_CHANNEL, type="balance_inquiry")
    return ev


def label_event(ds: DataSet, row: Row, run: str, ts: float, decision_id: str | None = None) -> dict[str, Any]:
    """The label of one row as a bank sends it: a fraud report (``legitimate: true`` for a
    confirmed negative) or the customer's response to the offer.

    >>> r = Row(7, {}, True)
    >>> label_event(DATASETS["fraud"], r, "mbx", 5.0)["attributes"]
    {'ref_event_id': 'mbx-7', 'ref_channel': 'internet'}
    >>> label_event(DATASETS["fraud"], Row(8, {}, False), "mbx", 5.0)["attributes"]["legitimate"]
    True
    >>> label_event(DATASETS["caravan"], r, "mbx", 5.0, "d-1")["attributes"]["response"]
    'accepted'
    """
    ev: dict[str, Any] = {"event_id": f"{run}-l{row.index}", "customer_id": f"{run}-c{row.index}", "ts": ts}
    if ds.kind == "fraud":
        attrs: dict[str, Any] = {"ref_event_id": f"{run}-{row.index}", "ref_channel": FRAUD_CHANNEL}
        if not row.label:
            attrs["legitimate"] = True
        ev.update(channel="call_centre", type="fraud_report", attributes=attrs)
    else:
        ev.update(channel=OFFER_CHANNEL, type="offer_response",
                  attributes={"decision_id": decision_id, "action_id": OFFER_ID,
                              "response": "accepted" if row.label else "declined"})  # fmt: skip
    return ev


def score_of(kind: str, answer: dict[str, Any], audit: dict[str, Any] | None) -> tuple[float | None, str]:
    """A row's score and where it came from: ``scores`` (the answer's block), ``audit``
    (the decisions.audit record) or ``answer`` (risk.score / the action's score).

    >>> score_of("fraud", {"risk": {"score": 0.5}, "scores": {"fraud": 0.25}}, None)
    (0.25, 'scores')
    >>> score_of("fraud", {"risk": {"score": 0.5}}, {"scores": {"fraud": 0.125}})
    (0.125, 'audit')
    >>> score_of("offer", {"actions": [{"id": "campaign_offer", "score": 0.3}]}, None)
    (0.3, 'answer')
    >>> score_of("offer", {"actions": []}, None)
    (None, 'none')
    """
    for source, block in (("scores", answer.get("scores")), ("audit", (audit or {}).get("scores"))):
        if isinstance(block, dict):
            value = _model_score(kind, block)
            if value is not None:
                return value, source
    if kind == "fraud":
        risk = answer.get("risk") or {}
        if isinstance(risk.get("score"), int | float):
            return float(risk["score"]), "answer"
    else:
        for action in answer.get("actions") or []:
            if action.get("id") == OFFER_ID and isinstance(action.get("score"), int | float):
                return float(action["score"]), "answer"
    return None, "none"


def _model_score(kind: str, block: dict[str, Any]) -> float | None:
    if kind == "fraud":
        value = block.get("fraud")
    else:
        offers = block.get("offer", block.get("offers"))
        if isinstance(offers, list):  # [{"id": ..., "propensity": p}, ...]
            offers = {o.get("id"): o for o in offers if isinstance(o, dict)}
        value = offers.get(OFFER_ID) if isinstance(offers, dict) else None
        if isinstance(value, dict):  # {"propensity": p, ...}
            value = value.get("propensity", value.get("score"))
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def offer_shown(answer: dict[str, Any]) -> bool:
    return any(a.get("id") == OFFER_ID for a in answer.get("actions") or [])


# ---- the live run ---------------------------------------------------------------------------


@dataclass
class Replay:
    """What the HTTP side of one run saw, row by row."""

    rows: list[Row]
    answers: list[dict[str, Any] | None] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    labels_sent: int = 0
    label_statuses: dict[str, int] = field(default_factory=dict)
    audit: dict[str, dict[str, Any]] = field(default_factory=dict)  # event_id -> audit record
    elapsed_s: float = 0.0
    client_late_max_s: float = 0.0


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[str, Any]:
    try:
        async with session.post(
            url, data=orjson.dumps(body), headers={"content-type": "application/json"}
        ) as r:
            raw = await r.read()
            return str(r.status), orjson.loads(raw) if r.status == 200 else raw[:200]
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return type(exc).__name__, None


async def _read_audit(settings: Settings, into: dict[str, dict[str, Any]], stop: asyncio.Event) -> None:
    """Every decisions.audit record of the run, by event id (from the topic's start)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topic("decisions.audit"),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for records in batches.values():
                for rec in records:
                    with contextlib.suppress(orjson.JSONDecodeError, TypeError):
                        body = orjson.loads(rec.value)
                        dropped = (body.get("explain") or {}).get("dropped") or []
                        into[str(body.get("event_id"))] = {
                            "scores": body.get("scores"),
                            "dropped": [d.get("stage") for d in dropped if d.get("id") == OFFER_ID],
                        }
                        if not offer_shown(body):  # why not, for the run's record
                            into[str(body.get("event_id"))]["explain"] = body.get("explain")
    finally:
        await consumer.stop()


async def replay(
    ds: DataSet,
    rows: list[Row],
    url: str,
    rate: float,
    delay: int,
    negatives: str,
    run: str,
    settings: Settings,
    row_seconds: float | None = None,
) -> Replay:
    out = Replay(rows, answers=[None] * len(rows))
    # Event times: the moment of sending, or the data set's own pace (row i at first_ts + i x
    # row_seconds, ending now), so label rules in stream time (fraud maturity) see the
    # hours the rows span and not the minutes the replay takes.
    first_ts = time.time() - len(rows) * (row_seconds or 0.0)

    def event_time(i: int) -> float:
        return first_ts + i * row_seconds if row_seconds else time.time()

    decide = url + "/v1/decisions?scores=true"
    late_labels: set[int] = set()
    tasks: set[asyncio.Task[None]] = set()
    stop_audit = asyncio.Event()
    audit_task = asyncio.create_task(_read_audit(settings, out.audit, stop_audit))

    def count(d: dict[str, int], status: str) -> None:
        d[status] = d.get(status, 0) + 1

    async def send_label(session: aiohttp.ClientSession, j: int) -> None:
        row, answer = rows[j], out.answers[j] or {}
        if ds.kind == "fraud":
            if not row.label and negatives != "confirm":
                return
            body = label_event(ds, row, run, event_time(j + delay))
        else:
            if not offer_shown(answer):
                return
            body = label_event(ds, row, run, event_time(j + delay), answer.get("decision_id"))
        out.labels_sent += 1
        status, _ = await _post(session, decide, body)
        count(out.label_statuses, status)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        status, body = await _post(session, decide, interaction(ds, rows[i], run, event_time(i)))
        count(out.statuses, status)
        if status.startswith("4") and out.statuses[status] == 1:
            print("first", status, "answer:", body)
        out.answers[i] = body if isinstance(body, dict) else {}
        if i in late_labels:  # its label fell due before its answer came back
            late_labels.discard(i)
            await send_label(session, i)

    def spawn(coro: Any) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def fire(i: int) -> None:
            spawn(one(session, i))
            j = i - delay
            if j >= 0:
                if out.answers[j] is None:
                    late_labels.add(j)
                else:
                    spawn(send_label(session, j))

        t0 = time.perf_counter() + 0.05
        intended = [t0 + i / rate for i in range(len(rows))]
        out.client_late_max_s = await run_schedule(intended, fire)
        while tasks:
            await asyncio.gather(*list(tasks), return_exceptions=True)
        out.elapsed_s = time.perf_counter() - t0
    # The audit records trail the answers (outbox relay): wait for them, a minute at most.
    want = {f"{run}-{r.index}" for r in rows}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not want <= out.audit.keys():
        await asyncio.sleep(0.5)
    stop_audit.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(audit_task, 10)
    return out


def evaluate(
    ds: DataSet, rows: list[Row], rep: Replay, run: str, delay: int, weight_pos: float
) -> dict[str, Any]:
    """Both sides' metrics over the rows Beacon scored (and, for offers, showed the offer)."""
    river = modeleval.river_direct(
        [r.features for r in rows], [r.label for r in rows], delay, ds.kind, weight_pos
    )
    used: dict[str, int] = {}
    ys, beacon, direct, versions, kept = [], [], [], set(), []
    fresh: list[int] = []  # positions (in ys) of rows answered with the customer's state
    excluded = {"no_answer": 0, "offer_not_shown": 0}
    examples: list[dict[str, Any]] = []
    degraded = 0  # answered without the customer's state (Redis too slow): fallback, models as loaded
    for k, row in enumerate(rows):
        answer = rep.answers[k]
        if not answer:
            excluded["no_answer"] += 1
            continue
        if ds.kind != "fraud" and not offer_shown(answer):
            excluded["offer_not_shown"] += 1
            stages = (rep.audit.get(f"{run}-{row.index}") or {}).get("dropped") or ["unknown"]
            why = "offer_not_shown_degraded" if answer.get("degraded") else f"offer_not_shown_at_{stages[0]}"
            excluded[why] = excluded.get(why, 0) + 1
            if len(examples) < 3:
                audit_record = rep.audit.get(f"{run}-{row.index}")
                examples.append({"row": row.index, "answer": answer, "audit": audit_record})
            continue
        audit = rep.audit.get(f"{run}-{row.index}")
        score, source = score_of(ds.kind, answer, audit)
        if score is None:
            excluded["no_answer"] += 1
            continue
        used[source] = used.get(source, 0) + 1
        degraded += bool(answer.get("degraded"))
        model_versions = (answer.get("versions") or {}).get("models") or {}
        versions.add(str(model_versions.get("fraud" if ds.kind == "fraud" else "offers")))
        kept.append(row.index)
        ys.append(row.label)
        beacon.append(score)
        direct.append(river[k])
        if not answer.get("degraded"):
            fresh.append(len(ys) - 1)
    return {
        "per_row": {"index": kept, "label": ys, "beacon": beacon, "river_direct": direct},
        "scored_rows": len(ys),
        "positives": sum(ys),
        "excluded": excluded,
        "not_shown_examples": examples,
        "degraded_scored": degraded,
        "score_source": used,
        "model_versions_seen": len(versions),
        "beacon": modeleval.summary(ys, beacon),
        "river_direct": modeleval.summary(ys, direct),
        "river_direct_all_rows": modeleval.summary([r.label for r in rows], river),
        # Diagnostic: both sides over the rows whose answer was not degraded.
        "beacon_not_degraded": modeleval.summary([ys[i] for i in fresh], [beacon[i] for i in fresh]),
        "river_direct_not_degraded": modeleval.summary([ys[i] for i in fresh], [direct[i] for i in fresh]),
    }


def _commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("+dirty" if dirty else "")
    return "unknown"


def _f(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


TABLE_HEAD = (
    "| data | rows | positives | rate req/s (asked / done) | label delay | labels | score read from "
    "| Beacon PR AUC | Beacon ROC AUC | Beacon recall top 0.1% | River PR AUC | River ROC AUC "
    "| River recall top 0.1% | PR AUC Beacon / River | commit |\n"
    "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
)


def table_row(res: dict[str, Any]) -> str:
    ev, b, r = res["evaluation"], res["evaluation"]["beacon"], res["evaluation"]["river_direct"]
    ratio = b["pr_auc"] / r["pr_auc"] if r["pr_auc"] else math.nan
    sources = ", ".join(f"{k} {v}" for k, v in sorted(ev["score_source"].items()))
    pos = ev["positives"]
    cells = [
        res["data"] + (f" (1 positive in {res['positive_every']})" if res["positive_every"] > 1 else ""),
        f"{ev['scored_rows']:,}",
        f"{pos} ({100.0 * pos / max(ev['scored_rows'], 1):.2f}%)",
        f"{res['rate']:g} / {res['achieved_rate']:.0f}",
        str(res["label_delay"]),
        res["labels"],
        sources,
        _f(b["pr_auc"]), _f(b["roc_auc"]), _f(b["recall_top_0.1pct"]),
        _f(r["pr_auc"]), _f(r["roc_auc"]), _f(r["recall_top_0.1pct"]),
        _f(ratio),
        res["commit"],
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ds = DATASETS[args.data]
    rows = modeldata.load(args.data, args.rows, args.offset, args.positive_every)
    run_dir = new_run_dir("modelbench")
    tag = uuid.uuid4().hex[:6]
    run_id = f"mb{tag}"
    # The data set's columns feed the model its labels teach, and that one only (a model
    # features file, as a bank would write it: models/featureconfig.py).
    model = "fraud" if ds.kind == "fraud" else "offers"
    features_file = run_dir / "model-features.yaml"
    features_file.write_text(
        f"{model}:\n  attributes:\n" + "".join(f"    {c}: number\n" for c in ds.features)
    )
    extra: dict[str, Any] = {"model_features": str(features_file)}
    rules_dir = None
    if ds.kind != "fraud":
        rules_dir = Path(tempfile.mkdtemp(prefix="modelbench-rules-"))
        (rules_dir / "offers.yaml").write_text(CAMPAIGN_OFFERS)
        (rules_dir / "risk.yaml").write_text((ROOT / "rules" / "risk.yaml").read_text())
        extra["rules_dir"] = str(rules_dir)
    for item in args.set or []:
        name, _, value = item.partition("=")
        extra[name.strip().lower()] = value
    emb: Embedded = await asyncio.to_thread(start_embedded, Settings.build(), str(run_dir / "logs"))
    worker = trainer = None
    try:
        base = emb.settings_for(Settings.build())
        await asyncio.to_thread(wait_kafka, base)
        settings = isolated(base, tag, **_typed(base, extra))
        await ensure_topics(settings)
        worker = await start_worker(settings, run_dir / "logs")
        trainer = await asyncio.to_thread(launcher.start_trainer, settings, run_dir / "logs")
        started = time.time()
        rep = await replay(
            ds,
            rows,
            worker.url,
            args.rate,
            args.label_delay,
            args.negatives,
            run_id,
            settings,
            args.row_seconds,
        )
    finally:
        if trainer is not None:
            trainer.stop()
        if worker is not None:
            worker.stop()
        emb.stop()
    labels = "offer responses"
    if ds.kind == "fraud":
        labels = "fraud reports" + (" + legitimate confirmations" if args.negatives == "confirm" else "")
    res: dict[str, Any] = {
        "data": args.data,
        "source": ds.source,
        "licence": ds.licence,
        "rows_requested": args.rows,
        "offset": args.offset,
        "positive_every": args.positive_every,
        "rate": args.rate,
        "achieved_rate": len(rows) / rep.elapsed_s if rep.elapsed_s else 0.0,
        "label_delay": args.label_delay,
        "labels": labels,
        "labels_sent": rep.labels_sent,
        "statuses": rep.statuses,
        "label_statuses": rep.label_statuses,
        "audit_records": len(rep.audit),
        "client_late_max_s": round(rep.client_late_max_s, 3),
        "elapsed_s": round(rep.elapsed_s, 1),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "commit": _commit(),
        "command": "python -m loadtest.modelbench " + " ".join(args.argv),
        "settings": {k: str(v) for k, v in extra.items()},
        "worker_settings": settings.redacted(),
        "machine": machine(),
        "evaluation": evaluate(ds, rows, rep, run_id, args.label_delay, args.weight_pos),
        "run_dir": str(run_dir),
    }
    per_row = res["evaluation"].pop("per_row")
    with (run_dir / "scores.csv").open("w") as f:  # one line per scored row, for a closer look
        f.write("row,label,beacon,river_direct,model_version\n")
        for k, y, b, r in zip(per_row["index"], per_row["label"], per_row["beacon"], per_row["river_direct"],
                              strict=True):  # fmt: skip
            f.write(f"{k},{int(y)},{b!r},{r!r},{_version(rep.answers[k], ds.kind)}\n")
    (run_dir / "results.json").write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))
    return res


def _version(answer: dict[str, Any] | None, kind: str) -> str:
    """The model version that scored a row (the answer's ``versions.models``)."""
    models = ((answer or {}).get("versions") or {}).get("models") or {}
    return str(models.get("fraud" if kind == "fraud" else "offers", ""))


def _typed(base: Settings, extra: dict[str, Any]) -> dict[str, Any]:
    """``--set`` values converted to the type of the setting they replace."""
    out: dict[str, Any] = {}
    for name, value in extra.items():
        if not hasattr(base, name):
            raise SystemExit(f"--set {name}: no such setting")
        current = getattr(base, name)
        if not isinstance(value, str) or isinstance(current, str):
            out[name] = value
        elif isinstance(current, bool):
            out[name] = value.lower() in ("1", "true", "yes")
        elif isinstance(current, tuple):
            out[name] = tuple(v for v in value.split(",") if v)
        else:
            out[name] = type(current)(value)
    return out


def main(argv: list[str] | None = None) -> int:
    import sys

    p = argparse.ArgumentParser(prog="python -m loadtest.modelbench", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=sorted(DATASETS), default="fraud")
    p.add_argument("--rows", type=int, default=20000)
    p.add_argument("--offset", type=int, default=0, help="skip this many rows first")
    p.add_argument("--positive-every", type=int, default=1, help="keep one positive in N (a rarer class)")
    p.add_argument("--rate", type=float, default=200.0, help="interaction events per second")
    p.add_argument("--label-delay", type=int, default=1000, help="rows between a row and its label")
    p.add_argument("--negatives", choices=("none", "confirm"), default="none",
                   help="fraud: also confirm each legitimate row (legitimate: true)")  # fmt: skip
    p.add_argument(
        "--row-seconds",
        type=float,
        help="event time between rows (the data's own pace, e.g. 1.53 for the fraud rows: 20,000 in 8.5 h); "
        "default: the time of sending",
    )
    p.add_argument("--weight-pos", type=float, default=5.0, help="River direct: positive weight (fraud)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="a worker/trainer setting")
    p.add_argument("--append", type=Path, help="also append the table row to this Markdown file")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    res = asyncio.run(run(args))
    row = table_row(res)
    ev = res["evaluation"]
    shown = ("scored_rows", "positives", "excluded", "score_source", "model_versions_seen", "degraded_scored")
    print(
        orjson.dumps(
            {k: ev[k] for k in (*shown, "beacon", "river_direct")}, option=orjson.OPT_INDENT_2
        ).decode()
    )
    print(f"statuses {res['statuses']} labels sent {res['labels_sent']} {res['label_statuses']}")
    print(f"audit records {res['audit_records']} elapsed {res['elapsed_s']} s results {res['run_dir']}")
    print(TABLE_HEAD)
    print(row)
    if args.append:
        with args.append.open("a") as f:
            f.write(row + "\n")
    return 0 if res["statuses"].get("200", 0) else 1


if __name__ == "__main__":
    raise SystemExit(main())
