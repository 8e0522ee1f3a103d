"""``beacon report offers``: offer performance and uplift over a period, as Markdown or
JSON, from ``decisions.audit`` (the topic, or a JSON Lines export of it with ``--file``).
The numbers are engine/decide/offerreport.py's; the columns are explained in the README
("For analysts")."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson

from engine.errors import BeaconError, EventError
from engine.rules.ruleset import Offer
from engine.settings import Settings

_COLUMNS = ("offer", "channel", "segment", "eligible", "held out", "shown", "impressions", "accepted",
            "declined", "ignored", "pending", "conv. shown", "conv. control", "rate shown", "rate control",
            "uplift [95% CI]", "value", "incr. conv.", "incr. value", "not held out",
            "ITT uplift [95% CI]")  # fmt: skip


def add_commands(sub: Any) -> None:
    what = "reports for analysts, read from decisions.audit (README: For analysts)"
    p = sub.add_parser("report", help=what, description=what)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    rsub = p.add_subparsers(dest="report_command", metavar="{offers,audit}")
    why = (
        "offer performance and uplift: per offer x channel x segment, eligible customers, impressions, "
        "responses, conversions of customers shown vs held out (control group), uplift with its 95%% "
        "interval, value; and an off-policy estimate of another exploration share"
    )
    o = rsub.add_parser("offers", help=why, description=why)
    o.add_argument(
        "--since", required=True, help="start: epoch seconds or ISO 8601 (2026-11-01 or ...T00:00:00Z)"
    )
    o.add_argument("--until", help="end (default: now)")
    o.add_argument("--file", help="a JSON Lines export of decisions.audit (default: read the topic)")
    o.add_argument(
        "--format",
        choices=("md", "json", "csv"),
        default="md",
        help="md: to read; json: everything; csv: one line per row and total, for a spreadsheet",
    )
    o.add_argument("--channel", help="only this channel")
    o.add_argument("--segment", help="only this segment")
    o.add_argument("--offer", help="only this offer")
    o.add_argument(
        "--target-epsilon", dest="target_epsilon", help="exploration share to evaluate (default 0)"
    )
    o.add_argument(
        "--product",
        action="append",
        default=[],
        metavar="CODE=OFFER",
        help="a conversion product code that counts for an offer (repeatable; default: same id)",
    )
    o.add_argument("--config", help="TOML settings file (else BEACON_CONFIG, env vars, defaults)")
    o.add_argument("--kafka", dest="kafka_bootstrap", help="broker host:port (else BEACON_KAFKA_BOOTSTRAP)")
    o.set_defaults(func=cmd_report_offers)
    what = "export decisions.audit over a period as JSON Lines (for --file, backtests, other tools)"
    a = rsub.add_parser("audit", help=what, description=what)
    a.add_argument("--since", required=True, help="start (broker time): epoch seconds or ISO 8601")
    a.add_argument("--until", help="end (default: the end of the topic when the export starts)")
    a.add_argument("--config", help="TOML settings file (else BEACON_CONFIG, env vars, defaults)")
    a.add_argument("--kafka", dest="kafka_bootstrap", help="broker host:port (else BEACON_KAFKA_BOOTSTRAP)")
    a.set_defaults(func=cmd_report_audit)


def cmd_report_offers(args: argparse.Namespace) -> int:
    from engine.cli.common import load_settings
    from engine.decide.offerreport import offer_report
    from engine.http.reports import build_report, read_until, report_options

    settings = load_settings(args)
    query = {k: getattr(args, k) for k in ("since", "until", "channel", "segment", "offer", "target_epsilon")}
    now = time.time()
    try:
        options = report_options({k: v for k, v in query.items() if v}, settings, now, pack_offers(settings))
    except EventError as exc:
        raise BeaconError(f"--{(exc.field or 'since').replace('_', '-')}: {exc}") from exc
    if args.product:
        from dataclasses import replace

        products = dict(options.products)
        for code, offer in (_pair(p) for p in args.product):
            products[code] = (*products.get(code, ()), offer)
        options = replace(options, products=products)
    if args.file:
        from engine.service.auditlog import read_audit_file

        report = offer_report(read_audit_file(args.file), options)
    else:
        if not settings.kafka_bootstrap:
            raise BeaconError("needs --file or BEACON_KAFKA_BOOTSTRAP (the broker holding decisions.audit)")
        from engine.service.auditlog import read_audit

        records: AsyncIterator[dict[str, Any]] = read_audit(settings, options.since, read_until(options, now))
        report = asyncio.run(build_report(records, options))
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(to_csv(report) if args.format == "csv" else to_markdown(report) + "\n")
    return 0


def cmd_report_audit(args: argparse.Namespace) -> int:
    """One record a line, as the workers wrote them (signatures checked when keys are set)."""
    from engine.cli.common import load_settings
    from engine.domain.periods import parse_time
    from engine.service.auditlog import read_audit

    settings = load_settings(args)
    if not settings.kafka_bootstrap:
        raise BeaconError("needs BEACON_KAFKA_BOOTSTRAP (the broker holding decisions.audit)")
    try:
        since = parse_time(args.since, "since")
        until = parse_time(args.until, "until") if args.until else None
    except EventError as exc:
        raise BeaconError(f"--{exc.field}: {exc}") from exc

    async def export() -> int:
        n = 0
        async for record in read_audit(settings, since, until):
            sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
            n += 1
        return n

    n = asyncio.run(export())
    sys.stdout.flush()
    print(f"exported {n} records", file=sys.stderr)
    return 0


def pack_offers(settings: Settings) -> tuple[Offer, ...]:
    """The local rule pack's offers (values, product codes, attribution windows); none if
    it cannot be read (the report then counts conversions by offer id, with no value)."""
    from engine.decide.rulebook import load
    from engine.rules.pack import read_bundle

    try:
        rules = load(read_bundle(settings.rules_path()), frozenset(settings.channels), "local").rules
    except (BeaconError, OSError):
        return ()
    return rules.offers


def _pair(text: str) -> tuple[str, str]:
    code, sep, offer = text.partition("=")
    if not sep or not code or not offer:
        raise BeaconError(f"--product {text!r}: expected CODE=OFFER")
    return code, offer


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: period, what it rests on, per offer, per cell, off-policy."""
    p, n = report["period"], report["records"]
    lines = [
        "# Offer performance and uplift",
        "",
        f"Period {_day(p['since'])} to {_day(p['until'])} (data to {_day(p['data_until'])}); "
        f"attribution window {report['settings']['attribution_days']:g} days, "
        f"response window {report['settings']['response_window_days']:g} days.",
        f"Rests on {n['decisions']} decisions, {n['responses']} offer responses and "
        f"{n['conversions']} conversions ({n['records']} audit records).",
        "",
        "## Per offer (all channels and segments)",
        "",
        *_table(report["totals"]),
        "",
        "## Per offer, channel and segment",
        "",
        *_table(report["rows"]),
        "",
        *_off_policy(report["off_policy"]),
    ]
    return "\n".join(lines)


