"""Grafana dashboards and provisioning (config/grafana), checked without Grafana.

A dashboard fails silently: a panel naming a series no process exports, grouping by a
label the series lacks, or using an undefined variable just shows "No data". So every
query is checked against what Beacon really exports (engine.service.catalogue), with a small
PromQL reader below, and every query is parsed by ``promtool`` (Debian's prometheus
package, which ``make test`` installs). Layout, datasource uids and the provisioning files
that load it all are checked too.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from engine.service import catalogue
from engine.service.metrics import Metrics
from models.metrics import ModelMetrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "config" / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "beacon.yml"
RULES_DIR = ROOT / "config" / "prometheus" / "rules"
COMPOSE_FILE = ROOT / "docker-compose.yml"

DATASOURCE_UID = "beacon-prometheus"
# Where docker-compose mounts config/grafana/dashboards inside the Grafana container.
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"
GRID_COLUMNS = 24
# Grafana 11.0's schema version; older dashboards are migrated on load, which rewrites
# panels in ways nobody reviewed.
MIN_SCHEMA_VERSION = 39
# Core panel types that render in Grafana 11 (Angular panels such as "graph" and
# "singlestat" were removed, and would show an error box instead of data).
PANEL_TYPES = {
    "row",
    "timeseries",
    "stat",
    "table",
    "gauge",
    "bargauge",
    "text",
    "heatmap",
    "histogram",
    "piechart",
    "barchart",
    "state-timeline",
    "status-history",
}
# Series Prometheus itself adds to every scrape target.
SYNTHETIC_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Grafana's built-in variables, with the values promtool sees in their place.
BUILTIN_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__rate_interval_ms": "60000",
    "__interval_ms": "60000",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
# Sample values for the dashboard's own variables when an expression goes to promtool;
# any other variable gets "sample" (they sit inside label matcher strings).
SAMPLE_VALUES = {"job": "beacon", "instance": "worker-1:6066", "channel": "atm", "path": "http"}


# ---- a small PromQL reader ----------------------------------------------------------------
#
# Not a parser (promtool decides what is valid): it finds the series an expression reads,
# the label matchers on each, and the aggregations with their grouping labels, which is
# all the checks against the catalogue need.

AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
    "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
    "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
    "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh",
    "time", "timestamp", "vector", "year",
    "start", "end",  # only after "@", as in "x @ end()"
}  # fmt: skip
GROUPING_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OTHER_KEYWORDS = {"and", "or", "unless", "atan2", "offset", "bool", "inf", "nan"}

# Grafana variables: $name, ${name}, ${name:format}, and the deprecated [[name]].
GRAFANA_VARIABLE = re.compile(
    r"\$([A-Za-z_]\w*)|\$\{([A-Za-z_]\w*)(?::[^}]*)?\}|\[\[([A-Za-z_]\w*)(?::[^\]]*)?\]\]"
)
_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\])
  | (?P<range>\[[^\]]*\])
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?![\w:]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][\w:]*)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<op>=~|!~|==|!=|<=|>=|[-+*/%^<>=@])
    """,
    re.VERBOSE,
)
_MATCHER = re.compile(
    r"""\s*(?P<label>[A-Za-z_]\w*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*(?:,|(?=\}))"""
)


@dataclass
class Token:
    kind: str
    text: str
    matchers: dict[str, str] = field(default_factory=dict)  # for a {...} block: label -> value


@dataclass
class Selector:
    metric: str
    matchers: dict[str, str]


@dataclass
class Aggregation:
    op: str
    clause: str | None  # "by", "without" or None
    labels: tuple[str, ...]
    start: int  # token span of the aggregation, its argument included
    end: int
    selectors: list[Selector]


@dataclass
class Query:
    selectors: list[Selector]
    aggregations: list[Aggregation]
    calls: list[tuple[str, int, int]]  # (function, first token, last token)


