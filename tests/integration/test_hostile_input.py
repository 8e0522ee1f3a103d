"""Hostile input against one real worker, over HTTP and over Kafka.

Hypothesis builds bodies that are wrong in every way a channel (or an attacker) can be
wrong: bytes that are not UTF-8, NaN and Infinity literals, numbers too large for a
float, nesting 10,000 deep, bodies over the size limit, wrong types for every field,
unknown channels and types, timestamps far in the past or future, negative and absurd
amounts, malformed identifiers, repeated keys, extra fields on top. Each one gets a 4xx
with a JSON error code (HTTP) or exactly one DLQ record with its reason (Kafka); the
worker stays ready and keeps deciding; and Redis holds exactly what it held before,
byte for byte, under every key the worker owns.

Valid events sent twice and out of order are counted once each (windows run on event
time), and a repeat gets the decision the first copy got, whichever path it takes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import redis
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine.ops.infra import ensure_topics
from engine.ops.launcher import WorkerProcess
from engine.settings import Settings
from tests.helpers import Record, consume_until, isolated, running_worker

pytestmark = pytest.mark.integration

S = Settings.build()  # what the infra fixture and the worker start from
LIMIT = S.max_event_bytes  # the event contract's limit: 400 (HTTP) or the DLQ (Kafka) beyond it
BODY_LIMIT = S.http_max_body_bytes  # HTTP: 413 beyond it, before the body is read
SEEDED = ("S1", "S2", "S3")  # real customers with history before the hostile inputs
POOL = (*SEEDED, "N1", "N2")  # ... and two never seen: hostile inputs must not create them
HOUR = 3600.0
# Hypothesis: the same examples every run, no deadline (a shared 2-core machine), and no
# example database (the worker's state is per run; a replayed example proves nothing new).
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
HTTP_EXAMPLES = 300
KAFKA_EXAMPLES = 300


@dataclass(frozen=True)
class Hostile:
    raw: bytes
    codes: frozenset[str]  # the error codes this input may be refused with
    kind: str

    def expected(self) -> frozenset[str]:
        return frozenset({"too_large"}) if len(self.raw) > LIMIT else self.codes


def valid(customer: str, event_id: str, /, **changes: Any) -> dict[str, Any]:
    event = {
        "event_id": event_id,
        "customer_id": customer,
        "channel": "atm",
        "type": "withdrawal",
        "ts": time.time() - 60,
        "amount": 20.0,
        "terminal_id": "T-1",
    }
    event.update(changes)
    return event


# ---- strategies --------------------------------------------------------------------------

customers = st.sampled_from(POOL)
event_ids = st.integers(0, 10**6).map(lambda n: f"hostile-{n}")
shallow = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
extras = st.dictionaries(
    st.text(max_size=8).map(lambda k: "x_" + k), shallow | st.lists(shallow, max_size=3), max_size=4
)


def _build(kind: str, codes: set[str], event: dict[str, Any], extra: dict[str, Any]) -> Hostile:
    return Hostile(orjson.dumps({**event, **extra}), frozenset(codes), kind)


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Hostile:
    if draw(st.booleans()):  # garbage that is not text at all
        raw = draw(st.binary(min_size=1, max_size=200).filter(_not_utf8))
        return Hostile(raw, frozenset({"invalid_json", "invalid_utf8"}), "binary")
    customer = draw(customers)
    bad = draw(
        st.sampled_from(
            [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]
        )
    )
    raw = orjson.dumps(valid(customer, draw(event_ids))).replace(
        f'"{customer}"'.encode(), b'"' + customer.encode() + bad + b'"'
    )
    return Hostile(raw, frozenset({"invalid_utf8", "invalid_json"}), "invalid_utf8")


@st.composite
def non_finite_numbers(draw: st.DrawFn) -> Hostile:
    # JSON has no NaN or Infinity; numbers past a double's range are not numbers either.
    literal = draw(
        st.sampled_from(
            [
                b"NaN",
                b"Infinity",
                b"-Infinity",
                b"nan",
                b"inf",
                b"1e400",
                b"-1e400",
                b"9" * 400,
                b"-" + b"9" * 400,
            ]
        )
    )
    where = draw(st.sampled_from(["amount", "ts", "x_score", "geo"]))
    event = valid(draw(customers), draw(event_ids), **{where: "@@"})
    raw = orjson.dumps(event)
    spliced = b'{"lat": ' + literal + b', "lon": 0}' if where == "geo" else literal
    return Hostile(raw.replace(b'"@@"', spliced), frozenset({"invalid_json"}), "non_finite")


@st.composite
def deep_nesting(draw: st.DrawFn) -> Hostile:
    depth = draw(
        st.sampled_from([5, 64, 255, 256, 999, 1000, 1023, 1024, 1025, 5000, 10_000]) | st.integers(5, 1100)
    )
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a": ', b"}")]))
    where = draw(st.sampled_from(["attributes", "geo", "x_tree"]))
    event = valid(draw(customers), draw(event_ids), **{where: "@@"})
    raw = orjson.dumps(event).replace(b'"@@"', opener * depth + b"1" + closer * depth)
    return Hostile(raw, frozenset({"invalid_value", "invalid_json", "wrong_type"}), f"nesting_{depth}")


@st.composite
def oversized(draw: st.DrawFn) -> Hostile:
    sizes = [LIMIT + 1, LIMIT + 2, BODY_LIMIT, BODY_LIMIT + 1, BODY_LIMIT + 2]
    size = draw(st.sampled_from(sizes) | st.integers(LIMIT + 1, BODY_LIMIT + 32 * 1024))
    event = orjson.dumps(valid(draw(customers), draw(event_ids), x_pad=""))
    raw = event[:-2] + b"p" * (size - len(event)) + b'"}'
    return Hostile(raw, frozenset({"too_large"}), "too_large")


WRONG_VALUES: dict[str, list[Any]] = {
    "event_id": [None, 1, 1.5, True, [], {}, ["e-1"]],
    "customer_id": [None, 7, 0.0, False, [], {"id": "S1"}, ["S1"]],
    "channel": [None, 1, True, [], {"name": "atm"}],
    "type": [None, 3, False, ["withdrawal"], {}],
    "ts": [None, True, False, [], {}, "yesterday", "2026-11-23T10:00:00", "", "1795428000"],
    "amount": ["12", "NaN", True, [], {}, {"value": 1}],
    "currency": [1, "pounds", "gbp", "GBP\n", True, [], ""],
    "device_id": [1, True, [], {}, "", " ", "d\n"],
    "terminal_id": [2, False, ["T-1"], "", "T 1"],
    "session_id": [3.5, True, {}, "", "s\t1"],
    "geo": [
        [51.5, -0.1],
        "51.5,-0.1",
        1,
        True,
        {"lat": "51"},
        {"lat": 91, "lon": 0},
        {"lat": 0},
        {},
        {"lat": True, "lon": 0},
    ],
    "attributes": [[], "x", 1, True, {f"k{i}": i for i in range(65)}],
}
wrong_type_value = (
    st.integers()
    | st.booleans()
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=4), st.integers(), max_size=3)
)


@st.composite
def wrong_types(draw: st.DrawFn) -> Hostile:
    name = draw(st.sampled_from(sorted(WRONG_VALUES)))
    if name in ("event_id", "customer_id", "channel", "type") and draw(st.booleans()):
        value = draw(wrong_type_value)  # anything but a string
    else:
        value = draw(st.sampled_from(WRONG_VALUES[name]))
    event = valid(draw(customers), draw(event_ids), **{name: value})
    if name in ("event_id", "customer_id", "channel", "type", "ts") and draw(st.booleans()):
        del event[name]  # a required field missing altogether
    return _build(f"wrong_{name}", {"wrong_type", "invalid_value", "missing_field"}, event, draw(extras))


@st.composite
def unknown_names(draw: st.DrawFn) -> Hostile:
    name = draw(st.sampled_from(["channel", "type"]))
    known = S.channels if name == "channel" else S.event_types
    value = draw(
        st.sampled_from(["ATM", "atm ", "fax", "", "withdraw", "WITHDRAWAL", "branch\n"])
        | st.text(max_size=16)
    )
    if value in known:
        value += "?"
    event = valid(draw(customers), draw(event_ids), **{name: value})
    return _build(f"unknown_{name}", {f"unknown_{name}"}, event, draw(extras))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@st.composite
def far_timestamps(draw: st.DrawFn) -> Hostile:
    # Drawn as offsets from the clock, so a replayed example draws the same way; with
    # margins of hours beyond the allowed skew and age, as a record may wait in a topic.
    future, millis, as_text = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    now = time.time()
    if future and millis:  # epoch milliseconds where seconds belong: a common sender bug
        ts: Any = now * 1000.0
    elif future:
        ts = now + draw(st.floats(S.max_clock_skew_s + 3 * HOUR, 1e15))
    else:
        ts = now - draw(st.floats(S.max_event_age_s + 3 * HOUR, 1e15))
    if as_text and -62135596800 < ts < 253402300799:  # years 1 to 9999
        ts = _iso(ts)
    event = valid(draw(customers), draw(event_ids), ts=ts)
    return _build("far_ts", {"ts_in_future" if future else "ts_too_old"}, event, draw(extras))


@st.composite
def bad_amounts(draw: st.DrawFn) -> Hostile:
    amount = draw(
        st.floats(-1e300, -1e-9)
        | st.integers(-(2**63), -1)
        | st.floats(1e10 + 1, 1e300)
        | st.integers(10**10 + 1, 2**64 - 1)
        | st.sampled_from([-0.01, -1, 1e10 + 0.5, 1e308])
    )
    event = valid(draw(customers), draw(event_ids), amount=amount)
    return _build("bad_amount", {"invalid_value"}, event, draw(extras))


@st.composite
def bad_identifiers(draw: st.DrawFn) -> Hostile:
    name = draw(st.sampled_from(["customer_id", "event_id"]))
    base = draw(customers)
    value = draw(
        st.sampled_from(
            [
                f"{base}\n",
                f"{base} ",
                f" {base}",
                "",
                "-" + base,
                "a" * 129,
                f"{base}ü",
                f"../{base}",
                f"{base};x",
                f"{base}\x00",
            ]
        )
    )
    event = valid(base, draw(event_ids), **{name: value})
    return _build("bad_identifier", {"invalid_value"}, event, draw(extras))


@st.composite
def not_objects(draw: st.DrawFn) -> Hostile:
    raw = draw(
        st.sampled_from([b"[]", b"null", b"0", b'"event"', b"true", b"[{}]"])
        | st.builds(lambda c: orjson.dumps([valid(c, "e-1")]), customers)
    )
    return Hostile(raw, frozenset({"not_an_object"}), "not_an_object")


@st.composite
def broken_json(draw: st.DrawFn) -> Hostile:
    raw = orjson.dumps(valid(draw(customers), draw(event_ids)))
    how = draw(st.sampled_from(["truncate", "trailing", "quotes", "comma", "comment", "surrogate", "empty"]))
    if how == "truncate":
        raw = raw[: len(raw) * draw(st.integers(0, 999)) // 1000]  # the length varies with the clock
    elif how == "trailing":
        raw += draw(st.sampled_from([b"x", b"{}", b",", b" 1", b"\x00"]))
    elif how == "quotes":
        raw = raw.replace(b'"', b"'")
    elif how == "comma":
        raw = raw[:-1] + b",}"
    elif how == "comment":
        raw = raw[:-1] + b" /* note */}"
    elif how == "surrogate":
        raw = raw.replace(b'"T-1"', b'"T-1\\ud800"')
    else:
        raw = b""
    return Hostile(raw, frozenset({"invalid_json", "invalid_utf8"}), f"broken_{how}")


@st.composite
def repeated_keys(draw: st.DrawFn) -> Hostile:
    # Parsers disagree on which copy wins (orjson: the last), so the event is refused.
    event = valid(draw(customers), draw(event_ids))
    name = draw(st.sampled_from([*sorted(event), "x_note"]))
    first = orjson.dumps(event.get(name, "a"))
    second = draw(st.sampled_from([first, b'"S2"', b"-5", b"999999", b'"mobile"', b"null"]))
    members = orjson.dumps(event)[1:-1]
    spelled = orjson.dumps(name)
    if draw(st.booleans()):  # the same key spelled with an escape
        spelled = spelled.replace(b"_", b"\\u005f")
    raw = b"{" + members + b"," + orjson.dumps(name) + b":" + first + b"," + spelled + b":" + second + b"}"
    return Hostile(raw, frozenset({"duplicate_key"}), "repeated_key")


hostile = st.one_of(
    invalid_utf8(), non_finite_numbers(), deep_nesting(), oversized(), wrong_types(), unknown_names(),
    far_timestamps(), bad_amounts(), bad_identifiers(), not_objects(), broken_json(), repeated_keys(),
)  # fmt: skip


def draw_examples(strategy: st.SearchStrategy[Hostile], n: int) -> list[Hostile]:
    """n examples, the same on every run (for the Kafka path, which sends them in one go)."""
    out: list[Hostile] = []

    @settings(FUZZ, max_examples=n, phases=[Phase.generate])
    @given(strategy)
    def collect(example: Hostile) -> None:
        out.append(example)

    collect()
    return out


# ---- the worker, Redis and the state ------------------------------------------------------


@pytest.fixture(scope="module")
def worker(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    s = isolated(infra)
    asyncio.run(ensure_topics(s))
    with running_worker(s, tmp_path_factory.mktemp("hostile")) as w:
        with httpx.Client(base_url=w.url, timeout=10) as http:
            for i, customer in enumerate(SEEDED):  # real history, and a profile for one
                for j in range(3):
                    body = valid(customer, f"seed-{i}-{j}", amount=10.0 * (j + 1), ts=time.time() - 600 + j)
                    assert http.post("/v1/decisions", content=orjson.dumps(body)).status_code == 200
            assert http.put("/v1/customers/S1/profile", content=b'{"segment": "mass"}').status_code == 200
        yield w


@pytest.fixture(scope="module")
def http(worker: WorkerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=worker.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def store(worker: WorkerProcess) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(worker.settings.redis_url)
    yield client
    client.close()


def snapshot(store: redis.Redis, s: Settings) -> dict[bytes, bytes | None]:
    """Every key the worker owns (customer state, dedupe, decisions, contact history,
    alerts, caps, rules, models, auth) with its serialised value."""
    keys = sorted(store.scan_iter(match=f"{s.key_prefix}:*", count=1000))
    return {key: store.dump(key) for key in keys}


def assert_unchanged(before: dict[bytes, bytes | None], after: dict[bytes, bytes | None]) -> None:
    added, removed = sorted(set(after) - set(before)), sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (added or removed or changed), (
        f"added {added[:10]}, removed {removed[:10]}, changed {changed[:10]}"
    )


def settled(store: redis.Redis, s: Settings) -> dict[bytes, bytes | None]:
    """A snapshot once the worker has finished with what came before (the alert desk, for
    one, writes what it reads from risk.alerts a moment after the decision)."""
    current = snapshot(store, s)
    for _ in range(60):
        time.sleep(0.5)
        again = snapshot(store, s)
        if again == current:
            return current
        current = again
    raise AssertionError("Redis never stopped changing")


def views(http: httpx.Client) -> dict[str, Any]:
    return {c: http.get(f"/v1/customers/{c}").json() for c in POOL}


def assert_still_deciding(http: httpx.Client, event_id: str) -> None:
    assert http.get("/readyz").status_code == 200
    r = http.post("/v1/decisions", content=orjson.dumps(valid("S3", event_id)))
    assert r.status_code == 200 and r.json()["event_id"] == event_id, r.text


# ---- HTTP -------------------------------------------------------------------------------


def test_hostile_bodies_get_a_4xx_with_a_code_and_change_nothing(
    worker: WorkerProcess, http: httpx.Client, store: redis.Redis
) -> None:
    before, seen_before = settled(store, worker.settings), views(http)
    assert any(b"{S1}" in key for key in before)  # the snapshot holds the seeded customers' state
    kinds: Counter[str] = Counter()

    @settings(FUZZ, max_examples=HTTP_EXAMPLES)
    @given(hostile)
    def send(body: Hostile) -> None:
        r = http.post("/v1/decisions", content=body.raw)
        assert r.status_code == (413 if len(body.raw) > BODY_LIMIT else 400), (
            body.kind,
            r.status_code,
            r.text[:300],
        )
        err = r.json()["error"]
        assert err["code"] in body.expected() and err["message"], (body.kind, err, body.raw[:200])
        kinds[body.kind.split("_")[0]] += 1

    send()
    assert len(kinds) >= 8, kinds  # the examples covered most kinds of hostility
    assert_unchanged(before, snapshot(store, worker.settings))
    assert views(http) == seen_before
    assert_still_deciding(http, "after-http-fuzz")


# ---- Kafka ------------------------------------------------------------------------------


async def _produce(s: Settings, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=s.kafka_bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(s.topic("interactions"), value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _decisions(records: list[Record], s: Settings) -> list[dict[str, Any]]:
    dlq = s.topic("interactions.dlq")
    return [orjson.loads(v) for t, _, v, _ in records if t != dlq]


async def test_hostile_records_each_land_once_on_the_dlq_and_change_nothing(
    worker: WorkerProcess, http: httpx.Client, store: redis.Redis
) -> None:
    s = worker.settings
    examples = draw_examples(hostile, KAFKA_EXAMPLES)
    tombstone = Hostile(b"", frozenset({"invalid_json"}), "tombstone")  # a record with no value at all
    before, seen_before = settled(store, s), views(http)
    records: list[tuple[bytes | None, bytes | None]] = [
        (POOL[i % len(POOL)].encode(), h.raw) for i, h in enumerate(examples)
    ]
    records.append((b"S1", None))
    records.append((None, examples[0].raw))  # no key either
    sent = [*examples, tombstone, examples[0]]

    dlq = s.topic("interactions.dlq")
    decision_topics = [s.topic(f"decisions.{c}") for c in S.channels]
    await _produce(s, records)
    out = await consume_until(s.kafka_bootstrap, [dlq, *decision_topics], len(sent), timeout=180)
    dead = [(v, dict(h)) for t, _, v, h in out if t == dlq]

    # One DLQ record per hostile record: none lost, none doubled, original bytes kept.
    assert Counter(v for v, _ in dead) == Counter(h.raw for h in sent), (len(dead), len(sent))
    # No test before this one sends valid events over Kafka: any decision is a hostile record's.
    assert _decisions(out, s) == [], "a hostile record was decided"
    allowed: dict[bytes, frozenset[str]] = {}
    for h in sent:
        allowed[h.raw] = allowed.get(h.raw, frozenset()) | h.expected()
    for value, headers in dead:
        code = headers["beacon-error-code"].decode()
        assert code in allowed[value], (code, value[:200])
        assert headers["beacon-error-message"] and headers["beacon-source"]
    assert_unchanged(before, snapshot(store, s))
    assert views(http) == seen_before

    # The agent kept going: a valid record after all of them is decided.
    await _produce(s, [(b"S2", orjson.dumps(valid("S2", "after-kafka-fuzz")))])
    more = await consume_until(
        s.kafka_bootstrap, decision_topics, 1, timeout=60, done=lambda rs: bool(_decisions(rs, s))
    )
    assert [d["event_id"] for d in _decisions(more, s)] == ["after-kafka-fuzz"]
    assert_still_deciding(http, "after-kafka-fuzz-http")


# ---- duplicates and reordering ----------------------------------------------------------


def _series(customer: str, n: int, prefix: str) -> list[dict[str, Any]]:
    """n valid events a minute apart, an hour ago, with amounts 0..n-1: a zero amount is
    valid (a fee waived, a failed withdrawal) and counted like any other."""
    start = time.time() - HOUR
    return [valid(customer, f"{prefix}-{i}", ts=start + 60 * i, amount=float(i)) for i in range(n)]


def _sending_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Newest first, every event twice, the repeats interleaved: reordered and duplicated."""
    backwards = list(reversed(events))
    return [e for pair in zip(backwards, backwards[1:] + backwards[:1], strict=True) for e in pair]


