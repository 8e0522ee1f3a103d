"""Every Redis key of Beacon, and why each carries the hash tag it does.

``P`` is ``settings.key_prefix``. On Redis Cluster the part in braces (the hash tag)
picks the slot, and a script or a MULTI may only touch keys of one slot: each layout
groups in one slot what one script (or transaction) changes together. The Lua scripts
(``engine/store/lua/``) build a customer's keys by appending the suffixes declared here;
``tests/unit/test_keys.py`` reads the scripts and fails on a suffix declared nowhere here.
Every key has a TTL or a bound (stated beside it); nothing grows forever.

>>> customer("beacon", "C1"), suppression("beacon", "C1", "pin_bruteforce")
('beacon:{C1}', 'beacon:{C1}:sup:pin_bruteforce')
>>> RuleKeys.of("beacon").current, ModelKeys.of("beacon", "risk").current
('beacon:rules:{beacon}:current', 'beacon:models:{beacon:risk}:current')
>>> DeskKeys.of("beacon").alert("a1"), AuthKeys.of("beacon").users
('beacon:alerts:{beacon:alerts}:a:a1', 'beacon:auth:{beacon:auth}:users')
"""

from __future__ import annotations

from dataclasses import dataclass

from models.signing import check_name

# --- A customer's state: ``P:{<customer>}<suffix>`` (engine/store/state.py and the ingest and
# commit scripts). Tag {<customer>}: one customer's keys share a slot, so a script call
# touches one slot per customer. Each expires state_ttl_s after its last write unless noted.
PROFILE = ":profile"  # string: static attributes (JSON)                  TTL profile_ttl_s
PROFILE_HISTORY = ":profile:h"  # list: changes, newest first   bound profile_history_max, TTL profile_ttl_s
# (written from Python, engine/store/state.py: not a script suffix)
LAST = ":last"  # hash: the newest event (ts, ch, ty, id, dev, term, lat, lon)
DEVICES = ":dev"  # zset device -> last seen                                 bound known_devices
EVENTS = ":ev"  # list: recent interactions (summaries)                     bound recent_events
DECISIONS = ":decisions"  # list: recent decisions (summaries)              bound recent_decisions
ALERTS = ":alerts"  # hash alert id -> alert raised by a decision            bound open_alerts
PINS = ":pin"  # zset '<event>|<terminal>' -> ts, PIN failures in 24 h      bound 50
WINDOW_TOTALS = ":wt"  # hash '<window>|<dim>|c|a' -> totals; '<window>|_hi', '|_lo'
WINDOW_BUCKETS = ":wb:"  # + window name: hash '<bucket>|<dim>|c|a' -> counts   bound the window
SEEN = ":seen"  # hash marked event type -> last ts (engine.domain.state.MARKED)
DECLINED = ":declined"  # hash offer -> ts of the last decline (cool-down), newest 64 kept
CONTACT = ":contact"  # zset '<decision>|<action>|<channel>' -> ts   bound contact_history, 7 d
DEDUPE = ":dd:"  # + '<channel>:<event_id>': the answer given  TTL dedupe_answer_ttl_s;
#                   pending facts until the commit stores it    TTL dedupe_ttl_s
# hash: an id-only marker per event id seen in the window: field = SHA-1('<channel>:<event_id>')
# [:8 bytes], value = first-seen server time (4 bytes, big endian) + payload digest (8 bytes);
# field '' = the oldest marker's time. Old markers dropped once the oldest is 1/8 window over.
DEDUPE_MARKS = ":dm"  # TTL dedupe_ttl_s (refreshed by each new event id)    bound the window
# Before the markers (issue 16): the payload digest's own key. Only read now (a repeat of
# an event decided before the upgrade); none are left a dedupe window after it.
DIGEST = ":dh:"  # + '<channel>:<event_id>': the payload digest bound to it   TTL dedupe_ttl_s
SUPPRESS = ":sup:"  # + rule id: that rule alerted (or was snoozed)   TTL the suppression window

CUSTOMER_SUFFIXES = (PROFILE, LAST, DEVICES, EVENTS, DECISIONS, ALERTS, PINS, WINDOW_TOTALS,
                     WINDOW_BUCKETS, SEEN, DECLINED, CONTACT, DEDUPE, DEDUPE_MARKS, DIGEST,
                     SUPPRESS)  # fmt: skip