def _matcher_block(expr: str, start: int) -> tuple[int, dict[str, str]]:
    """Reads the ``{...}`` starting at ``start``; returns the index after it and its matchers."""
    matchers: dict[str, str] = {}
    pos = start + 1
    while True:
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
        if pos < len(expr) and expr[pos] == "}":
            return pos + 1, matchers
        found = _MATCHER.match(expr, pos)
        if not found:
            raise ValueError(f"cannot read label matchers at {pos}: {expr[start : start + 40]!r}")
        value = found["value"]
        matchers[found["label"]] = value[1:-1]
        pos = found.end()


def tokenize(expr: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(expr):
        if expr[pos] == "{":
            pos, matchers = _matcher_block(expr, pos)
            tokens.append(Token("matchers", "{}", matchers))
            continue
        found = _TOKEN.match(expr, pos)
        if not found or found.lastgroup is None:
            raise ValueError(f"cannot read {expr[pos : pos + 20]!r} at {pos} in {expr!r}")
        if found.lastgroup != "space":
            tokens.append(Token(found.lastgroup, found.group()))
        pos = found.end()
    return tokens


def _closing(tokens: list[Token], open_index: int) -> int:
    """The index of the ``)`` that closes the ``(`` at ``open_index``."""
    depth = 0
    for i in range(open_index, len(tokens)):
        if tokens[i].kind == "lparen":
            depth += 1
        elif tokens[i].kind == "rparen":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced parentheses")


def _is_word(token: Token, words: set[str]) -> bool:
    return token.kind == "ident" and token.text.lower() in words


def parse(expr: str) -> Query:
    """The series, aggregations and function calls of a PromQL expression."""
    tokens = tokenize(expr)
    selectors: list[tuple[int, Selector]] = []
    calls: list[tuple[str, int, int]] = []
    aggregation_heads: list[int] = []
    i = 0
    while i < len(tokens):
        token, following = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else None
        if _is_word(token, GROUPING_KEYWORDS):
            # A label list may hold keywords ("sum by (action, by)"): skip it whole.
            if following is not None and following.kind == "lparen":
                i = _closing(tokens, i + 1) + 1
                continue
        elif (
            _is_word(token, AGGREGATIONS)
            and following is not None
            and (following.kind == "lparen" or _is_word(following, {"by", "without"}))
        ):
            aggregation_heads.append(i)
        elif token.kind == "ident" and following is not None and following.kind == "lparen":
            if token.text not in FUNCTIONS:
                raise ValueError(f"unknown function {token.text!r} in {expr!r}")
            calls.append((token.text, i, _closing(tokens, i + 1)))
        elif token.kind == "ident" and token.text.lower() not in OTHER_KEYWORDS:
            matchers = following.matchers if following is not None and following.kind == "matchers" else None
            selectors.append((i, Selector(token.text, matchers or {})))
            i += 1 if matchers is None else 2
            continue
        elif token.kind == "matchers":  # {__name__="x", ...} with no name in front
            if "__name__" not in token.matchers:
                raise ValueError(f"a selector without a metric name in {expr!r}")
            selectors.append((i, Selector(token.matchers["__name__"], token.matchers)))
        i += 1

    aggregations = []
    for head in aggregation_heads:
        clause: str | None = None
        labels: tuple[str, ...] = ()
        j = head + 1
        if tokens[j].kind == "ident":  # "sum by (x) (...)"
            clause, labels = tokens[j].text.lower(), _labels(tokens, j + 1)
            j = _closing(tokens, j + 1) + 1
        end = _closing(tokens, j)
        if clause is None and end + 1 < len(tokens) and _is_word(tokens[end + 1], {"by", "without"}):
            clause, labels = tokens[end + 1].text.lower(), _labels(tokens, end + 2)  # "sum(...) by (x)"
        inside = [s for at, s in selectors if j < at < end]
        aggregations.append(Aggregation(tokens[head].text.lower(), clause, labels, head, end, inside))
    return Query([s for _, s in selectors], aggregations, calls)


def _labels(tokens: list[Token], open_index: int) -> tuple[str, ...]:
    end = _closing(tokens, open_index)
    return tuple(t.text.strip("\"'") for t in tokens[open_index + 1 : end] if t.kind in ("ident", "string"))


def metric_names(expr: str) -> set[str]:
    return {s.metric for s in parse(expr).selectors}


# ---- what Beacon exports ------------------------------------------------------------------


@functools.cache
def recording_rules() -> frozenset[str]:
    """Names recorded by config/prometheus/rules/*.yml (dashboards may read them)."""
    names: set[str] = set()
    for path in sorted(RULES_DIR.glob("*.yml")) + sorted(RULES_DIR.glob("*.yaml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups") or []:
            names.update(rule["record"] for rule in group.get("rules") or [] if "record" in rule)
    return frozenset(names)


@functools.cache
def exported() -> frozenset[str]:
    return frozenset(catalogue.sample_names())


@functools.cache
def info_labels() -> dict[str, frozenset[str]]:
    """Labels of Info series: their keys are given when a value is set, not declared, so
    ``catalogue.label_names()`` cannot see them. Set one and read the samples."""
    registry = CollectorRegistry()
    Metrics(registry, process=False)  # sets beacon_build_info at construction
    ModelMetrics(registry).active("risk", "risk-v1-0123456789ab")  # beacon_model_version_info
    out: dict[str, frozenset[str]] = {}
    for family in registry.collect():
        if family.type == "info":
            for sample in family.samples:
                out[sample.name] = out.get(sample.name, frozenset()) | frozenset(sample.labels)
    return out


@functools.cache
def labels_of(sample: str) -> frozenset[str] | None:
    """Labels a series carries once scraped; None if its labels are unknown (a recording rule)."""
    if sample in recording_rules() and sample not in exported():
        return None
    declared = catalogue.label_names()
    family = sample
    if sample not in declared:
        for suffix in ("_total", "_created", "_bucket", "_count", "_sum", "_info"):
            if sample.endswith(suffix):
                family = sample.removesuffix(suffix)
                break
    labels = set(declared.get(family, ())) | TARGET_LABELS | info_labels().get(sample, frozenset())
    if sample.endswith("_bucket"):
        labels.add("le")
    return frozenset(labels)


# ---- the dashboards -----------------------------------------------------------------------


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARD_DIR.glob("**/*.json"))


@functools.cache
def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict), f"{path}: not a JSON object"
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, the ones inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass
class Expr:
    where: str
    expr: str
    legend: str = ""