CSV_COLUMNS = ("offer", "channel", "segment", "eligible_customers", "held_out", "shown_customers",
               "impressions", "accepted", "clicked", "declined", "ignored", "pending", "other",
               "conversions_shown", "conversions_control", "rate_shown", "rate_control", "uplift",
               "uplift_low", "uplift_high", "excludes_zero", "conversion_value", "incremental_conversions",
               "incremental_value", "not_held_out", "conversions_not_held_out", "rate_not_held_out",
               "uplift_itt", "uplift_itt_low", "uplift_itt_high", "note")  # fmt: skip
_ANSWERS = ("accepted", "clicked", "declined", "ignored", "pending", "other")


def to_csv(report: dict[str, Any]) -> str:
    """The totals (channel and segment ``*``) then the rows, one line each, flat columns.

    >>> row = {"offer": "gold", "channel": "*", "segment": "*", "eligible_customers": 2, "held_out": 1,
    ...        "shown_customers": 1, "impressions": 1, "responses": {"accepted": 1}, "conversions_shown": 1,
    ...        "conversions_control": 0, "rate_shown": 1.0, "rate_control": 0.0,
    ...        "uplift": {"uplift": 1.0, "low": -0.2, "high": 1.0, "excludes_zero": False},
    ...        "conversion_value": 5.0, "incremental_conversions": 1.0, "incremental_value": None,
    ...        "note": None}
    >>> print(to_csv({"totals": [row], "rows": []}).splitlines()[1])
    gold,*,*,2,1,1,1,1,0,0,0,0,0,1,0,1.0,0.0,1.0,-0.2,1.0,False,5.0,1.0,,,,,,,,
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in [*report["totals"], *report["rows"]]:
        u = row["uplift"]
        flat = {**row, **{k: row["responses"].get(k, 0) for k in _ANSWERS}}
        flat.update(
            uplift=u["uplift"], uplift_low=u["low"], uplift_high=u["high"], excludes_zero=u["excludes_zero"]
        )
        i = row.get("uplift_itt") or {}
        flat.update(uplift_itt=i.get("uplift"), uplift_itt_low=i.get("low"), uplift_itt_high=i.get("high"))
        writer.writerow(["" if flat.get(c) is None else flat[c] for c in CSV_COLUMNS])
    return buffer.getvalue()


def _table(rows: Iterable[dict[str, Any]]) -> list[str]:
    rows = list(rows)
    if not rows:
        return ["No offer was eligible in this period."]
    out = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    notes = []
    for row in rows:
        u, r = row["uplift"], row["responses"]
        ci, itt = _ci(u), _ci(row["uplift_itt"])
        cells = (row["offer"], row["channel"], row["segment"], row["eligible_customers"], row["held_out"],
                 row["shown_customers"], row["impressions"], r["accepted"] + r["clicked"], r["declined"],
                 r["ignored"], r["pending"], row["conversions_shown"], row["conversions_control"],
                 _pct(row["rate_shown"]), _pct(row["rate_control"]), ci, row["conversion_value"],
                 _num(row["incremental_conversions"]), _num(row["incremental_value"]), row["not_held_out"],
                 itt)  # fmt: skip
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
        if row["note"]:
            notes.append(f"- {row['offer']} / {row['channel']} / {row['segment']}: {row['note']}")
    return [*out, "", *notes] if notes else out


def _ci(u: dict[str, Any]) -> str:
    """An uplift and its interval, bold when the interval excludes zero."""
    if u["uplift"] is None:
        return "-"
    text = f"{_pct(u['uplift'])} [{_pct(u['low'])}, {_pct(u['high'])}]"
    return f"**{text}**" if u["excludes_zero"] else text


def _off_policy(o: dict[str, Any]) -> list[str]:
    def line(name: str, e: dict[str, Any]) -> str:
        return f"| {name} | {_num(e['estimate'], 4)} | [{_num(e['low'], 4)}, {_num(e['high'], 4)}] |"

    return [
        f"## Off-policy: exploration share {o['target_epsilon']:g} instead of "
        f"{', '.join(f'{e:g}' for e in o['logged_epsilon']) or '-'}",
        "",
        *([f"**Warning: {o['warning']}.**", ""] if o["warning"] else []),
        f"Rests on {o['decisions']} decisions ({o['weighted']} with a non-zero weight, effective sample size "
        f"{o['ess']:g}); {o['excluded']} left out (a contact cap hid the ranking's first choice). "
        f"Reward: {o['reward']}.",
        "",
        "| conversions per decision | estimate | 95% interval |",
        "|---|---|---|",
        line("as logged", o["logged"]),
        line("other setting, inverse propensity", o["ips"]),
        line("other setting, self-normalised", o["snips"]),
        line("value per decision, other setting", o["value"]),
    ]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{round(100 * x, 1) + 0.0:.1f}%"  # + 0.0: no "-0.0%"


def _num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) + " UTC"
