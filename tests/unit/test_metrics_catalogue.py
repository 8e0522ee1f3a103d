"""docs/metrics.md and the metric objects stay in step; labels stay bounded; a decision
is counted the way the catalogue says; logs are JSON with correlation ids only."""

from __future__ import annotations

import io
import logging
import logging.config
import re
from pathlib import Path

import orjson
import pytest

from engine.decide.pipeline import DecisionPolicy, decide
from engine.domain.events import Event
from engine.domain.labels import label_of
from engine.domain.scoring import BuiltinScorer
from engine.domain.state import Snapshot
from engine.errors import ConfigError
from engine.service import catalogue
from engine.service.logs import JsonFormatter, logging_config
from engine.service.metrics import Metrics
from tests.unit.rulefixture import fixture_rules

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
TS = 1_795_428_000.0
# Every label name a Beacon series may have; each takes values from configuration or a
# fixed list (docs/metrics.md says which). A new label must be argued for here.
BOUNDED_LABELS = {
    "path", "channel", "type", "outcome", "reason", "stage", "severity", "rule", "typology",
    "offer", "response", "verdict", "action", "model", "quantile", "topic", "partition",
    "component", "kind", "change", "by", "status", "disposition",
    "node", "role",  # the deployment's Redis nodes (host:port) and primary/replica/unknown
    "source",  # who sent a fraud label: engine.domain.labels.SOURCE_RANKS
    "receiver",  # an alert webhook receiver's name, from BEACON_ALERT_WEBHOOK_RECEIVERS
}  # fmt: skip
_SUFFIX = {"counter": "_total", "info": "_info"}


def documented() -> set[str]:
    return set(re.findall(r"^\| `([a-z_:]+)` \|", DOC.read_text(), flags=re.M))


def exported() -> set[str]:
    out = set()
    for kinds in catalogue.families().values():
        for name, kind in kinds.items():
            if not name.startswith(("process_", "python_")):
                out.add(name + _SUFFIX.get(kind, ""))
    return out


def test_every_series_is_documented_and_every_documented_series_exists() -> None:
    assert exported() - documented() == set(), "add these to docs/metrics.md"
    assert documented() - exported() == set(), "docs/metrics.md names series nothing exports"


def test_documented_labels_match_the_code() -> None:
    rows = re.findall(r"^\| `([a-z_:]+)` \| (\w+) \| ([a-z_, ]*) \|", DOC.read_text(), flags=re.M)
    labels = catalogue.label_names()
    for series, kind, names in rows:
        family = series.removesuffix(_SUFFIX.get(kind, ""))
        assert tuple(n.strip() for n in names.split(",") if n.strip()) == labels[family], series


def test_no_label_can_carry_an_unbounded_value() -> None:
    used = {name for names in catalogue.label_names().values() for name in names}
    assert used <= BOUNDED_LABELS, used - BOUNDED_LABELS


def test_a_decision_is_counted_by_verdict_action_rule_and_offer() -> None:
    m = Metrics(process=False)
    rules = fixture_rules()
    m.rules_version(rules.version, frozenset(rules.offer_ids))
    event = Event("e1", "c1", "atm", "pin_failure", TS)
    d = decide(event, Snapshot(windows={}, pin_failures_1h=3), rules, BuiltinScorer(), DecisionPolicy())
    m.observe_decision("kafka", d, label_of(event))
    shown = d.actions or ((d.fallback,) if d.fallback else ())
    kind = shown[0].kind
    labels = {"path": "kafka", "channel": "atm", "verdict": "block", "action": kind}
    assert m.registry.get_sample_value("beacon_decisions_total", labels) == 1.0
    fire = {"rule": "pin_bruteforce", "severity": "high"}
    assert m.registry.get_sample_value("beacon_rule_fires_total", fire) == 1.0
    alert = {"severity": "high", "rule": "pin_bruteforce", "typology": "none"}
    assert m.registry.get_sample_value("beacon_alerts_total", alert) == 1.0


def test_offer_responses_take_label_values_from_the_rule_pack_only() -> None:
    m = Metrics(process=False)
    rules = fixture_rules()
    m.rules_version(rules.version, frozenset(rules.offer_ids))
    known = rules.offer_ids[0]
    for i, (action, response) in enumerate(
        [(known, "accepted"), ("x" * 40, "accepted"), (known, "<script>"), (known, "declined")]
    ):
        attrs = {"decision_id": f"d{i}", "action_id": action, "response": response}
        event = Event(f"r{i}", "c1", "mobile", "offer_response", TS, attributes=attrs)
        decision = decide(event, Snapshot(windows={}), rules, BuiltinScorer(), DecisionPolicy())
        m.observe_decision("http", decision, label_of(event))
    # The acknowledgements are counted as such, not as fallbacks shown (before: "fallback").
    ack = {"path": "http", "channel": "mobile", "verdict": "allow", "action": "feedback"}
    assert m.registry.get_sample_value("beacon_decisions_total", ack) == 4.0
    fallback = {**ack, "action": "fallback"}
    assert m.registry.get_sample_value("beacon_decisions_total", fallback) is None
    got = {
        (s.labels["offer"], s.labels["response"]): s.value
        for f in m.registry.collect()
        if f.name == "beacon_offer_responses"
        for s in f.samples
        if s.name.endswith("_total")
    }
    assert got == {
        (known, "accepted"): 1,
        ("unknown", "accepted"): 1,
        (known, "other"): 1,
        (known, "declined"): 1,
    }


def test_json_logs_carry_correlation_ids_and_nothing_else_of_the_customer() -> None:
    out = io.StringIO()
    logger = logging.getLogger("beacon.test.json")
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise ValueError("boom")
    except ValueError:
        extra = {"event_id": "e9", "decision_id": "d9", "customer_id": "c9", "amount": 5000, "device": "x"}
        logger.exception("decision for event %s failed", "e9", extra=extra)
    doc = orjson.loads(out.getvalue())
    assert doc["event_id"] == "e9" and doc["decision_id"] == "d9" and doc["customer_id"] == "c9"
    assert doc["level"] == "error" and "ValueError: boom" in doc["exception"]
    assert "amount" not in doc and "device" not in doc


def test_logging_config_is_valid_for_both_formats_and_refuses_others() -> None:
    json_config, text_config = logging_config("warning", "json"), logging_config("debug", "text")
    assert json_config["formatters"]["beacon"]["()"] is JsonFormatter
    assert "%(message)s" in text_config["formatters"]["beacon"]["format"]
    assert (json_config["root"]["level"], text_config["root"]["level"]) == ("WARNING", "DEBUG")
    # The process's own logging is left alone: a dictConfig here would drop pytest's handlers.
    configurator = logging.config.DictConfigurator(json_config)
    assert isinstance(
        configurator.configure_formatter(dict(json_config["formatters"]["beacon"])), JsonFormatter
    )
    with pytest.raises(ConfigError):
        logging_config("info", "xml")
