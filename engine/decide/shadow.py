"""What a shadow rules version would have done differently. Pure: no I/O.

A worker with a shadow version (``beacon rules publish --shadow``) decides each event a
second time with it, through the same :func:`engine.decide.pipeline.decide`, on the same
state snapshot, features and scores, and acts on none of it. :func:`compare` says where
the two decisions differ: the risk ``verdict``, the ``alerts`` fired (by rule), the
``offers`` ranked (every candidate action, in rank order, before the contact policy
picks what is shown). A difference becomes a ``decisions.shadow`` record
(:meth:`ShadowDiff.record`, engine/contract/topics/decisions.shadow.schema.json).

>>> from engine.domain.decision import Decision, Risk, Alert
>>> from engine.domain.events import Event
>>> ev = Event("e1", "C1", "atm", "withdrawal", 1795428000.0)
>>> def made(verdict, rules, version):
...     alerts = tuple(Alert(f"a-{r}", r, "high", "why", verdict) for r in rules)
...     return Decision("d1", ev, (), Risk(0.1, verdict), alerts, {"rules": version}, {}, {})
>>> compare(made("allow", [], "v1-a"), made("allow", [], "v2-b")) is None
True
>>> diff = compare(made("allow", [], "v1-a"), made("review", ["big_cash"], "v2-b"))
>>> diff.kinds, diff.added, diff.removed, diff.verdict_changed
(('verdict', 'alerts'), ('big_cash',), (), True)
>>> compare(made("review", ["a", "b"], "v1-a"), made("review", ["b", "a"], "v2-b")) is None
True
>>> diff.record()["versions"], diff.record()["shadow"]
({'live': 'v1-a', 'shadow': 'v2-b'}, {'verdict': 'review', 'alerts': ['big_cash'], 'offers': []})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from engine.domain.decision import Decision

KINDS = ("verdict", "alerts", "offers")


@dataclass(frozen=True, slots=True)
class Side:
    """One version's answer, as far as the comparison goes."""

    verdict: str
    alerts: tuple[str, ...]  # rule ids that fired, in the pack's order
    offers: tuple[str, ...]  # action ids ranked, best first

    @classmethod
    def of(cls, d: Decision) -> Side:
        return cls(d.risk.verdict, tuple(a.rule_id for a in d.alerts), tuple(a.id for a in d.actions))

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "alerts": list(self.alerts), "offers": list(self.offers)}


@dataclass(frozen=True, slots=True)
class ShadowDiff:
    live_decision: Decision
    live: Side
    shadow: Side
    shadow_version: str
    kinds: tuple[str, ...]  # which of KINDS differ, in that order
    added: tuple[str, ...]  # rules fired by the shadow version only
    removed: tuple[str, ...]  # rules fired by the live version only

    @property
    def verdict_changed(self) -> bool:
        return self.live.verdict != self.shadow.verdict

    def blamed(self) -> tuple[str, ...]:
        """The rules a verdict disagreement is counted against: those fired by one version
        only; ``(other)`` when the same rules fired (a typology, a threshold, the model)."""
        return (self.added + self.removed) or ("(other)",)

    def record(self) -> dict[str, Any]:
        d, ev = self.live_decision, self.live_decision.event
        return {
            "decision_id": d.decision_id,
            "event_id": ev.event_id,
            "customer_id": ev.customer_id,
            "channel": ev.channel,
            "type": ev.type,
            "ts": ev.ts,
            "versions": {"live": str(d.versions.get("rules", "")), "shadow": self.shadow_version},
            "differences": list(self.kinds),
            "live": self.live.to_dict(),
            "shadow": self.shadow.to_dict(),
            "rules_added": list(self.added),
            "rules_removed": list(self.removed),
        }

    def record_bytes(self) -> bytes:
        return orjson.dumps(self.record())


def compare(live: Decision, shadow: Decision) -> ShadowDiff | None:
    """Where ``shadow`` (the shadow version's decision of the same event) differs from
    ``live``; None when it would have answered the same."""
    a, b = Side.of(live), Side.of(shadow)
    # Alerts as a set (a candidate may order its packs otherwise); offers in rank order.
    same = (a.verdict == b.verdict, sorted(a.alerts) == sorted(b.alerts), a.offers == b.offers)
    kinds = tuple(k for k, equal in zip(KINDS, same, strict=True) if not equal)
    if not kinds:
        return None
    fired_live, fired_shadow = set(a.alerts), set(b.alerts)
    added = tuple(r for r in b.alerts if r not in fired_live)
    removed = tuple(r for r in a.alerts if r not in fired_shadow)
    version = str(shadow.versions.get("rules", ""))
    return ShadowDiff(live, a, b, version, kinds, added, removed)
