"""A backtest's numbers (:func:`summarize`) and its Markdown (:func:`markdown`). Pure.

Deterministic by construction: the input rows are sorted, every mapping is built in
sorted key order, ratios are rounded to 4 places and no clock is read, so the same audit
and the same candidate give the same report, byte for byte.

Precision of a rule: of the events it fired on, the share labelled fraud so far (an event
without a label counts as not fraud, as the trainer takes an unreported transaction as
legitimate once mature). Recall: of the events labelled fraud, the share it fired on.

>>> from engine.decide.backtest import Redecided
>>> row = Redecided("d1", "e1", "C1", "atm", 1795428000.0, "allow", "block", (), ("pins",), (),
...                 ("atm_default",), ("atm_decline_retain_card",), 0, 0)
>>> report = summarize([row], {("atm", "e1"): True}, {}, {})
>>> report["verdicts"]["by_channel"]["atm"]["matrix"]["allow"]["block"], report["rules"]["pins"]["new"]
(1, {'fires': 1, 'fraud': 1, 'precision': 1.0, 'recall': 1.0})
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from engine.decide.backtest import Redecided
from engine.domain.decision import VERDICT_ORDER

VERDICTS = tuple(sorted(VERDICT_ORDER, key=VERDICT_ORDER.__getitem__))
SAMPLE = 100  # changed events listed one by one


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def summarize(
    rows: Sequence[Redecided],
    labels: Mapping[tuple[str, str], bool],
    skipped: Mapping[str, int],
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The report as one JSON-able dict; ``meta`` (period, candidate, versions decided
    with, sources) is copied in as it is."""
    rows = sorted(rows, key=lambda r: (r.ts, r.channel, r.event_id, r.customer_id))
    fraud = [labels.get((r.channel, r.event_id)) is True for r in rows]
    n_fraud = sum(fraud)
    gaps = Counter(g for r in rows for g in r.gaps)
    return {
        "backtest": dict(meta),
        "records": {
            "re_decided": len(rows),
            "changed": sum(r.changed for r in rows),
            "skipped": dict(sorted(skipped.items())),
        },
        "input_gaps": dict(sorted(gaps.items())),
        "rule_errors": dict(sorted(Counter(e for r in rows for e in r.rule_errors).items())),
        "labels": {
            "fraud": n_fraud,
            "legitimate": sum(labels.get((r.channel, r.event_id)) is False for r in rows),
            "unlabelled": sum((r.channel, r.event_id) not in labels for r in rows),
        },
        "verdicts": _verdicts(rows),
        "alerts": _alerts(rows, fraud, n_fraud),
        "rules": _rules(rows, fraud, n_fraud),
        "offers": _offers(rows),
        "contacts": _contacts(rows),
        "daily": _daily(rows, fraud),
        "changed_events": [_event(r, f) for r, f in zip(rows, fraud, strict=True) if r.changed][:SAMPLE],
    }


def _verdicts(rows: Sequence[Redecided]) -> dict[str, Any]:
    by_channel: dict[str, dict[str, Any]] = {}
    for channel in sorted({r.channel for r in rows}):
        mine = [r for r in rows if r.channel == channel]
        cells = Counter((r.old_verdict, r.new_verdict) for r in mine)
        by_channel[channel] = {
            "events": len(mine),
            "stricter": sum(VERDICT_ORDER[r.new_verdict] > VERDICT_ORDER[r.old_verdict] for r in mine),
            "looser": sum(VERDICT_ORDER[r.new_verdict] < VERDICT_ORDER[r.old_verdict] for r in mine),
            "matrix": {old: {new: cells[(old, new)] for new in VERDICTS} for old in VERDICTS},
        }
    return {
        "changed": sum(r.old_verdict != r.new_verdict for r in rows),
        "old": {v: sum(r.old_verdict == v for r in rows) for v in VERDICTS},
        "new": {v: sum(r.new_verdict == v for r in rows) for v in VERDICTS},
        "by_channel": by_channel,
    }


