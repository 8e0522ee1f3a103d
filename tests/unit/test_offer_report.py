"""Issue 18, item 1 without I/O: the conversion event, the statistics (hand-checked small
cases), the offer report's counting rules, and the planted month found by the pure report."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from engine.cli.main import main
from engine.decide.offerreport import ReportOptions, offer_report
from engine.decide.pipeline import acknowledge
from engine.decide.uplift import newcombe, off_policy, wilson
from engine.domain.events import Event, audited, parse_event
from engine.domain.labels import is_label_event, label_of
from engine.domain.periods import parse_time
from engine.errors import BeaconError, EventError
from engine.http.reports import offer_report_reply, report_options
from engine.service.auditlog import read_audit_file
from engine.settings import Settings
from tests.offermonth import GOLD, LOAN, as_jsonl, month_of_audit
from tests.unit.rulefixture import fixture_rules

NOW = 1_795_428_000.0
DAY = 86400.0
S = Settings()


# -- the conversion event -----------------------------------------------------------


def conversion(**attributes: Any) -> bytes:
    return orjson.dumps({"event_id": "cv-1", "customer_id": "C1", "channel": "branch", "type": "conversion",
                         "ts": NOW - 5, "amount": 2500, "currency": "GBP", "attributes": attributes})  # fmt: skip


def test_a_conversion_names_its_product() -> None:
    ev = parse_event(conversion(product="personal_loan_preapproved"), S, NOW)
    assert ev.type == "conversion" and ev.attributes["product"] == "personal_loan_preapproved"
    assert ev.amount == 2500.0 and ev.currency == "GBP"


@pytest.mark.parametrize(
    ("attributes", "code"),
    [({}, "missing_field"), ({"product": None}, "missing_field"), ({"product": 7}, "wrong_type"),
     ({"product": ""}, "invalid_value"), ({"product": "x" * 65}, "invalid_value"),
     ({"product": "gold card"}, "invalid_value"), ({"product": "gold\n"}, "invalid_value")],
)  # fmt: skip
def test_a_bad_conversion_is_refused_with_a_code_and_the_field(attributes: dict[str, Any], code: str) -> None:
    with pytest.raises(EventError) as info:
        parse_event(conversion(**attributes), S, NOW)
    assert (info.value.code, info.value.field) == (code, "attributes.product")


def test_a_conversion_is_acknowledged_and_audited_with_its_product_only() -> None:
    ev = Event("cv", "C1", "branch", "conversion", NOW, amount=10.0,
               attributes={"product": "gold", "branch_code": "LON1", "ssn": "x"})  # fmt: skip
    assert is_label_event(ev) and label_of(ev) is None  # feedback for reports, no model label
    record = acknowledge(ev, fixture_rules()).audit_view()
    assert record["feedback"] is True and record["features"] is None
    assert record["event"]["attributes"] == {"product": "gold"} and record["event"]["amount"] == 10.0
    # Another type's "product" attribute is not kept unless a rule or model reads it.
    other = Event("pv", "C1", "mobile", "product_view", NOW, attributes={"product": "gold"})
    assert "attributes" not in audited(other, frozenset())


# -- statistics ---------------------------------------------------------------------


def test_wilson_and_newcombe_by_hand() -> None:
    # Newcombe (1998), table II: 56/70 vs 48/80 -> 0.0524 to 0.3339; Wilson 81/263 -> 0.2553 to 0.3662.
    assert [round(x, 4) for x in wilson(81, 263)] == [0.2553, 0.3662]
    d = newcombe(56, 70, 48, 80)
    assert (round(d.diff, 4), round(d.low, 4), round(d.high, 4)) == (0.2, 0.0524, 0.3339)  # type: ignore[arg-type]
    # Same rates: the interval straddles zero, symmetric; none held out: no uplift at all.
    same = newcombe(10, 100, 10, 100)
    assert same.diff == 0.0 and not same.excludes_zero and round(same.low + same.high, 9) == 0  # type: ignore[operator]
    assert newcombe(3, 10, 0, 0).to_dict() == {
        "uplift": None,
        "low": None,
        "high": None,
        "excludes_zero": False,
    }


def test_off_policy_weights_by_hand() -> None:
    # weights 2, 2, 0, 0; rewards 1, 0, 1, 0: IPS (2+0+0+0)/4, SNIPS 2/4, ESS 4^2/8.
    est = off_policy([(2.0, 1.0), (2.0, 0.0), (0.0, 1.0), (0.0, 0.0)])
    assert (est["ips"]["estimate"], est["snips"]["estimate"], est["ess"]) == (0.5, 0.5, 2.0)
    assert est["logged"]["estimate"] == 0.5 and "4 decisions" in est["warning"]
    many = off_policy([(1.0, float(i % 4 == 0)) for i in range(2000)])
    assert many["warning"] is None and many["ips"]["estimate"] == many["snips"]["estimate"] == 0.25
    assert many["ips"]["low"] < 0.25 < many["ips"]["high"]
    few_weighted = off_policy([(5.0 if i < 50 else 0.0, 1.0) for i in range(2000)])
    assert "only 50 of 2000" in few_weighted["warning"]


# -- the report's counting rules ----------------------------------------------------


def decision(did: str, cust: str, ts: float, shown: tuple[str, ...] = (), held: tuple[str, ...] = (),
             p_first: dict[str, float] | None = None, capped: tuple[str, ...] = (),
             channel: str = "mobile", segment: str = "mass") -> dict[str, Any]:  # fmt: skip
    dropped = [{"id": o, "stage": "control_group"} for o in held]
    dropped += [{"id": o, "stage": "contact_policy"} for o in capped]
    dropped += [{"id": "other", "stage": "eligibility"}]  # not eligible: not counted anywhere
    return {"decision_id": did, "customer_id": cust, "channel": channel, "event": {"ts": ts, "type": "login"},
            "features": {"segment": segment}, "actions": [{"id": o, "kind": "offer"} for o in shown],
            "explain": {"dropped": dropped, "arbitration": {"epsilon": 0.1, "p_first": p_first or {}}}}  # fmt: skip


def label(did: str, cust: str, ts: float, etype: str, **attrs: Any) -> dict[str, Any]:
    event = {
        "ts": ts,
        "type": etype,
        "attributes": attrs,
        **({"amount": 50.0} if etype == "conversion" else {}),
    }
    return {"decision_id": did, "customer_id": cust, "channel": "branch", "feedback": True, "event": event}


OPTS = ReportOptions(since=0.0, until=10 * DAY, attribution_s=5 * DAY, response_window_s=1 * DAY)


def test_responses_ignored_after_the_window_and_pending_within_it() -> None:
    recs = [decision("d1", "C1", 1 * DAY, shown=("gold",)), decision("d2", "C2", 1 * DAY, shown=("gold",)),
            decision("d3", "C3", 1 * DAY, shown=("gold",)), decision("d4", "C4", 9.5 * DAY, shown=("gold",)),
            label("r1", "C1", 1.1 * DAY, "offer_response", decision_id="d1", action_id="gold", response="accepted"),
            label("r2", "C2", 1.1 * DAY, "offer_response", decision_id="d2", action_id="gold", response="declined"),
            decision("d9", "C9", 9.9 * DAY)]  # fmt: skip
    row = offer_report(recs, OPTS)["totals"][0]
    assert row["impressions"] == 4 and row["shown_customers"] == 4
    assert row["responses"] == {
        "accepted": 1,
        "clicked": 0,
        "declined": 1,
        "ignored": 1,
        "pending": 1,
        "other": 0,
    }


def test_conversions_count_within_the_window_after_the_first_exposure_only() -> None:
    recs = [decision("d1", "C1", 1 * DAY, shown=("gold",)), decision("d2", "C2", 1 * DAY, shown=("gold",)),
            decision("d3", "C3", 1 * DAY, shown=("gold",)), decision("d4", "C4", 1 * DAY, held=("gold",)),
            decision("d5", "C5", 1 * DAY, held=("gold",)),
            label("c1", "C1", 6 * DAY, "conversion", product="gold"),  # exactly at the window's end: counts
            label("c2", "C2", 6.01 * DAY, "conversion", product="gold"),  # after it: does not
            label("c3", "C3", 0.5 * DAY, "conversion", product="gold"),  # before the offer: does not
            label("c4", "C4", 2 * DAY, "conversion", product="GOLD-CARD"),  # a product code, mapped below
            label("c5", "C5", 2 * DAY, "conversion", product="loan")]  # another product  # fmt: skip
    row = offer_report(recs, OPTS)["totals"][0]
    assert (row["eligible_customers"], row["shown_customers"], row["held_out"]) == (5, 3, 2)
    assert (row["conversions_shown"], row["conversions_control"], row["conversion_value"]) == (1, 0, 50.0)
    mapped = offer_report(recs, replace(OPTS, products={"GOLD-CARD": ("gold",)}))
    assert mapped["totals"][0]["conversions_control"] == 1 and mapped["totals"][0]["rate_control"] == 0.5
    # The offer's own window (the pack's `attribution:`) overrides the setting's.
    longer = offer_report(recs, replace(OPTS, windows={"gold": 5.02 * DAY}))
    assert longer["totals"][0]["conversions_shown"] == 2
    assert "too few to measure uplift" in row["note"]
    # Intention to treat: an eligible customer not shown (ranked out) joins the not-held-out arm.
    ranked_out = {"decision_id": "d6", "customer_id": "C6", "channel": "mobile", "event": {"ts": 1 * DAY},
                  "features": {"segment": "mass"}, "actions": [],
                  "explain": {"dropped": [{"id": "gold", "stage": "rank"}]}}  # fmt: skip
    itt = offer_report([*recs, ranked_out], OPTS)["totals"][0]
    assert (itt["eligible_customers"], itt["not_held_out"], itt["conversions_not_held_out"]) == (6, 4, 1)
    assert itt["rate_not_held_out"] == 0.25 and itt["uplift_itt"]["uplift"] == 0.25


def test_a_decision_counts_once_and_filters_and_cells_split_it() -> None:
    d1 = decision("d1", "C1", 1 * DAY, shown=("gold",), channel="atm", segment="young")
    recs = [d1, d1, decision("d2", "C2", 1 * DAY, held=("gold",)), decision("d3", "C1", 2 * DAY, shown=("gold",)),
            decision("late", "C3", 11 * DAY, shown=("gold",))]  # fmt: skip
    report = offer_report(recs, OPTS)
    assert report["records"]["decisions"] == 3  # the repeat and the decision after the period are not
    cells = {(r["channel"], r["segment"]): r["eligible_customers"] for r in report["rows"]}
    assert cells == {("atm", "young"): 1, ("mobile", "mass"): 2}
    assert report["totals"][0]["eligible_customers"] == 2  # C1 in two cells is one customer of the offer
    only = offer_report(recs, replace(OPTS, channel="atm"))
    assert [r["channel"] for r in only["rows"]] == ["atm"]


def test_the_off_policy_part_weighs_the_logged_first_choice() -> None:
    greedy_hit = decision("d1", "C1", 1 * DAY, shown=("a", "b"), p_first={"a": 0.95, "b": 0.05})
    explored = decision("d2", "C2", 1 * DAY, shown=("b", "a"), p_first={"a": 0.95, "b": 0.05})
    capped = decision("d3", "C3", 1 * DAY, shown=("b",), p_first={"a": 0.95, "b": 0.05}, capped=("a",))
    recs = [greedy_hit, explored, capped, label("c1", "C1", 2 * DAY, "conversion", product="a")]
    est = offer_report(recs, OPTS)["off_policy"]
    assert (est["decisions"], est["weighted"], est["excluded"], est["logged_epsilon"]) == (2, 1, 1, [0.1])
    # greedy target: weight 1/0.95 on d1 (converted), 0 on d2 (explored b): IPS (1/0.95)/2, SNIPS 1.
    assert est["ips"]["estimate"] == round(1 / 0.95 / 2, 6) and est["snips"]["estimate"] == 1.0
    assert est["warning"].startswith("rests on only 2 decisions")


def test_the_planted_month_is_found_by_the_pure_report() -> None:
    start = 1_790_000_000.0
    report = offer_report(month_of_audit(start), ReportOptions(since=start, until=start + 30 * DAY))
    totals = {r["offer"]: r for r in report["totals"]}
    gold, loan = totals[GOLD]["uplift"], totals[LOAN]["uplift"]
    assert gold["excludes_zero"] and gold["low"] > 0 and 0.05 < gold["uplift"] < 0.15
    assert not loan["excludes_zero"] and loan["low"] < 0 < loan["high"]
    assert totals[GOLD]["held_out"] > 1000 and totals[GOLD]["shown_customers"] > 1000


# -- options, files, the command ----------------------------------------------------


def test_report_options_refuse_bad_periods() -> None:
    assert parse_time("2026-11-23", "since") == 1795392000.0
    for query, field_name in (({"since": "2026-11-02", "until": "2026-11-01"}, "since"),
                              ({"since": "2026-01-01", "until": "2026-11-01"}, "since"),
                              ({"since": "soon"}, "since"), ({"target_epsilon": "2"}, "target_epsilon")):  # fmt: skip
        with pytest.raises(EventError) as info:
            report_options(query, S, NOW)
        assert info.value.code == "invalid_value" and info.value.field == field_name
    opts = report_options({"since": "2026-11-01", "channel": "atm"}, S, NOW)
    assert opts.until == NOW and opts.channel == "atm" and opts.attribution_s == S.offer_attribution_s


def test_an_export_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"decision_id": "d1"}\n\n[1]\n')
    with pytest.raises(BeaconError, match=r"audit\.jsonl:3"):
        list(read_audit_file(path))


def test_beacon_report_offers_reads_an_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    start = 1_790_000_000.0
    path = tmp_path / "audit.jsonl"
    path.write_bytes(as_jsonl(month_of_audit(start, customers=300)))
    args = ["report", "offers", "--since", str(start), "--until", str(start + 30 * DAY), "--file", str(path)]
    assert main([*args, "--format", "json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    assert {r["offer"] for r in report["totals"]} >= {GOLD, LOAN}
    assert report["off_policy"]["warning"] is not None  # a few hundred decisions: too few to trust
    assert main([*args, "--segment", "young"]) == 0
    text = capsys.readouterr().out
    assert (
        text.startswith("# Offer performance and uplift") and "| credit_card_gold | mobile | young |" in text
    )
    assert "Warning: rests on only" in text and "| mass |" not in text
    assert main([*args, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("offer,channel,segment,eligible_customers") and len(lines) == 1 + 2 + 12


async def test_one_report_at_a_time_per_worker() -> None:
    gate = asyncio.Event()

    async def slow(settings: Settings, since: float, until: float | None) -> AsyncIterator[dict[str, Any]]:
        await gate.wait()
        yield decision("d1", "C1", since + 1, shown=("gold",))

    async def broken(settings: Settings, since: float, until: float | None) -> AsyncIterator[dict[str, Any]]:
        raise OSError("broker away")
        yield {}

    first = asyncio.create_task(offer_report_reply({}, S, slow))
    await asyncio.sleep(0)
    busy = await offer_report_reply({}, S, slow)
    assert busy.status == 429 and orjson.loads(busy.body)["error"]["code"] == "report_running"
    assert busy.headers["Retry-After"] == "10"
    gate.set()
    done = await first
    assert done.status == 200 and orjson.loads(done.body)["totals"][0]["shown_customers"] == 1
    away = await offer_report_reply({}, S, broken)
    assert away.status == 503 and orjson.loads(away.body)["error"]["code"] == "audit_unavailable"
    assert (await offer_report_reply({"since": "x"}, S, slow)).status == 400


def test_conversions_are_counted_by_offer_with_bounded_labels() -> None:
    from engine.service.metrics import Metrics

    m = Metrics(process=False)
    m.rules_version("v1", frozenset({"credit_card_gold"}))
    for product in ("credit_card_gold", "credit_card_gold", "made-up-by-a-client"):
        ev = Event(f"cv-{product}", "C1", "branch", "conversion", NOW, attributes={"product": product})
        m.observe_decision("http", acknowledge(ev, fixture_rules()), None)
    sample = m.registry.get_sample_value
    assert sample("beacon_conversions_total", {"offer": "credit_card_gold", "channel": "branch"}) == 2.0
    assert sample("beacon_conversions_total", {"offer": "other", "channel": "branch"}) == 1.0
    assert sample("beacon_decisions_total", {"path": "http", "channel": "branch", "verdict": "allow",
                                             "action": "feedback"}) == 3.0  # fmt: skip


def test_the_pack_names_each_offers_products_and_attribution_window() -> None:
    from engine.decide.offerreport import from_pack
    from engine.decide.rulebook import load
    from engine.rules.checks import RulePackError
    from engine.rules.pack import read_bundle

    files = read_bundle(S.rules_path())
    rules = load(files, frozenset(S.channels), "t").rules
    pack = from_pack(rules.offers)
    assert pack["products"]["credit_card"] == ("credit_card_gold",) and pack["windows"] == {
        "mortgage_review": 90 * DAY
    }
    recs = [decision("d1", "C1", 1 * DAY, shown=("credit_card_gold",)),
            label("c1", "C1", 2 * DAY, "conversion", product="credit_card")]  # fmt: skip
    row = offer_report(recs, replace(OPTS, **pack))["totals"][0]
    assert row["conversions_shown"] == 1 and row["incremental_value"] is None  # nobody held out
    bad = files["offers.yaml"].replace("products: [credit_card]", "products: [credit card]")
    with pytest.raises(RulePackError, match="products"):
        load({**files, "offers.yaml": bad}, frozenset(S.channels), "t")


def test_a_conversion_without_state_is_acknowledged_too() -> None:
    from engine.decide.degraded import decide_without_state
    from engine.decide.pipeline import DecisionPolicy
    from engine.domain.scoring import BuiltinScorer

    ev = Event("cv", "C1", "branch", "conversion", NOW, attributes={"product": "gold"})
    d = decide_without_state(ev, fixture_rules(), BuiltinScorer(), DecisionPolicy())
    assert d.degraded and d.feedback and d.audit_view()["event"]["attributes"] == {"product": "gold"}
