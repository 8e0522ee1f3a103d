"""One exception hierarchy for Beacon; library errors are converted at the boundary."""

from __future__ import annotations


class BeaconError(Exception):
    """Base class of every error Beacon raises on purpose."""


class ConfigError(BeaconError):
    """Settings or configuration files are invalid."""


class EventError(BeaconError):
    """An interaction event is invalid.

    ``code`` is machine-readable (stable, snake_case); ``field`` names the offending
    field when there is one.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "field": self.field, "message": self.message}


class StoreError(BeaconError):
    """The state store (Redis) failed or is unreachable. ``kind`` (connection, timeout,
    response, permission (Redis ACL: NOPERM), auth (WRONGPASS), cross_slot, other) is
    what the metrics count it by."""

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class BrokerError(BeaconError):
    """The message broker failed or is unreachable."""


class InfraError(BeaconError):
    """An embedded server could not be started or stopped."""