def _alerts(rows: Sequence[Redecided], fraud: Sequence[bool], n_fraud: int) -> dict[str, Any]:
    added = Counter(a for r in rows for a in set(r.new_fired) - set(r.old_fired))
    removed = Counter(a for r in rows for a in set(r.old_fired) - set(r.new_fired))
    old_any = [bool(r.old_fired) for r in rows]
    new_any = [bool(r.new_fired) for r in rows]
    return {
        "old": sum(len(r.old_fired) for r in rows),
        "new": sum(len(r.new_fired) for r in rows),
        "old_kept_by_desk": sum(len(r.old_raised) for r in rows),
        "added": sum(added.values()),
        "removed": sum(removed.values()),
        "events_alerted": {"old": sum(old_any), "new": sum(new_any)},
        "any_alert": {"old": _quality(old_any, fraud, n_fraud), "new": _quality(new_any, fraud, n_fraud)},
        "by_rule": {
            rule: {"added": added[rule], "removed": removed[rule]}
            for rule in sorted(set(added) | set(removed))
        },
    }


def _quality(hit: Sequence[bool], fraud: Sequence[bool], n_fraud: int) -> dict[str, Any]:
    fires = sum(hit)
    caught = sum(h and f for h, f in zip(hit, fraud, strict=True))
    return {
        "fires": fires,
        "fraud": caught,
        "precision": ratio(caught, fires),
        "recall": ratio(caught, n_fraud),
    }


def _rules(rows: Sequence[Redecided], fraud: Sequence[bool], n_fraud: int) -> dict[str, Any]:
    ids = sorted({a for r in rows for a in (*r.old_fired, *r.new_fired)})
    return {
        rule: {
            "old": _quality([rule in r.old_fired for r in rows], fraud, n_fraud),
            "new": _quality([rule in r.new_fired for r in rows], fraud, n_fraud),
        }
        for rule in ids
    }


def _offers(rows: Sequence[Redecided]) -> dict[str, Any]:
    old = Counter(a for r in rows for a in set(r.old_shown))
    new = Counter(a for r in rows for a in set(r.new_shown))
    gained = Counter(a for r in rows for a in set(r.new_shown) - set(r.old_shown))
    lost = Counter(a for r in rows for a in set(r.old_shown) - set(r.new_shown))
    return {
        "events_changed": sum(r.old_shown != r.new_shown for r in rows),
        "by_action": {
            a: {"old": old[a], "new": new[a], "gained": gained[a], "lost": lost[a]}
            for a in sorted(set(old) | set(new))
        },
    }


def _contacts(rows: Sequence[Redecided]) -> dict[str, Any]:
    cells: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for r in rows:
        cell = cells[r.channel][r.day]
        cell[0] += r.old_contacts
        cell[1] += r.new_contacts
    return {
        "old": sum(r.old_contacts for r in rows),
        "new": sum(r.new_contacts for r in rows),
        "by_channel_day": {
            ch: {day: {"old": c[0], "new": c[1]} for day, c in sorted(days.items())}
            for ch, days in sorted(cells.items())
        },
    }


def _daily(rows: Sequence[Redecided], fraud: Sequence[bool]) -> dict[str, Any]:
    """Alerts per day (rule fires) and the share of them on events labelled fraud."""
    days: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for r, f in zip(rows, fraud, strict=True):
        d = days[r.day]
        d[0] += 1
        d[1] += len(r.old_fired)
        d[2] += len(r.new_fired)
        d[3] += len(r.old_fired) * f
        d[4] += len(r.new_fired) * f
    return {
        day: {
            "events": d[0],
            "alerts_old": d[1],
            "alerts_new": d[2],
            "precision_old": ratio(d[3], d[1]),
            "precision_new": ratio(d[4], d[2]),
        }
        for day, d in sorted(days.items())
    }


def _event(r: Redecided, fraud: bool) -> dict[str, Any]:
    return {
        "decision_id": r.decision_id, "event_id": r.event_id, "customer_id": r.customer_id,
        "channel": r.channel, "ts": r.ts, "fraud": fraud,
        "verdict": [r.old_verdict, r.new_verdict],
        "alerts_added": sorted(set(r.new_fired) - set(r.old_fired)),
        "alerts_removed": sorted(set(r.old_fired) - set(r.new_fired)),
        "shown": [list(r.old_shown), list(r.new_shown)],
    }  # fmt: skip


