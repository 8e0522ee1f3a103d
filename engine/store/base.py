"""What the services and the HTTP API need of each store: interfaces only, no Redis here.

Each Redis adapter beside this module satisfies one of these Protocols structurally (as
``models.scorer.ModelScorer`` satisfies :class:`engine.domain.scoring.Scorer`), and so do
the in-memory fakes the unit tests share (``tests/fakes.py``):

- ``CustomerState``: ``state.StateStore``; taken by service.decisions, http.api, http.alerts
- ``AlertInbox``: ``alerts.AlertDesk``; taken by http.alerts, agents.desk
- ``RuleSource``: ``rules.RuleStore``; taken by service.rulewatch
- ``SnapshotSource``: ``snapshots.SnapshotStore``; taken by service.modelwatch
- ``FeedbackLedger``: ``feedback.FeedbackStore``; taken by the trainer
- ``Credentials``: ``users.AuthStore``; taken by http.guard

Every method raises :class:`engine.errors.StoreError` when the store cannot answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from engine.domain.decision import Decision
from engine.domain.events import Event
from engine.domain.state import Snapshot
from engine.rules.ruleset import Offer

if TYPE_CHECKING:  # values defined beside their adapters; not imported at run time
    from engine.decide.outbound import Contacts
    from engine.store.alerts import AlertFilter, AlertPage
    from engine.store.users import Principal

T_co = TypeVar("T_co", covariant=True)


class CustomerState(Protocol):
    """Customer state for decisions: events in, snapshots out; decisions in, committed out."""

    async def ingest(self, events: Sequence[Event]) -> list[Snapshot]:
        """Dedupe, update and read the state of each event (a repeat changes nothing and
        carries the body stored for it)."""
        ...

    async def commit(
        self, decisions: Sequence[Decision], offers: Mapping[str, Offer], timings_ms: dict[str, float]
    ) -> list[tuple[Decision | None, bytes]]:
        """Apply contact-policy caps and alert suppression, store the answers and queue
        their records (audit, alerts, label) in the outbox; returns each decision as
        committed with the exact body the channel gets (None for a decision committed
        before: the call was resent)."""
        ...

    async def customer_view(self, customer_id: str) -> dict[str, Any]: ...

    async def peek(
        self, customer_id: str, now: float, offer_ids: Sequence[str]
    ) -> tuple[Snapshot, Contacts] | None:
        """The customer's state and contact history, read only (outbound scoring); None
        for a customer with neither a profile nor any state."""
        ...

    async def put_profile(self, customer_id: str, profile: dict[str, Any], ttl_s: int) -> None: ...

    async def read_profile(self, customer_id: str) -> bytes | None: ...

    async def swap_profile(
        self, customer_id: str, expected: bytes | None, profile: bytes, entry: bytes, ttl_s: int, keep: int
    ) -> bool: ...

    async def profile_history(self, customer_id: str, limit: int) -> list[dict[str, Any]]: ...

    async def ping(self) -> None: ...


class AlertInbox(Protocol):
    """The risk officers' alert desk: raise, group, move, snooze, list, watch."""

    async def raise_alert(self, alert: Mapping[str, Any], now_ms: int) -> tuple[str, str]: ...

    async def move(self, alert_id: str, action: str, who: str, now_ms: int, note: str = "",
                   assignee: str = "", disposition: str = "") -> dict[str, Any]: ...  # fmt: skip

    async def backlog(self) -> dict[tuple[str, str], int]: ...

    async def get(self, alert_id: str) -> dict[str, Any] | None: ...

    async def audit(self, alert_id: str) -> list[dict[str, Any]]: ...

    async def find(self, flt: AlertFilter, limit: int = 50, before_ms: int | None = None,
                   scan_max: int = ..., cursor: str | None = None) -> AlertPage: ...  # fmt: skip

    async def counts(
        self, flt: AlertFilter, now_ms: int, scan_max: int = ...
    ) -> tuple[dict[str, int], bool]: ...

    async def note(self, alert_id: str, who: str, now_ms: int, action: str, note: str) -> None: ...

    async def due_escalations(self, now_ms: int) -> list[str]: ...

    async def snooze(self, customer_id: str, rule_id: str, seconds: int) -> None: ...

    def changes(self) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any] | None]]: ...


class Announcements(Protocol[T_co]):
    """A live subscription to new versions: ``wait`` returns as soon as one is announced."""

    async def wait(self, timeout: float) -> T_co: ...


class RuleSource(Protocol):
    """Rule versions as a worker reads them (publishing is the CLI's, on the adapter)."""

    async def current_version(self) -> str | None: ...

    async def current(self) -> tuple[str, dict[str, str]] | None: ...

    async def current_signed(self) -> tuple[str, dict[str, str], str | None] | None: ...

    async def seed_if_empty(
        self, files: Mapping[str, str], author: str = "beacon worker", note: str = ""
    ) -> str | None: ...

    def notifications(self) -> AbstractAsyncContextManager[Announcements[bool]]: ...


class SnapshotSource(Protocol):
    """Model snapshots as a worker reads them: verified before they are unpickled."""

    async def current_version(self, name: str) -> str | None: ...

    async def latest(
        self, name: str, running: str | None = None
    ) -> tuple[str, object, dict[str, Any]] | None: ...

    def notifications(self) -> AbstractAsyncContextManager[Announcements[str | None]]: ...


class FeedbackLedger(Protocol):
    """The trainer's memory: decision-time inputs, pending labels, labels already learned."""

    async def remember(
        self,
        decision_id: str,
        inputs: Mapping[str, Any],
        offer_deadline: float | None,
        fraud_maturity: float | None,
        churn_due: float = float("inf"),
        churn_labelled: float = 0.0,
        keep: bool = True,
    ) -> None: ...

    async def recall(self, decision_id: str) -> dict[str, Any] | None: ...

    async def last_of(self, customer_id: str) -> dict[str, Any] | None: ...

    async def first_time(self, label: Mapping[str, Any]) -> bool: ...

    async def resolve_offer(self, decision_id: str, action: str) -> str: ...

    async def resolve_churn(self, customer_id: str) -> None: ...

    async def resolve_fraud(self, decision_id: str, fraud: bool, rank: int = 1) -> str: ...

    async def due(self, kind: str, now: float, limit: int = 500) -> list[str]: ...

    async def park(self, label: Mapping[str, Any], parked_at: float) -> None: ...

    async def waiting(self) -> int: ...

    async def orphans(self, limit: int = 500) -> list[dict[str, Any]]: ...

    async def save_quality(self, summaries: Mapping[str, Any]) -> None: ...

    async def load_quality(self) -> dict[str, Any]: ...


class Credentials(Protocol):
    """Who a token or a session is; person logins."""

    async def token_principal(self, token: str) -> Principal | None: ...

    async def session_principal(self, session: str) -> Principal | None: ...

    async def login(self, name: str, password: str, remote: str) -> str: ...