def label_values_selector(query: str) -> str:
    """The series selector of a ``label_values(selector, label)`` variable query."""
    found = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_]\w*)\s*\)\s*", query, re.DOTALL)
    assert found, f"variable query is not label_values(selector, label): {query!r}"
    return found[1]


def expressions(dashboard: dict[str, Any]) -> list[Expr]:
    """Every PromQL expression: panel targets, annotations, variable queries."""
    out = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel.get('id')} {panel.get('title')!r} target {target.get('refId')}"
            out.append(Expr(where, target.get("expr", ""), target.get("legendFormat", "")))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            out.append(Expr(f"annotation {annotation.get('name')!r}", annotation["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            text = query.get("query", "") if isinstance(query, dict) else query
            out.append(Expr(f"variable {variable['name']!r}", label_values_selector(text)))
    return out


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def variables_used(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in GRAFANA_VARIABLE.finditer(text)}


def substitute(expr: str, samples: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return BUILTIN_VARIABLES.get(name) or samples.get(name, "sample")

    return GRAFANA_VARIABLE.sub(value, expr)


DASHBOARDS = dashboard_files()
IDS = [p.name for p in DASHBOARDS]


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS, f"no dashboards under {DASHBOARD_DIR}"


# ---- the reader itself --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "metrics"),
    [
        # A label called "by" inside a grouping, a matcher value that looks like a keyword,
        # an offset, and a Grafana variable as the range.
        (
            'sum by (action, by) (rate(beacon_desk_moves_total{job=~"$job", action!="by"}[$__rate_interval] offset 5m))',
            {"beacon_desk_moves_total"},
        ),
        # Function-like text and braces inside strings; a subquery range; a trailing grouping.
        (
            'histogram_quantile(0.99, sum(rate(a_bucket{le=~"0.05|+Inf", path="sum(x{y})"}[5m:1m])) by (le))',
            {"a_bucket"},
        ),
        # Vector matching, group_left's label list, bool, numbers that are words or hex.
        (
            "a / on (job) group_left (version) b_info * 1e3 > bool Inf + 0x1F - NaN or c unless d",
            {"a", "b_info", "c", "d"},
        ),
        # A selector named by __name__, a recording rule name, @ end(), and a comment.
        (
            '{__name__="x_total", job="y"} + max(time() - rule:name:rate5m @ end()) # not_a_metric',
            {"x_total", "rule:name:rate5m"},
        ),
        # Keywords in upper case, ${var} and ${var:format}, a quoted label in a grouping.
        ('TOPK(${k}, SUM BY ("path") (rate(x[${__rate_interval}]))) AND ON() vector(1)', {"x"}),
        (
            "count_values(\"version\", beacon_build_info{a='it\\'s'}) and on (instance) up",
            {"beacon_build_info", "up"},
        ),
    ],
)
def test_reader_finds_exactly_the_series(expr: str, metrics: set[str]) -> None:
    assert metric_names(expr) == metrics


def test_reader_finds_aggregations_and_their_scope() -> None:
    query = parse(
        'topk(3, sum by (rule) (rate(r_total[1m]))) / ignoring (x) sum(rate(s_total[1m])) without (le, "by")'
    )
    found = [(a.op, a.clause, a.labels, [s.metric for s in a.selectors]) for a in query.aggregations]
    assert found == [
        ("topk", None, (), ["r_total"]),
        ("sum", "by", ("rule",), ["r_total"]),
        ("sum", "without", ("le", "by"), ["s_total"]),
    ]
    assert parse('x{a="1", b=~"2|3"}').selectors[0].matchers == {"a": "1", "b": "2|3"}


@pytest.mark.parametrize("expr", ["rat(x[1m])", "sum(x", 'x{a="1"', "x{a}"])
def test_reader_refuses_what_it_cannot_read(expr: str) -> None:
    with pytest.raises(ValueError):
        parse(expr)


@pytest.mark.parametrize(
    ("sample", "labels"),
    [
        ("beacon_decision_latency_seconds_bucket", {"path", "le", "job", "instance"}),
        ("beacon_decision_latency_seconds_count", {"path", "job", "instance"}),
        ("beacon_decisions_total", {"path", "channel", "verdict", "action", "job", "instance"}),
        ("beacon_consumer_lag_records", {"topic", "partition", "job", "instance"}),
        ("beacon_build_info", {"version", "rules", "job", "instance"}),
        ("beacon_model_version_info", {"model", "version", "job", "instance"}),
        ("process_resident_memory_bytes", {"job", "instance"}),
    ],
)
def test_labels_of_knows_suffixes_and_info_keys(sample: str, labels: set[str]) -> None:
    assert labels_of(sample) == frozenset(labels)


# ---- structure and layout -----------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_dashboard_is_grafana_11_json(path: Path) -> None:
    dashboard = load(path)
    assert dashboard.get("uid") and len(dashboard["uid"]) <= 40, (
        "a fixed uid (<= 40 chars) keeps links stable"
    )
    assert dashboard.get("title")
    assert dashboard.get("schemaVersion", 0) >= MIN_SCHEMA_VERSION
    assert "id" not in dashboard or dashboard["id"] is None, (
        "a provisioned dashboard must not carry a database id"
    )
    for panel in all_panels(dashboard):
        assert panel.get("type") in PANEL_TYPES, f"panel {panel.get('id')}: type {panel.get('type')!r}"
        assert panel.get("title"), f"panel {panel.get('id')} has no title"


def test_dashboard_uids_are_unique() -> None:
    uids = [load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids)), uids


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_panel_ids_are_unique(path: Path) -> None:
    panels = list(all_panels(load(path)))
    assert all(isinstance(panel.get("id"), int) for panel in panels), [panel.get("title") for panel in panels]
    ids: list[int] = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_panels_fit_the_grid_without_overlapping(path: Path) -> None:
    taken: dict[tuple[int, int], int] = {}
    # Panels inside a collapsed row are laid out when it opens; the top level must not overlap.
    for panel in load(path).get("panels", []):
        pos = panel["gridPos"]
        x, y, w, h = pos["x"], pos["y"], pos["w"], pos["h"]
        assert x >= 0 and y >= 0 and w >= 1 and h >= 1, f"panel {panel['id']}: {pos}"
        assert x + w <= GRID_COLUMNS, f"panel {panel['id']} ends at column {x + w}"
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            assert cell not in taken, f"panel {panel['id']} overlaps panel {taken[cell]} at {cell}"
            taken[cell] = panel["id"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_every_query_uses_the_provisioned_datasource(path: Path) -> None:
    dashboard = load(path)
    wrong = []
    for panel in all_panels(dashboard):
        if panel["type"] in ("row", "text"):
            continue
        sources = [("panel", panel.get("datasource"))]
        sources += [(f"target {t.get('refId')}", t.get("datasource")) for t in panel.get("targets", [])]
        wrong += [(panel["id"], what, ds) for what, ds in sources if (ds or {}).get("uid") != DATASOURCE_UID]
        assert panel.get("targets"), f"panel {panel['id']} has no queries"
    items = dashboard.get("templating", {}).get("list", []) + dashboard.get("annotations", {}).get("list", [])
    wrong += [
        (item["name"], "", item.get("datasource"))
        for item in items
        if "datasource" in item and (item["datasource"] or {}).get("uid") != DATASOURCE_UID
    ]
    assert not wrong


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_every_variable_used_is_defined(path: Path) -> None:
    dashboard = load(path)
    variables = dashboard.get("templating", {}).get("list", [])
    # A variable's own query may use others; its "current" holds values such as $__all.
    texts = [*strings(dashboard.get("panels", [])), *strings(dashboard.get("annotations", {}))]
    texts += [
        text for v in variables for key in ("query", "definition", "regex") for text in strings(v.get(key))
    ]
    used = set().union(*(variables_used(text) for text in texts))
    undefined = used - {v["name"] for v in variables} - set(BUILTIN_VARIABLES)
    assert not undefined, f"undefined variables: {sorted(undefined)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_targets_have_unique_ref_ids(path: Path) -> None:
    for panel in all_panels(load(path)):
        refs = [t.get("refId") for t in panel.get("targets", [])]
        assert all(refs) and len(refs) == len(set(refs)), f"panel {panel['id']}: {refs}"
        assert all(t.get("expr", "").strip() for t in panel.get("targets", [])), (
            f"panel {panel['id']}: empty expr"
        )


# ---- queries against the catalogue --------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_queries_name_only_exported_series(path: Path) -> None:
    known = exported() | recording_rules() | SYNTHETIC_SERIES
    unknown = [
        (e.where, name) for e in expressions(load(path)) for name in sorted(metric_names(e.expr) - known)
    ]
    assert not unknown, (
        "series no Beacon process exports (engine.service.catalogue) and no recording rule defines"
    )


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_labels_exist_on_the_series(path: Path) -> None:
    problems: list[tuple[str, str, str | None, str]] = []
    for e in expressions(load(path)):
        query = parse(e.expr)
        for selector in query.selectors:
            labels = labels_of(selector.metric)
            if labels is not None:  # a recording rule's labels are not known here
                missing = set(selector.matchers) - {"__name__"} - labels
                problems += [(e.where, selector.metric, "matcher", label) for label in sorted(missing)]
        for agg in query.aggregations:
            for selector in agg.selectors:
                labels = labels_of(selector.metric)
                if labels is not None:
                    grouped = set(agg.labels) - labels
                    problems += [(e.where, selector.metric, agg.clause, label) for label in sorted(grouped)]
    assert not problems, "labels the series do not carry (engine.service.catalogue.label_names())"


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_histogram_quantiles_keep_le(path: Path) -> None:
    # An aggregation that drops "le" under histogram_quantile gives NaN, not an error.
    bad = []
    for e in expressions(load(path)):
        query = parse(e.expr)
        for name, start, end in query.calls:
            if name != "histogram_quantile":
                continue
            for agg in query.aggregations:
                if start < agg.start and agg.end <= end:
                    keeps = (
                        "le" in agg.labels
                        if agg.clause == "by"
                        else agg.clause == "without" and "le" not in agg.labels
                    )
                    if not keeps:
                        bad.append(e.where)
    assert not bad


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_legends_name_labels_the_result_keeps(path: Path) -> None:
    # A legend "{{path}}" over "sum(...)" renders as an empty string for every series.
    problems = []
    for e in expressions(load(path)):
        wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", e.legend))
        if not wanted:
            continue
        query = parse(e.expr)
        if query.aggregations:
            kept = set().union(*(set(a.labels) for a in query.aggregations if a.clause == "by"))
        else:
            kept = set().union(*(labels_of(s.metric) or set() for s in query.selectors))
        problems += [(e.where, label) for label in sorted(wanted - kept)]
    assert not problems


@pytest.mark.parametrize("path", DASHBOARDS, ids=IDS)
def test_queries_parse_with_promtool(path: Path, tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make test` (it installs Debian's prometheus package)")
    dashboard = load(path)
    samples = dict(SAMPLE_VALUES)
    rules = []
    # Each expression becomes a recording rule named after where it is, so promtool's
    # message says which panel is wrong.
    for n, e in enumerate(expressions(dashboard)):
        slug = re.sub(r"[^A-Za-z0-9_]+", "_", e.where).strip("_")
        rules.append({"record": f"dashboard:{slug}:{n}", "expr": substitute(e.expr, samples)})
    rules_file = tmp_path / "dashboard-rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---- provisioning -------------------------------------------------------------------------


def test_datasource_provisioning() -> None:
    config = yaml.safe_load(DATASOURCES_FILE.read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["uid"] == DATASOURCE_UID and source["type"] == "prometheus"
    # The compose service name, reached from Grafana's backend (the browser cannot resolve it).
    assert source["url"] == "http://prometheus:9090" and source["access"] == "proxy"
    assert source.get("isDefault") is True


def test_dashboard_provider_loads_the_mounted_folder() -> None:
    config = yaml.safe_load(PROVIDERS_FILE.read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == DASHBOARDS_MOUNT


def test_compose_mounts_what_provisioning_expects() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text()) if COMPOSE_FILE.exists() else {}
    grafana = (compose.get("services") or {}).get("grafana")
    if grafana is None:
        pytest.skip("docker-compose.yml has no grafana service")
    mounts = {}
    for volume in grafana.get("volumes", []):
        source, target = (
            (volume.split(":")[:2]) if isinstance(volume, str) else (volume["source"], volume["target"])
        )
        mounts[str(Path(source)).removeprefix("./")] = target
    assert mounts.get("config/grafana/dashboards") == DASHBOARDS_MOUNT, mounts
    assert mounts.get("config/grafana/provisioning") == "/etc/grafana/provisioning", mounts


def test_scrape_interval_matches_the_datasource() -> None:
    # $__rate_interval is four scrape intervals as Grafana knows it (timeInterval): if
    # Prometheus scrapes less often, short rate() windows hold one sample and go blank.
    prometheus_file = ROOT / "config" / "prometheus" / "prometheus.yml"
    if not prometheus_file.exists():
        pytest.skip("config/prometheus/prometheus.yml not written yet")
    scrape = (yaml.safe_load(prometheus_file.read_text()).get("global") or {}).get("scrape_interval", "1m")
    (source,) = yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]
    assert source["jsonData"]["timeInterval"] == scrape