def _assert_counted_once(view: dict[str, Any], events: list[dict[str, Any]]) -> None:
    cell = view["windows"]["24h"]["all"]
    assert cell["count"] == len(events)
    assert round(cell["amount"] * 100) == round(sum(e["amount"] for e in events) * 100)
    recent = [i["event_id"] for i in view["recent_interactions"]]
    assert sorted(recent) == sorted(e["event_id"] for e in events)


def test_duplicates_and_reordering_over_http(http: httpx.Client) -> None:
    events = _series("D1", 6, "dh")
    first: dict[str, bytes] = {}
    for event in _sending_order(events):
        r = http.post("/v1/decisions", content=orjson.dumps(event))
        assert r.status_code == 200, r.text
        if event["event_id"] in first:
            assert r.content == first[event["event_id"]] and r.headers["Beacon-Replayed"] == "true"
        else:
            first[event["event_id"]] = r.content
    # A "retry" that changed its amount is another payload under a used id: refused (409),
    # and it changes nothing (test_a_replay_with_another_payload_is_refused_over_http).
    changed = {**events[0], "amount": 5000.0}
    r = http.post("/v1/decisions", content=orjson.dumps(changed))
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflicting_replay", r.text
    _assert_counted_once(http.get("/v1/customers/D1").json(), events)


