"""Prometheus rules, scrape config and Alertmanager config, checked against Beacon itself.

promtool and amtool (Debian's ``prometheus`` and ``prometheus-alertmanager`` packages,
installed by ``make prometheus``) validate the files and run the promtool unit tests in
config/prometheus/tests. Then every series a rule reads must be one Beacon exports
(engine/service/catalogue.py) or a recording rule defined here, with the labels it groups and
matches by; every alert must carry a severity Alertmanager routes, a summary, a
description and a runbook hint, and must have a promtool case where it fires and one where
it does not. A missing tool fails these tests rather than skipping them: a skipped check
of the alerts is an unchecked pager.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.service import catalogue

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "config" / "prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))
PROMETHEUS_YML = PROM_DIR / "prometheus.yml"
# docker-compose.yml mounts prometheus.yml, docker-compose.prod.yml prometheus.prod.yml.
PROMETHEUS_YMLS = sorted(PROM_DIR.glob("prometheus*.yml"))
ALERTMANAGER_YML = ROOT / "config" / "alertmanager" / "alertmanager.yml"
# Paths that exist only inside the container (docker-compose mounts them).
CONTAINER_TOKEN = "/run/secrets/beacon_metrics_token"
CONTAINER_RULES = "/etc/prometheus/rules/"

SEVERITIES = {"page", "ticket"}
# Series Prometheus makes itself for every target, with the labels it attaches.
SYNTHETIC = {"up": (), "scrape_duration_seconds": (), "scrape_samples_scraped": ()}
# Labels every scraped series has (target labels), and the bucket label of histograms.
ALWAYS = {"job", "instance"}
# prometheus_client's sample suffixes, longest first; the family name is what is left.
SUFFIXES = ("_bucket", "_count", "_created", "_total", "_info", "_sum")
JOBS = {"beacon": "worker", "beacon-trainer": "trainer"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run `make prometheus` (Debian's prometheus packages)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


# ---- the rule files ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    name: str  # the alert or the recorded series
    expr: str
    alert: bool
    raw: dict[str, Any]


@cache
def rules() -> tuple[Rule, ...]:
    out: list[Rule] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for r in group["rules"]:
                name = r.get("alert") or r["record"]
                out.append(Rule(name, r["expr"], "alert" in r, r))
    return tuple(out)


def alerts() -> list[Rule]:
    return [r for r in rules() if r.alert]


def recordings() -> list[Rule]:
    return [r for r in rules() if not r.alert]


@cache
def unit_tests() -> tuple[dict[str, Any], ...]:
    return tuple(t for path in TEST_FILES for t in yaml.safe_load(path.read_text())["tests"])


# ---- a small PromQL reader -----------------------------------------------------------------
# Not a parser: enough to list the series and labels an expression names. promtool has
# already checked the syntax; this only has to find identifiers reliably.

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_OFFSET = re.compile(r"\boffset\s+-?[\dsmhdwy]+")
_NUMBER = re.compile(r"(?<![\w:])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*(?![\w:])")
_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "atan2", "inf", "nan",
}  # fmt: skip


def _strip_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched on it) for every selector with matchers."""
    found = []
    for m in _SELECTOR.finditer(_strip_strings(expr)):
        if m.group(1) and m.group(1) not in _KEYWORDS:
            found.append((m.group(1), set(_MATCHER_LABEL.findall(m.group(2)))))
    return found


def matched_values(expr: str, metric: str, label: str) -> set[str]:
    """Values an equality matcher gives ``label`` on ``metric``, e.g. job="beacon"."""
    pattern = re.compile(re.escape(metric) + r"\s*\{([^}]*)\}")
    values = set()
    for m in pattern.finditer(expr):
        values.update(re.findall(rf"\b{label}\s*=\s*[\"']([^\"']*)[\"']", m.group(1)))
    return values


def _label_list(text: str) -> set[str]:
    return {x.strip() for x in text.split(",") if x.strip()}


