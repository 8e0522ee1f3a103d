"""Outbound scoring as a service: a read-only snapshot of the customer from the store,
then the pure scoring (engine.decide.outbound) with the worker's current rules and models.

Nothing is written: no window, no impression, no dedupe key, no audit record. A campaign
that then contacts the customer reports it as an interaction (or its response as an
``offer_response``), which counts as any other.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.decide.outbound import OutboundScore, Request, score_offers
from engine.errors import BeaconError, StoreError
from engine.service.decisions import DecisionService


class UnknownCustomer(BeaconError):
    """Neither a profile nor any state for the customer."""


class OutboundService:
    def __init__(self, decisions: DecisionService, clock: Callable[[], float] = time.time) -> None:
        self._decisions = decisions  # for its store, rules, scorer and policy, as they are now
        self._clock = clock

    async def score(self, request: Request) -> OutboundScore:
        """Raises :class:`UnknownCustomer`, or :class:`StoreError` when Redis cannot answer."""
        d = self._decisions
        rules = d.rules
        if rules is None:
            raise StoreError("rules are still loading")  # not reached: the API checks first
        now = self._clock()
        known = [o for o in request.offers if o in rules.offer_index]
        found = await d.store.peek(request.customer_id, now, known)
        if found is None:
            raise UnknownCustomer(f"no profile or state for {request.customer_id}")
        snap, contacts = found
        return score_offers(request, snap, contacts, rules, d.scorer, d.policy, now)