# --- Written by the scripts beside a customer's keys, outside the customer's slot.
# ``P:{dev:<device>}:customers``: zset customer -> ts, the customers seen on a device in 24 h
# (bound 100, TTL 2 d). Tag {dev:<device>}: a device's own slot, shared by its customers
# (see the README, Redis Cluster).
DEVICE_TAG, DEVICE_CUSTOMERS = ":{dev:", "}:customers"
# ``P:caps:<yyyymmdd>``: hash offer -> impressions that day, for the global daily cap (TTL
# 3 d). No tag: one key for every customer of the day, read and written by the commit script.
DAILY_CAPS = ":caps:"


def outbox(prefix: str) -> str:
    """``P:outbox``: stream of the records each commit produces (audit record, alerts,
    label), written by the commit script in the same step as the state and deleted by the
    relay (agents/relay.py) once Kafka has them. Bound: what the relay has not delivered
    yet, watched by ``beacon_outbox_backlog``. No tag: one stream for every customer."""
    return f"{prefix}:outbox"


# Every literal the Lua scripts append to ``P`` or a customer's key.
SCRIPT_SUFFIXES = frozenset({*CUSTOMER_SUFFIXES, DEVICE_TAG, DEVICE_CUSTOMERS, DAILY_CAPS})


def customer(prefix: str, customer_id: str) -> str:
    """The key of a customer, which the scripts get as KEYS[i] and extend with a suffix."""
    return f"{prefix}:{{{customer_id}}}"


def suppression(prefix: str, customer_id: str, rule_id: str) -> str:
    """Set by the commit script when ``rule_id`` alerts, and by a snooze on the desk."""
    return customer(prefix, customer_id) + SUPPRESS + rule_id


@dataclass(frozen=True)
class DeskKeys:
    """The risk officers' alert desk (engine/store/alerts.py): ``P:alerts:{P:alerts}:...``.
    Tag {P:alerts}: the whole desk in one slot, so one script changes an alert, its trail,
    the indexes and the backlog together.

    ``a:<id>`` the alert (TTL alert_retention_s); ``audit:<id>`` its trail, append-only (TTL
    alert_retention_s); ``g:<customer>|<group>`` a customer's open group (TTL
    alert_group_window_s); ``seen:<id>`` incoming alert ids (TTL alert_retention_s);
    ``by_time`` zset id -> created ms (trimmed to retention); ``sla`` zset id -> escalation
    deadline ms (removed when acted on); ``backlog`` hash '<severity>|<status>' -> unresolved
    alerts (bound: 4 x 5 fields). Pub/sub ``P:alerts:changed``: every raise, group and move.

    The inbox's indexes, kept by the raise and move scripts in the same step as the alert:
    ``ix:<dim>:<value>`` zset id -> created ms, for dim ``st`` status, ``sv`` severity, ``ty``
    typology (and group), ``as`` assignee, ``cu`` customer (each trimmed to retention when
    written, TTL alert_retention_s); ``ix:built`` set once the alerts of before the indexes
    were added to them. One slot with the alerts, so a listing is one script call.
    """

    base: str
    channel: str

    @classmethod
    def of(cls, prefix: str) -> DeskKeys:
        return cls(f"{prefix}:alerts:{{{prefix}:alerts}}", f"{prefix}:alerts:changed")

    def alert(self, alert_id: str) -> str:
        return self.alerts + alert_id

    def audit(self, alert_id: str) -> str:
        return self.audits + alert_id

    @property
    def alerts(self) -> str:  # the raise script appends the id
        return f"{self.base}:a:"

    @property
    def audits(self) -> str:
        return f"{self.base}:audit:"

    @property
    def groups(self) -> str:
        return f"{self.base}:g:"

    @property
    def seen(self) -> str:
        return f"{self.base}:seen:"

    @property
    def by_time(self) -> str:
        return f"{self.base}:by_time"

    @property
    def sla(self) -> str:
        return f"{self.base}:sla"

    @property
    def backlog(self) -> str:
        return f"{self.base}:backlog"

    def index(self, dim: str, value: str = "") -> str:
        """``dim`` one of INDEX_DIMS; without a value, the prefix the scripts append one to."""
        return f"{self.base}:ix:{dim}:{value}"

    @property
    def indexed(self) -> str:
        return f"{self.base}:ix:built"


# The inbox's index dimensions, in the order the raise and move scripts take their prefixes.
INDEX_DIMS = ("st", "sv", "ty", "as", "cu")