def groupings(expr: str) -> list[tuple[str, set[str]]]:
    """(keyword, labels) of every by/without/on/ignoring/group_left/group_right (...)."""
    text = _SELECTOR.sub(lambda m: m.group(1) or "", _strip_strings(expr))
    return [(keyword, _label_list(labels)) for keyword, labels in _GROUPING.findall(text)]


def _bare(expr: str) -> str:
    """The expression without strings, matchers, groupings, ranges, offsets and numbers."""
    text = _strip_strings(expr)
    text = _SELECTOR.sub(lambda m: m.group(1) or "", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    return _NUMBER.sub(" ", text)


def series_names(expr: str) -> set[str]:
    """Metric names an expression reads: identifiers that are not functions or keywords."""
    text = _bare(expr)
    names = set()
    for m in _IDENTIFIER.finditer(text):
        word = m.group(0)
        if word.lower() in _KEYWORDS or re.match(r"\s*\(", text[m.end() :]):
            continue  # keyword, or a function / aggregation call
        names.add(word)
    return names


def _balanced(text: str, start: int) -> str:
    """The text of the parenthesised group that opens at ``text[start]``."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1]
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def _balanced_before(text: str, end: int) -> str:
    """The parenthesised group that closes at ``text[end]`` (a postfix ``by``)."""
    depth = 0
    for i in range(end, -1, -1):
        depth += {")": 1, "(": -1}.get(text[i], 0)
        if depth == 0:
            return text[i : end + 1]
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def aggregations(expr: str) -> list[tuple[set[str], str]]:
    """(labels of a by/without clause, the expression it aggregates), prefix or postfix form."""
    text = _strip_strings(expr)
    out = []
    for m in re.finditer(r"\b(?:by|without)\s*\(([^)]*)\)", text):
        rest = text[m.end() :]
        after = m.end() + len(rest) - len(rest.lstrip())
        if rest.strip().startswith("("):  # sum by (x) (expr)
            out.append((_label_list(m.group(1)), _balanced(text, after)))
        else:  # sum(expr) by (x)
            before = text[: m.start()].rstrip()
            out.append((_label_list(m.group(1)), _balanced_before(before, len(before) - 1)))
    return out


def test_the_reader_finds_series_and_labels() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (path, le) (rate(beacon_x_bucket{job="beacon", le="0.05"}[5m])))'
        ' / on (path) group_left sum(rate(beacon_y_total{a=~"b|c}"}[1h] offset 1d)) by (path)'
        " > 1e3 and on () (sum(up{job='beacon'}) > 0) or vector(0) - time() > 2.5"
    )
    assert series_names(expr) == {"beacon_x_bucket", "beacon_y_total", "up"}
    assert ("beacon_x_bucket", {"job", "le"}) in selectors(expr)
    assert ("beacon_y_total", {"a"}) in selectors(expr)
    assert ("on", {"path"}) in groupings(expr) and ("on", set()) in groupings(expr)
    assert [(labels, series_names(arg)) for labels, arg in aggregations(expr)] == [
        ({"path", "le"}, {"beacon_x_bucket"}),
        ({"path"}, {"beacon_y_total"}),
    ]
    assert matched_values(expr, "beacon_x_bucket", "job") == {"beacon"}


# ---- what Beacon exports ---------------------------------------------------------------------


# The catalogue builds fresh registries on each call; the rules ask it hundreds of times.
exported_labels = cache(catalogue.label_names)
exported_samples = cache(catalogue.sample_names)
exported_families = cache(catalogue.families)


def family(sample: str) -> str:
    for suffix in SUFFIXES:
        if sample.endswith(suffix) and sample[: -len(suffix)] in exported_labels():
            return sample[: -len(suffix)]
    return sample


@cache
def recorded_labels() -> dict[str, frozenset[str]]:
    """Labels each recording rule's series can carry: those it aggregates by, or, when it
    does not aggregate, those of the series it reads (an upper bound, good enough to
    catch a label that cannot be there). Built in file order: a rule reads earlier ones."""
    out: dict[str, frozenset[str]] = {}
    for rule in recordings():
        grouped = {label for kw, labels in groupings(rule.expr) if kw == "by" for label in labels}
        read = set().union(*(labels_of(n, out) for n in series_names(rule.expr)))
        out[rule.name] = frozenset(grouped or read)
    return out


def labels_of(name: str, recorded: dict[str, frozenset[str]] | None = None) -> set[str]:
    """Labels a series can carry: its own, the target's, ``le`` on buckets."""
    recorded = recorded_labels() if recorded is None else recorded
    if name in SYNTHETIC:
        return set(ALWAYS)
    if name in recorded:
        return set(recorded[name]) | ALWAYS
    own = set(exported_labels().get(family(name), ()))
    return own | ALWAYS | ({"le"} if name.endswith("_bucket") else set())


def known(name: str) -> bool:
    return name in exported_samples() or name in SYNTHETIC or name in {r.name for r in recordings()}


# ---- tools -------------------------------------------------------------------------------------


def test_promtool_accepts_the_rule_files() -> None:
    result = run(tool("promtool"), "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    assert TEST_FILES, "no promtool unit tests in config/prometheus/tests"
    result = run(tool("promtool"), "test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("config", PROMETHEUS_YMLS, ids=[p.name for p in PROMETHEUS_YMLS])
def test_promtool_accepts_the_scrape_config(config: Path, tmp_path: Path) -> None:
    """promtool opens the credentials file and expands the rule_files glob; both paths
    exist only in the container, so check a copy with just those two pointed here."""
    token = tmp_path / "token"
    token.write_text("placeholder\n")
    text = config.read_text()
    assert CONTAINER_TOKEN in text and CONTAINER_RULES in text
    copy = tmp_path / "prometheus.yml"
    copy.write_text(
        text.replace(CONTAINER_TOKEN, str(token)).replace(CONTAINER_RULES, f"{PROM_DIR / 'rules'}/")
    )
    result = run(tool("promtool"), "check", "config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = run(tool("amtool"), "check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("severity", sorted(SEVERITIES))
def test_each_severity_reaches_its_own_receiver(severity: str) -> None:
    result = run(
        tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}",
        f"severity={severity}", "alertname=BeaconWorkerDown", "job=beacon",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [severity]


# ---- the scrape config ------------------------------------------------------------------------


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_scrape_config_has_the_jobs_the_rules_name() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = scrape_jobs()
    assert set(jobs) == {"beacon", "beacon-trainer", "prometheus", "alertmanager"}
    assert jobs["beacon"]["authorization"] == {"type": "Bearer", "credentials_file": CONTAINER_TOKEN}
    assert "authorization" not in jobs["beacon-trainer"]
    assert config["rule_files"] == [CONTAINER_RULES + "*.yml"]
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    named = {
        job for r in rules() for name in series_names(r.expr) for job in matched_values(r.expr, name, "job")
    }
    assert named <= set(jobs), f"rules name jobs that are not scraped: {named - set(jobs)}"


# ---- the rules against Beacon's metrics -------------------------------------------------------


def unknown_series(rule: Rule) -> list[str]:
    return [f"{rule.name} reads {n}, which nothing exports" for n in series_names(rule.expr) if not known(n)]


def unknown_labels(rule: Rule) -> list[str]:
    """Labels matched on a series, aggregated by, or joined on that the series lack."""
    problems = []
    for metric, labels in selectors(rule.expr):
        problems += [f"{rule.name}: {metric} has no label {x}" for x in labels - labels_of(metric)]
    for labels, argument in aggregations(rule.expr):
        available = set().union(*(labels_of(n) for n in series_names(argument)))
        problems += [f"{rule.name}: by ({x}) is on none of {argument}" for x in labels - available]
    everything = set().union(*(labels_of(n) for n in series_names(rule.expr)))
    for keyword, labels in groupings(rule.expr):
        problems += [f"{rule.name}: {keyword} ({x}) is on no series" for x in labels - everything]
    return problems


def wrong_jobs(rule: Rule) -> list[str]:
    """job="beacon" on a trainer-only series (or the reverse) would never match."""
    problems = []
    for name in series_names(rule.expr):
        if name in recorded_labels() or name in SYNTHETIC:
            continue
        for job in matched_values(rule.expr, name, "job") & set(JOBS):
            if family(name) not in exported_families()[JOBS[job]]:
                problems.append(f"{rule.name}: job {job} does not export {name}")
    return problems


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r.name)
def test_rule_reads_only_series_beacon_exports(rule: Rule) -> None:
    assert unknown_series(rule) == []


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r.name)
def test_rule_groups_and_matches_by_labels_the_series_have(rule: Rule) -> None:
    assert unknown_labels(rule) == []


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r.name)
def test_rule_reads_each_series_from_the_process_that_exports_it(rule: Rule) -> None:
    assert wrong_jobs(rule) == []


def test_the_checks_catch_wrong_names_labels_and_jobs() -> None:
    """The checks above find something when there is something to find."""
    bad = Rule(
        "Bad",
        'sum by (channel) (rate(beacon_decision_latency_seconds_count{job="beacon"}[5m]))'
        ' / on (verdict) beacon_events_totl + beacon_model_roc_auc{job="beacon", modle="fraud"}',
        alert=True,
        raw={},
    )
    assert unknown_series(bad) == ["Bad reads beacon_events_totl, which nothing exports"]
    assert sorted(unknown_labels(bad)) == [
        "Bad: beacon_model_roc_auc has no label modle",
        "Bad: by (channel) is on no series",
        'Bad: by (channel) is on none of (rate(beacon_decision_latency_seconds_count{job=""}[5m]))',
        "Bad: on (verdict) is on no series",
    ]
    assert wrong_jobs(bad) == ["Bad: job beacon does not export beacon_model_roc_auc"]


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for rule in recordings():
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z0-9_]+", rule.name), rule.name