# -- Markdown ---------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _table(head: Sequence[str], body: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in body]
    return [*lines, ""]


def markdown(report: Mapping[str, Any]) -> str:
    """The report for people: the same numbers as the JSON, as tables."""
    meta, rec, lab = report["backtest"], report["records"], report["labels"]
    out = ["# Backtest", ""]
    out += [f"- {k}: {_plain(v)}" for k, v in sorted(meta.items())]
    skipped = ", ".join(f"{k} {v}" for k, v in rec["skipped"].items()) or "none"
    out += [
        f"- events decided again: {rec['re_decided']} (changed: {rec['changed']}; "
        f"not decided again: {skipped})",
        f"- fraud labels known: {lab['fraud']} fraud, {lab['legitimate']} legitimate, "
        f"{lab['unlabelled']} unlabelled (counted as not fraud)",
        "",
    ]
    if report["input_gaps"]:
        out += ["Inputs the candidate reads that the records did not keep (taken as absent):", ""]
        out += _table(["gap", "events"], sorted(report["input_gaps"].items()))
    if report["rule_errors"]:
        out += ["Candidate conditions that raised (they count as not matched), events:", ""]
        out += _table(["rule or offer", "events"], sorted(report["rule_errors"].items()))
    v = report["verdicts"]
    out += ["## Verdicts", "", f"{v['changed']} verdicts change.", ""]
    for channel, c in v["by_channel"].items():
        out += [f"### {channel}: {c['events']} events, {c['stricter']} stricter, {c['looser']} looser", ""]
        out += _table(["was \\ now", *VERDICTS], [[old, *c["matrix"][old].values()] for old in VERDICTS])
    a = report["alerts"]
    out += [
        "## Alerts", "",
        f"Rule fires: {a['old']} -> {a['new']} (added {a['added']}, removed {a['removed']}); "
        f"the desk kept {a['old_kept_by_desk']} of the old ones after its suppression windows.", "",
    ]  # fmt: skip
    any_old, any_new = a["any_alert"]["old"], a["any_alert"]["new"]
    out += _table(
        ["any alert", "events", "fraud", "precision", "recall"],
        [["old", *any_old.values()], ["new", *any_new.values()]],
    )
    out += ["## Rules", ""]
    out += _table(
        ["rule", "fires old", "fires new", "fraud old", "fraud new", "precision old", "precision new",
         "recall old", "recall new"],
        [[rule, *(q[side][k] for k in ("fires", "fraud", "precision", "recall") for side in ("old", "new"))]
         for rule, q in report["rules"].items()],
    )  # fmt: skip
    o = report["offers"]
    out += ["## Offers and messages shown", "", f"{o['events_changed']} events show something else.", ""]
    out += _table(
        ["action", "shown old", "shown new", "gained", "lost"],
        [[k, *c.values()] for k, c in o["by_action"].items()],
    )
    c = report["contacts"]
    out += ["## Contacts per channel and day", "", f"Contacts made: {c['old']} -> {c['new']}.", ""]
    out += _table(
        ["channel", "day", "old", "new"],
        [
            [ch, day, n["old"], n["new"]]
            for ch, days in c["by_channel_day"].items()
            for day, n in days.items()
        ],
    )
    out += ["## Daily alerts and precision", ""]
    out += _table(
        ["day", "events", "alerts old", "alerts new", "precision old", "precision new"],
        [[day, *d.values()] for day, d in report["daily"].items()],
    )
    if report["changed_events"]:
        out += [f"## Changed events (first {SAMPLE})", ""]
        out += _table(
            ["event", "channel", "customer", "verdict", "alerts added", "alerts removed", "fraud"],
            [[e["event_id"], e["channel"], e["customer_id"], " -> ".join(e["verdict"]),
              ", ".join(e["alerts_added"]), ", ".join(e["alerts_removed"]), e["fraud"]]
             for e in report["changed_events"]],
        )  # fmt: skip
    return "\n".join(out)


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_plain(v)}" for k, v in sorted(value.items())) or "none"
    return _cell(value)