async def test_duplicates_and_reordering_over_kafka_and_across_paths(
    worker: WorkerProcess, http: httpx.Client
) -> None:
    s = worker.settings
    events = _series("D2", 6, "dk")
    # One of them was decided over HTTP first: Kafka must repeat that decision, not make another.
    over_http = http.post("/v1/decisions", content=orjson.dumps(events[2]))
    assert over_http.status_code == 200
    order = _sending_order(events)
    await _produce(s, [(b"D2", orjson.dumps(e)) for e in order])
    topic = s.topic("decisions.atm")
    out = await consume_until(
        s.kafka_bootstrap, [topic], len(order), timeout=120,
        done=lambda rs: sum(orjson.loads(v)["customer_id"] == "D2" for _, _, v, _ in rs) >= len(order),
    )  # fmt: skip
    decided = [orjson.loads(v) for _, _, v, _ in out]
    decided = [d for d in decided if d["customer_id"] == "D2"]
    assert len(decided) == len(order)  # one answer per record, repeats included
    by_event: dict[str, set[str]] = {}
    for d in decided:
        by_event.setdefault(d["event_id"], set()).add(d["decision_id"])
    assert all(len(ids) == 1 for ids in by_event.values()), by_event
    assert by_event[events[2]["event_id"]] == {over_http.json()["decision_id"]}
    _assert_counted_once(http.get("/v1/customers/D2").json(), events)


