"""Reading and checking settings values: the half of engine/settings.py that is not the fields."""

from __future__ import annotations

import ipaddress
import tomllib
import typing
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

EVENT_CLOCKS = ("wall", "history")

_BOOLEAN_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def check_settings(self: Any) -> None:
    """Refuse settings that contradict each other or would switch a guard off.

    ``self`` is an ``engine.settings.Settings`` (not imported: that module imports this one).
    """
    if not self.channels:
        raise ConfigError("channels: at least one channel is required")
    positive: tuple[str, ...] = ("login_failures_per_minute", "login_concurrency", "login_hash_threads")
    positive += ("dedupe_answer_ttl_s", "alert_webhook_horizon_s", "alert_webhook_retry_s")
    positive += ("alert_webhook_visibility_s",)
    for name in ("max_event_bytes", "batch_max", "partitions", "http_port", *positive):
        if getattr(self, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
    if not 1 <= self.redis_slot_groups <= 1024:
        raise ConfigError(f"redis_slot_groups must be 1 to 1024, got {self.redis_slot_groups}")
    _check_credentials(self)
    if self.event_clock not in EVENT_CLOCKS:
        clocks = ", ".join(EVENT_CLOCKS)
        raise ConfigError(f"event_clock must be one of {clocks}, got {self.event_clock!r}")
    if not 0 < self.risk_step_up <= self.risk_block <= 1:
        raise ConfigError("need 0 < risk_step_up <= risk_block <= 1")
    for name in ("unauthenticated_per_s", "unauthenticated_global_per_s"):
        burst = name.replace("per_s", "burst")
        if getattr(self, name) > 0 and getattr(self, burst) < 1:
            raise ConfigError(f"{burst} must be at least 1 while {name} is set")
    if not self.auth_required and not _loopback(self.http_host):
        raise ConfigError(
            f"auth_required is off while the API listens on {self.http_host}: every caller would be an"
            " anonymous risk_admin; turn authentication on, or bind to 127.0.0.1 / ::1"
        )
    if not self.cookie_secure and not _loopback(self.http_host):
        raise ConfigError(
            f"cookie_secure is off while the API listens on {self.http_host}: session cookies would"
            " travel over plain http; keep it on (TLS in front), or bind to 127.0.0.1 / ::1"
        )
    if not (self.record_signing_key or self.record_verify_keys) and not _loopback(self.http_host):
        raise ConfigError(
            f"record_signing_key is not set while the API listens on {self.http_host}: records on"
            " risk.alerts, feedback and decisions.audit would be neither signed nor checked, so any"
            " Kafka writer could raise alerts or teach the models; set BEACON_RECORD_SIGNING_KEY(_FILE),"
            " or bind to 127.0.0.1 / ::1"
        )
    if self.session_idle_s <= 0 or not 0 < self.token_ttl_days <= self.token_max_days:
        raise ConfigError("need session_idle_s > 0 and 0 < token_ttl_days <= token_max_days")
    if self.stream_recheck_s <= 0:
        raise ConfigError("stream_recheck_s must be positive")
    for entry in self.trusted_proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {entry!r} is not an address or network") from exc


def _check_credentials(self: Any) -> None:
    """Kafka SASL needs a known protocol and mechanism, a username and a password; a Redis
    password needs a username (an ACL user of config/redis/users.acl)."""
    if self.kafka_security_protocol not in ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"):
        protocol = self.kafka_security_protocol
        raise ConfigError(
            f"kafka_security_protocol must be PLAINTEXT, SASL_PLAINTEXT or SASL_SSL, got {protocol!r}"
        )
    if self.kafka_sasl_mechanism not in ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"):
        mechanism = self.kafka_sasl_mechanism
        raise ConfigError(
            f"kafka_sasl_mechanism must be SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN, got {mechanism!r}"
        )
    sasl = self.kafka_security_protocol != "PLAINTEXT"
    if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
        raise ConfigError(
            f"kafka_security_protocol {self.kafka_security_protocol} needs kafka_sasl_username"
            " and kafka_sasl_password"
        )
    if self.redis_password and not self.redis_username:
        raise ConfigError("redis_password needs redis_username (a user of config/redis/users.acl)")


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    return dict(data.get("beacon", data))


def coerce(name: str, value: Any, typ: Any) -> Any:
    try:
        if typ is bool or typ == "bool":
            if isinstance(value, bool):
                return value
            word = str(value).strip().lower()
            if word not in _BOOLEAN_WORDS:
                # "required", "enabled", "Y" or a typo must not switch a guard off.
                words = ", ".join(sorted(_BOOLEAN_WORDS))
                raise ConfigError(f"setting {name}: {value!r} is not a boolean (one of {words})")
            return _BOOLEAN_WORDS[word]
        if typ is int:
            return int(value)
        if typ is float:
            return float(value)
        if typing.get_origin(typ) is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot read {value!r} as {typ}") from exc


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: it may resolve to anything