# ---- alerts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r.name)
def test_alert_has_severity_summary_description_and_runbook(rule: Rule) -> None:
    assert rule.name.startswith("Beacon")
    assert rule.raw.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.raw.get("annotations", {})
    for key in ("summary", "description", "runbook"):
        assert str(annotations.get(key, "")).strip(), f"{rule.name} has no {key}"


def test_alert_names_are_unique() -> None:
    names = [r.name for r in alerts()]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r.name)
def test_alert_has_a_firing_and_a_quiet_promtool_case(rule: Rule) -> None:
    cases = [c for t in unit_tests() for c in t.get("alert_rule_test", []) if c["alertname"] == rule.name]
    assert any(c.get("exp_alerts") for c in cases), f"no promtool case where {rule.name} fires"
    assert any(not c.get("exp_alerts") for c in cases), f"no promtool case where {rule.name} stays quiet"
    severity = rule.raw["labels"]["severity"]
    for case in cases:
        for expected in case.get("exp_alerts") or []:
            assert expected["exp_labels"].get("severity") == severity


@pytest.mark.parametrize("rule", recordings(), ids=lambda r: r.name)
def test_recording_rule_value_is_tested(rule: Rule) -> None:
    exprs = [e["expr"] for t in unit_tests() for e in t.get("promql_expr_test", [])]
    assert any(rule.name in series_names(e) for e in exprs), f"no promtool value test of {rule.name}"


def test_alertmanager_inhibitions_name_real_alerts() -> None:
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    named = {
        name
        for rule in config["inhibit_rules"]
        for matcher in rule["source_matchers"] + rule["target_matchers"]
        for name in re.findall(r"Beacon\w+", matcher)
    }
    assert named and named <= {r.name for r in alerts()}, named - {r.name for r in alerts()}
    urls = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert urls and all(u.startswith("http://alert-receiver:8080/") for u in urls)