@dataclass(frozen=True)
class AuthKeys:
    """Users, tokens and sessions (engine/store/users.py): ``P:auth:{P:auth}:...``. Tag
    {P:auth}: all of auth in one slot, apart from the customers' data (no script needs
    it today; every command touches one key).

    ``users`` hash name -> {role, salt, hash, created} (bound: the users created);
    ``tokens`` hash id -> {role, channel, name, hash, created, expires} (bound: the tokens
    created and not revoked); ``token_used`` hash id -> when a worker last checked it in
    Redis (bound: as tokens; revocation deletes both); ``epochs`` hash name -> the user's
    session generation, moved on by a role change, password reset, removal or revoke
    (bound: the names ever created);
    ``s:<sha256>`` a login session {user, epoch, created, until} (TTL session_idle_s,
    sliding, never past until = login + session_ttl_s); ``tries:<who>`` login attempts
    per address (``ip:<address>``), per user and address (``ua:<sha256 of name>|<address>``)
    and per user (``u:<sha256 of name>``): TTL 60 s, or a delay up to 15 minutes once over
    the limit (bound: the attempts of the last 15 minutes).
    """

    base: str

    @classmethod
    def of(cls, prefix: str) -> AuthKeys:
        return cls(f"{prefix}:auth:{{{prefix}:auth}}")

    @property
    def users(self) -> str:
        return f"{self.base}:users"

    @property
    def tokens(self) -> str:
        return f"{self.base}:tokens"

    @property
    def token_used(self) -> str:
        return f"{self.base}:token_used"

    @property
    def epochs(self) -> str:
        return f"{self.base}:epochs"

    def session(self, digest: str) -> str:
        return f"{self.base}:s:{digest}"

    def tries(self, who: str) -> str:
        return f"{self.base}:tries:{who}"


@dataclass(frozen=True)
class RuleKeys:
    """Versioned rule bundles (engine/store/rules.py): ``P:rules:{P}:...``. Tag {P}: one
    slot, so one script publishes, rolls back or seeds (pointer, bundle, history) at once.

    ``seq`` INCR counter of publishes; ``current`` the current version; ``bundles`` hash
    version -> {"digest", "files"} (bound: KEEP_VERSIONS fields); ``ranks`` zset version ->
    ms it last became current (bound: KEEP_VERSIONS); ``history`` list, newest first (bound:
    HISTORY_CAP); ``shadow`` hash {version, author, note, since} of the version run in
    shadow beside the current one (engine/store/ruleshadow.py), absent when none. No TTL:
    rules must not vanish. Pub/sub ``P:rules:changed``: the version just made current (or
    ``shadow:<version>`` when the shadow changed).

    >>> RuleKeys.of("beacon").current, RuleKeys.of("beacon").channel
    ('beacon:rules:{beacon}:current', 'beacon:rules:changed')
    """

    seq: str
    current: str
    bundles: str
    ranks: str
    history: str
    channel: str
    shadow: str

    @classmethod
    def of(cls, key_prefix: str) -> RuleKeys:
        base = f"{key_prefix}:rules:{{{key_prefix}}}"
        return cls(
            f"{base}:seq",
            f"{base}:current",
            f"{base}:bundles",
            f"{base}:ranks",
            f"{base}:history",
            f"{key_prefix}:rules:changed",
            f"{base}:shadow",
        )

    def writes(self) -> list[str]:
        return [self.seq, self.current, self.bundles, self.ranks, self.history, self.shadow]


@dataclass(frozen=True)
class ModelKeys:
    """Signed model snapshots of one model N (engine/store/snapshots.py):
    ``P:models:{P:N}:...``. Tag {P:N}: one model's keys share a slot, so one script
    publishes (record, payload, pointer, history, trim) at once, and models spread over
    the cluster.

    ``seq`` INCR counter of publishes; ``current`` the current version; ``records`` hash
    version -> "<hmac hex>.<manifest>" and ``payloads`` hash version -> pickled model
    (bound: keep fields); ``ranks`` zset version -> n (bound: keep); ``history`` list,
    newest first (bound: history_cap). No TTL: a model must not vanish while workers are
    down. Pub/sub ``P:models:changed`` (every model): the version just made current.

    >>> k = ModelKeys.of("beacon", "risk")
    >>> k.current, k.channel
    ('beacon:models:{beacon:risk}:current', 'beacon:models:changed')
    """

    seq: str
    current: str
    records: str
    payloads: str
    ranks: str
    history: str
    channel: str

    @classmethod
    def of(cls, key_prefix: str, name: str) -> ModelKeys:
        check_name(name)
        base = f"{key_prefix}:models:{{{key_prefix}:{name}}}"
        return cls(
            f"{base}:seq",
            f"{base}:current",
            f"{base}:records",
            f"{base}:payloads",
            f"{base}:ranks",
            f"{base}:history",
            model_channel(key_prefix),
        )

    def all(self) -> list[str]:
        return [self.seq, self.current, self.records, self.payloads, self.ranks, self.history]