# ---- a replayed event id with another payload ---------------------------------------------


def _dlq_total(http: httpx.Client, path: str, reason: str) -> float:
    """beacon_dlq_total{path, reason} from the worker's /metrics (0 before the first)."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("beacon_dlq_total{") and f'path="{path}"' in line and f'reason="{reason}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_replay_with_another_payload_is_refused_over_http(
    worker: WorkerProcess, http: httpx.Client, store: redis.Redis
) -> None:
    s = worker.settings
    # Whole seconds, so the ISO 8601 form below is exactly the same instant.
    event = valid("R1", "conflict-http", amount=40.0, device_id="dev-r1", ts=float(int(time.time()) - 60))
    first = http.post("/v1/decisions", content=orjson.dumps(event))
    assert first.status_code == 200, first.text
    # The same payload in other words (keys reordered, ts as ISO 8601) is the same event.
    same = {"ts": _iso(event["ts"]), **{k: v for k, v in reversed(event.items()) if k != "ts"}}
    again = http.post("/v1/decisions", content=orjson.dumps(same))
    assert again.status_code == 200 and again.content == first.content, again.text
    assert again.headers["Beacon-Replayed"] == "true"

    before, view_before = settled(store, s), http.get("/v1/customers/R1").json()
    counted = _dlq_total(http, "http", "conflicting_replay")
    for changes in ({"amount": 4000.0}, {"type": "transfer"}, {"device_id": "dev-other"}, {"x_note": 1}):
        r = http.post("/v1/decisions", content=orjson.dumps({**event, **changes}))
        assert r.status_code == 409, (changes, r.status_code, r.text)
        err = r.json()["error"]
        assert err["code"] == "conflicting_replay" and err["field"] == "event_id" and err["message"], err
    assert_unchanged(before, snapshot(store, s))  # no counter, no window, no device, nothing
    assert http.get("/v1/customers/R1").json() == view_before
    assert _dlq_total(http, "http", "conflicting_replay") == counted + 4

    # The original payload still gets the original answer.
    replay = http.post("/v1/decisions", content=orjson.dumps(event))
    assert replay.status_code == 200 and replay.content == first.content
    assert replay.headers["Beacon-Replayed"] == "true"


async def test_a_replay_with_another_payload_goes_to_the_dlq_over_kafka(
    worker: WorkerProcess, http: httpx.Client, store: redis.Redis
) -> None:
    s = worker.settings
    dlq, atm = s.topic("interactions.dlq"), s.topic("decisions.atm")
    # Decided over HTTP first, then replayed over Kafka with another amount, then as it was.
    event = valid("R2", "conflict-kafka", amount=60.0)
    first = http.post("/v1/decisions", content=orjson.dumps(event))
    assert first.status_code == 200, first.text
    changed = orjson.dumps({**event, "amount": 6000.0})
    # And a new event whose two payloads come together (likely in one batch): the first wins.
    fresh = valid("R2", "conflict-kafka-2", amount=7.0, ts=event["ts"] + 1)
    fresh_changed = orjson.dumps({**fresh, "amount": 700.0})
    before = settled(store, s)
    counted = _dlq_total(http, "kafka", "conflicting_replay")
    await _produce(s, [(b"R2", changed), (b"R2", orjson.dumps(event)),
                       (b"R2", orjson.dumps(fresh)), (b"R2", fresh_changed)])  # fmt: skip

    def mine(records: list[Record]) -> tuple[list[tuple[bytes, dict[str, bytes]]], list[dict[str, Any]]]:
        dead = [(v, dict(h)) for t, _, v, h in records if t == dlq and v in (changed, fresh_changed)]
        answers = [orjson.loads(v) for t, _, v, _ in records if t == atm]
        return dead, [d for d in answers if d["customer_id"] == "R2"]

    out = await consume_until(
        s.kafka_bootstrap, [dlq, atm], 0, timeout=120,
        done=lambda rs: [len(x) for x in mine(rs)] >= [2, 2],
    )  # fmt: skip
    dead, answers = mine(out)
    assert sorted(v for v, _ in dead) == sorted([changed, fresh_changed]), dead
    for _, headers in dead:
        assert headers["beacon-error-code"] == b"conflicting_replay", headers
        assert headers["beacon-error-field"] == b"event_id" and headers["beacon-error-message"]
    # One answer per record decided: the replay (the HTTP decision) and the fresh event's.
    assert sorted(d["event_id"] for d in answers) == ["conflict-kafka", "conflict-kafka-2"], answers
    replayed = next(d for d in answers if d["event_id"] == "conflict-kafka")
    assert replayed["decision_id"] == first.json()["decision_id"]
    assert _dlq_total(http, "kafka", "conflicting_replay") == counted + 2
    # State counted the fresh event once, with its first payload; the conflicts changed nothing.
    view = http.get("/v1/customers/R2").json()
    assert view["windows"]["24h"]["all"] == {"count": 2, "amount": 67.0}, view["windows"]["24h"]
    kept = f"{s.key_prefix}:{{R2}}:dd:atm:conflict-kafka".encode()
    assert kept in before and store.dump(kept) == before[kept]  # the first answer stays


def test_the_worker_log_has_no_traceback(worker: WorkerProcess) -> None:
    # Runs last in this module: nothing above made the worker raise where it should refuse.
    log = worker.log()
    assert "Traceback" not in log, log[log.find("Traceback") - 2000 :][:6000]
