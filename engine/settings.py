"""One typed settings object, built once at start-up and passed down.

Values come, lowest precedence first, from the defaults below, an optional TOML file
(``BEACON_CONFIG`` or ``--config``), then ``BEACON_*`` environment variables. Fields
named in ``SECRET_FIELDS`` never appear in ``repr`` or in ``redacted()``.

>>> s = Settings.build(env={"BEACON_HTTP_PORT": "7000", "BEACON_CHANNELS": "atm,mobile"})
>>> s.http_port, s.channels
(7000, ('atm', 'mobile'))
>>> s.topic("decisions.atm")
'decisions.atm'
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.settingscheck import check_settings, coerce, read_toml

SECRET_FIELDS = frozenset(
    {
        "redis_url",
        "redis_password",
        "kafka_sasl_password",
        "metrics_token",
        "record_signing_key",
        "record_verify_keys",
    }
)

# Settings that are gone, and what to do instead: refused, so nothing is silently dropped.
_MOVED = (
    "replaced by BEACON_MODEL_FEATURES, a file naming each model's attributes (see README, Models' inputs)"
)
_HOOKS = (
    "replaced by BEACON_ALERT_WEBHOOK_RECEIVERS, a TOML file of [[receiver]] entries (name, url, "
    "severities, secret_file, full_context), each with its own secret (see README, Alert webhooks)"
)
_REPLACED = {
    "BEACON_MODEL_ATTRIBUTES_NUMERIC": _MOVED,
    "BEACON_MODEL_ATTRIBUTES_CATEGORICAL": _MOVED,
    "BEACON_ALERT_WEBHOOKS": _HOOKS,
    "BEACON_ALERT_WEBHOOK_SECRET": _HOOKS,
    "BEACON_MODEL_SIGNING_KEY": "replaced by Ed25519 keys: BEACON_SIGNING_KEY_FILE (private key, trainer and "
    "admin CLI only) and BEACON_SIGNING_PUBLIC_KEYS (public key files, every worker); create them with "
    "`beacon keys generate DIR` (see README, Signed model snapshots)",
}
DEFAULT_CHANNELS = ("atm", "internet", "mobile", "branch", "call_centre")
DEFAULT_EVENT_TYPES = (
    "login",
    "logout",
    "withdrawal",
    "deposit",
    "transfer",
    "bill_payment",
    "card_payment",
    "balance_inquiry",
    "page_view",
    "product_view",
    "pin_failure",
    "pin_change",
    "device_change",
    "password_reset",
    "complaint",
    "offer_response",
    "account_closure",
    "fraud_report",
    "chargeback",
    "conversion",  # a product opened, from the core systems (matched to offers: issue 18)
)


@dataclass(frozen=True)
class Settings:
    # Where the servers are. Empty means: start the embedded ones (development, CI).
    redis_url: str = field(default="", repr=False)
    # Redis Cluster (engine/store/layout.py): redis_url names any one node, and the client
    # finds the rest. A customer's keys carry the tag of one of redis_slot_groups groups
    # (each a slot spread evenly over the 16,384), so a batch is split into one script
    # call per group, and each group has its own outbox stream. Fixed for the life of the
    # data: changing it moves every customer's keys (they would start afresh).
    redis_cluster: bool = False
    redis_slot_groups: int = 64
    # Redis ACL user of this process (config/redis/users.acl, engine/ops/redisacl.py);
    # empty: the URL's credentials, or none. BEACON_REDIS_PASSWORD_FILE reads a secret file.
    redis_username: str = ""
    redis_password: str = field(default="", repr=False)
    kafka_bootstrap: str = ""
    # Kafka client security: PLAINTEXT (development) or SASL_PLAINTEXT / SASL_SSL with
    # SCRAM-SHA-512 (compose). BEACON_KAFKA_SASL_PASSWORD_FILE reads a secret file.
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    # Namespacing, so tests and several deployments can share one broker / Redis.
    app_id: str = "beacon"
    topic_prefix: str = ""
    key_prefix: str = "beacon"
    rules_dir: str = ""  # rule packs seeded into Redis when none is published; "": the project's rules/
    rules_poll_s: float = 2.0  # how often a worker checks for a newly published rule version
    # Model snapshots (engine/store/snapshots.py), Ed25519: the private key PEM file that signs them
    # (trainer and admin CLI only; a worker refuses to start with it) and the comma list of public key
    # PEM files that verify them (several during a rotation). Empty: nothing published / loaded.
    signing_key_file: str = ""
    signing_public_keys: str = ""
    model_poll_s: float = 2.0  # how often a worker checks for a newly published model snapshot
    # Contract of the interaction event.
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    max_event_bytes: int = 16 * 1024
    max_clock_skew_s: float = 300.0
    max_event_age_s: float = 30 * 86400.0
    # What "too old" is measured against: "wall" (the server clock: live traffic) or
    # "history" (the newest event time this worker has accepted: a deployment that replays
    # a bank's history, with its own key prefix, so years-old events are decided as they were
    # then). A future ts is refused against the server clock in both.
    event_clock: str = "wall"
    # Bounds and lifetimes of per-customer state (nothing grows forever).
    state_ttl_s: int = 35 * 86400
    dedupe_ttl_s: int = 7 * 86400
    # How long the full answer is kept for a repeat (byte for byte); after that, until
    # dedupe_ttl_s, an id-only marker acknowledges a repeat as one (engine/store/keys.py).
    # An hour: past HTTP client retries and Kafka redeliveries after a restart.
    dedupe_answer_ttl_s: int = 3600
    profile_ttl_s: int = 400 * 86400
    profile_history_max: int = 50  # changes kept per customer (who, when, what), for profile_ttl_s
    recent_events: int = 50
    known_devices: int = 20
    recent_decisions: int = 20
    contact_history: int = 200
    open_alerts: int = 50
    # HTTP API served by the worker.
    http_host: str = "127.0.0.1"
    http_port: int = 6066
    # The largest request body any endpoint reads; a larger one is answered 413 before it
    # is read into memory. (An event over max_event_bytes is refused too, with 400.)
    http_max_body_bytes: int = 64 * 1024
    # Requests per second per credential (per client address without one), in bursts of
    # up to rate_limit_burst, and for the whole worker (rate_limit_global_*); 429 beyond.
    # 0: no limit. The defaults follow what one worker was measured to serve over HTTP on
    # a 2-core machine (BENCHMARKS.md, 2026-12-03: p99 under 25 ms up to 350-500/s, ~1,000/s
    # at most): one credential gets at most 400/s, so one channel cannot take a worker
    # from the others, and the worker sheds beyond 800/s before the queue and the latency
    # budget overflow. Set both per deployment from your own `make bench`.
    rate_limit_per_s: float = 400.0
    rate_limit_burst: int = 800
    rate_limit_global_per_s: float = 800.0
    rate_limit_global_burst: int = 1600
    # Streaming and latency tuning (see BENCHMARKS.md for how these were chosen).
    partitions: int = 4
    retention_ms: int = 3_600_000
    batch_max: int = 256
    fetch_max_wait_ms: int = 5
    # The worker's fetch wait after a second without records (agents/transport.py); 0 keeps
    # fetch_max_wait_ms always.
    fetch_idle_wait_ms: int = 50
    producer_linger_ms: float = 1.0  # decisions: a channel is waiting
    bulk_linger_ms: float = 50.0  # audit, alerts, DLQ: fewer, larger batches
    # The bulk producer is idempotent (a retried send is not written twice). The embedded
    # broker (Tansu) refuses idempotent producers, so runs on it turn this off.
    bulk_idempotence: bool = True
    rebalance_timeout_s: float = 4.0
    commit_interval_s: float = 1.0
    store_timeout_s: float = 2.0  # Redis socket timeout; a big batch on a busy host needs room
    decision_timeout_s: float = 1.0  # HTTP: answer degraded (no state) rather than wait longer
    # Records of degraded HTTP answers (their audit record and event: Redis was unavailable,
    # so they cannot go to the outbox) kept in memory while the broker is unavailable too;
    # when full, the oldest is dropped and counted (agents/bulk.py).
    spool_max_records: int = 100_000
    # The outbox (engine/store/outbox.py): an entry a relay read and did not deliver is
    # taken over by a relay after this long (a worker died, or the broker refused it).
    outbox_claim_idle_s: float = 10.0
    # Decisions.
    max_actions: int = 3
    # A YAML file naming each model's own inputs: event attributes and profile fields, with
    # types (models/featureconfig.py). "": the built-in inputs only.
    model_features: str = ""
    # The trainer's label rules and snapshot cadence (engine/service/trainer.py).
    offer_response_window_s: float = 3 * 86400.0  # no answer by then: the offer was ignored
    offer_attribution_s: float = 30 * 86400.0  # offer reports: a conversion this long after counts
    # No fraud report by then: legitimate, provisionally (a later report corrects it).
    # Hours, not the 30 days a chargeback may take: until negatives mature the fraud
    # model learns positives alone and drifts to "everything is fraud" (README "Fraud labels").
    fraud_maturity_s: float = 2 * 3600.0
    churn_horizon_s: float = 60 * 86400.0  # seen again after this: not churned
    feedback_ttl_s: int = 45 * 86400  # decision inputs kept for late labels (>= fraud maturity)
    snapshot_every_labels: int = 200
    snapshot_interval_s: float = 10.0
    trainer_metrics_port: int = 0  # the trainer's /metrics (model quality); 0: not served
    auth_required: bool = True  # every endpoint but health needs a token or a login
    session_ttl_s: int = 8 * 3600
    # Console sessions (engine/store/users.py): one unused this long ends (sliding; each
    # use in Redis moves it on, at most session_ttl_s after login). Cookies are Secure
    # unless cookie_secure is off, which only a loopback bind allows (plain-http development).
    session_idle_s: int = 30 * 60
    cookie_secure: bool = True
    # API tokens expire: token_ttl_days unless `beacon users token --expires-days` says
    # otherwise, never later than token_max_days after creation.
    token_ttl_days: int = 90
    token_max_days: int = 365
    # Console logins (engine/store/users.py, agents/web.py): failed attempts a minute per
    # user and per client address; passwords checked at once per worker (beyond: 429 at
    # once) and the threads scrypt runs on, off the event loop.
    login_failures_per_minute: int = 5
    login_concurrency: int = 8
    login_hash_threads: int = 2
    # Addresses or CIDR networks of the load balancers / reverse proxies in front of the
    # workers: only from these is X-Forwarded-For believed (engine/http/proxies.py).
    trusted_proxies: tuple[str, ...] = ()
    # Origins (scheme://host[:port]) besides the worker's own Host whose pages may use the
    # session cookie to change state, e.g. the console's public https origin behind a proxy
    # that rewrites Host (engine/http/browser.py). Others get 403 origin_refused.
    allowed_origins: tuple[str, ...] = ()
    # Verified credentials are cached in the worker (engine/http/guard.py): Redis is not
    # asked again for this long, and while Redis fails one stays accepted this long after
    # Redis last vouched for it. Also how late a removed token may still be accepted.
    auth_cache_s: float = 30.0
    auth_stale_s: float = 300.0
    # A credential Redis refused is refused again without asking it for this long (per
    # worker): also how late a token created meanwhile, with that very value, may start to work.
    auth_refused_cache_s: float = 5.0
    # Requests whose credential Redis must check (not verified lately), or that fail
    # authentication without it, per client address (in bursts of up to
    # unauthenticated_burst), and credential checks in Redis for the whole worker
    # (unauthenticated_global_*): limited before Redis is asked, 429 beyond. 0: no limit.
    # Per address: a channel system or a branch's NAT presents a few new credentials at a
    # time (each one is then cached for auth_cache_s), so 20/s is far above any real caller
    # and a flood from one address costs Redis at most that. Per worker: one check is one
    # HGET or GET round trip (~0.1 ms), and the 401 costs the worker about what any small
    # request does (one serves ~1,400-1,800/s, ARCHITECTURE.md): 200/s is about an eighth
    # of a worker and a quarter of its 800/s request budget, while a restart that meets 400
    # callers at once (the burst) still checks them all without a 429.
    unauthenticated_per_s: float = 20.0
    unauthenticated_burst: int = 40
    unauthenticated_global_per_s: float = 200.0
    unauthenticated_global_burst: int = 400
    # A bearer token Prometheus scrapes /metrics with (nothing else); empty: only users'
    # tokens with the viewer role or above. Never logged.
    metrics_token: str = field(default="", repr=False)
    # The risk officers' alert desk.
    alert_group_window_s: int = 3600  # alerts of one customer and typology within this are one
    alert_retention_s: int = 90 * 86400
    alert_sla_critical_s: float = 900.0  # an unacknowledged critical alert escalates after this
    alert_sla_high_s: float = 0.0  # 0: no escalation timer
    # Alert webhooks (engine/http/webhooks.py): a TOML file of [[receiver]] entries, each with
    # its own secret file; deliveries wait in Redis (engine/store/hookbox.py) until received.
    alert_webhook_receivers: str = ""
    alert_webhook_horizon_s: float = 86400.0  # retried with backoff this long, then dead-lettered
    alert_webhook_retry_s: float = 1.0  # first pause; doubles each attempt, at most 1 hour
    alert_webhook_visibility_s: float = 30.0  # a claimed delivery not settled by then is claimed again
    console_url: str = ""  # the console's public base URL, for the link in a webhook body
    # Signed records on risk.alerts, feedback and decisions.audit (engine/domain/recordsig.py):
    # producers sign with record_signing_key under record_key_id; the desk and the trainer
    # refuse unsigned or forged records to <topic>.dlq once any key is set. Never logged.
    record_signing_key: str = field(default="", repr=False)
    record_key_id: str = "k1"
    record_verify_keys: str = field(default="", repr=False)  # "id=secret,id2=secret2" (rotation)
    alert_webhook_allow_http: bool = False  # http:// to a loopback receiver (tests, development)
    # Live inbox streams (GET /v1/alerts/stream) one user or token may hold, and one worker.
    alert_streams_per_principal: int = 5
    alert_streams_max: int = 200
    # An open live stream checks its session or token again this often (through the
    # verified-credential cache): ended at most stream_recheck_s + auth_cache_s after its
    # credential is revoked, expires or its role no longer reads alerts.
    stream_recheck_s: float = 10.0
    risk_step_up: float = 0.5
    risk_block: float = 0.85
    # Operations.
    data_dir: str = ".beacon"
    log_level: str = "info"
    log_format: str = "json"  # json (one object a line, for log shippers) or text (for people)

    @classmethod
    def build(
        cls,
        env: Mapping[str, str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings from defaults, an optional TOML file, env vars and overrides."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        path = config_file or env.get("BEACON_CONFIG")
        if path:
            values.update(read_toml(Path(path)))
        types = typing.get_type_hints(cls)
        for f in fields(cls):
            raw = env.get("BEACON_" + f.name.upper())
            secret_file = env.get("BEACON_" + f.name.upper() + "_FILE")
            if raw is None and secret_file and f.name in SECRET_FIELDS:
                raw = read_secret_file(f.name, secret_file)
            if raw is not None:
                values[f.name] = coerce(f.name, raw, types[f.name])
        values.update(overrides)
        for old in _REPLACED:
            if old in env or old.removeprefix("BEACON_").lower() in values:
                raise ConfigError(f"{old}: {_REPLACED[old]}")
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        settings = cls(**{k: coerce(k, v, types[k]) for k, v in values.items()})
        settings.check()
        return settings

    def check(self) -> None:
        check_settings(self)

    def rules_path(self) -> Path:
        if self.rules_dir:
            return Path(self.rules_dir)
        return Path(__file__).resolve().parent.parent / "rules"

    def topic(self, name: str) -> str:
        return self.topic_prefix + name

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict safe to log or print: secrets are masked."""
        out = dataclasses.asdict(self)
        for name in SECRET_FIELDS:
            if out.get(name):
                out[name] = "***"
        return out


def read_secret_file(name: str, path: str) -> str:
    """``BEACON_<NAME>_FILE``: a secret from a file (Docker secrets), without the final newline."""
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"BEACON_{name.upper()}_FILE: cannot read {path}: {exc.strerror}") from exc