def model_channel(key_prefix: str) -> str:
    """Pub/sub channel announcing every model's new current version."""
    return f"{key_prefix}:models:changed"


@dataclass(frozen=True)
class FeedbackKeys:
    """The trainer's inputs and pending labels (engine/store/feedback.py):
    ``P:fb:{P:fb}:...``, the trainer their only writer. Tag {P:fb}: ``remember``'s MULTI
    over ``x``, ``last`` and ``pending:*`` and the MGETs over many decisions need one slot;
    one trainer writes them all, so one node holding them costs no spread.

    ``x:<decision>`` inputs the decision used (learner.inputs_of); ``last:<customer>`` the
    customer's latest decision id and time; ``ignored:<decision>|<action>`` counted as
    ignored (a late accept corrects it); ``fraud:<decision>`` the verdict a report gave a
    transaction, ``1`` fraud or ``0`` confirmed legitimate (a transaction that matured
    without one has no key: not pending and no verdict says it), so a later report turns
    it over once and a repeated one does nothing; ``seen:<digest>`` labels already learned, so a
    redelivery is a no-op (all five TTL feedback_ttl_s); zsets ``pending:offer``
    "<decision>|<action>" -> answer deadline, ``pending:fraud`` decision -> maturity (then
    provisionally legitimate), ``pending:churn`` customer -> dormancy due (then churned), each swept when
    due; ``orphans`` labels whose decision is not known yet (bound 10,000); ``quality`` hash
    model -> progressive metrics (bound: the models).

    Which decisions keep inputs (the trainer decides, engine/service/trainer.py ``on_audit``;
    issue 16's memory budget): ``x:<decision>`` is written only for a decision some label
    other than churn can still reach, and then for feedback_ttl_s, because each of these
    reaches it for that long:
    - it showed an offer: its answer until the deadline (``pending:offer``), then, counted as
      ignored, a late answer corrects it while ``ignored:`` lives (feedback_ttl_s);
    - it is a monetary transaction (models.learner.MONETARY_TYPES): matures as a
      provisional negative (``pending:fraud``), and a fraud_report or chargeback, or a
      confirmation, reaches it at any delay, turning the negative over;
    - it raised a risk alert: a risk officer's disposition labels each event the alert
      names, whatever its type.
    Any other decision (a login, a balance inquiry... that showed no offer and raised no
    alert) can only be labelled through churn, and only while it is the customer's latest
    decision: its inputs go inside ``last:<customer>`` (field ``x``) instead, and are gone
    when the customer's next decision replaces it. So a fraud report naming such an event
    finds nothing (dropped as ``unknown_decision``): the fraud model learns transactions,
    and alerted events, only. Labels parked in ``orphans`` before their decision is known
    find it by the same rule when it comes. The served-score report needs nothing more:
    the scores the channel got are kept in the inputs (``s``).
    ``x`` and ``last`` values are packed (engine/store/feedback.py ``pack``: deflate with
    a preset dictionary, ~330 bytes of MEMORY USAGE for a typical record, ~880 as JSON);
    plain JSON written before is still read.
    """

    base: str

    @classmethod
    def of(cls, prefix: str) -> FeedbackKeys:
        return cls(f"{prefix}:fb:{{{prefix}:fb}}")

    def inputs(self, decision_id: str) -> str:
        return f"{self.base}:x:{decision_id}"

    def last(self, customer_id: str) -> str:
        return f"{self.base}:last:{customer_id}"

    def pending(self, kind: str) -> str:
        return f"{self.base}:pending:{kind}"

    def ignored(self, member: str) -> str:
        return f"{self.base}:ignored:{member}"

    def seen(self, digest: str) -> str:
        return f"{self.base}:seen:{digest}"

    def fraud(self, decision_id: str) -> str:
        return f"{self.base}:fraud:{decision_id}"

    @property
    def orphans(self) -> str:
        return f"{self.base}:orphans"

    @property
    def quality(self) -> str:
        return f"{self.base}:quality"


# Not in Redis: the HTTP rate limit (engine/http/ratelimit.py) keeps its buckets in memory,
# per worker process.
