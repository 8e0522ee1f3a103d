"""Which event times a worker accepts: the live clock, or a replayed history's own.

Live (``BEACON_EVENT_CLOCK=wall``), an event older than ``BEACON_MAX_EVENT_AGE_S`` behind
the server clock is refused ``ts_too_old``: its windows are gone. A deployment that
replays a bank's history (``history``, with its own key prefix) measures that age from the
newest event it has accepted instead, so a history of any age is decided as it was then,
while a straggler far behind the replay is still refused. A ``ts`` in the future is
refused against the server clock either way.

>>> from engine.errors import EventError
>>> from engine.settings import Settings
>>> s = Settings(event_clock="history", max_event_age_s=86400.0)
>>> clock = EventClock(s)
>>> old = b'{"event_id":"e1","customer_id":"c1","channel":"atm","type":"login","ts":1000000000}'
>>> clock.parse(old).ts, clock.newest
(1000000000.0, 1000000000.0)
>>> late = old.replace(b'e1', b'e2').replace(b'1000000000', b'999000000')
>>> try:
...     clock.parse(late)
... except EventError as err:
...     print(err.code)
ts_too_old
"""

from __future__ import annotations

import time

from engine.domain.events import Event, parse_event
from engine.settings import Settings


class EventClock:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.history = settings.event_clock == "history"
        self.newest = float("-inf")  # the newest event time accepted (history mode)

    def parse(self, raw: bytes) -> Event:
        """Parse and validate one event against this worker's clock."""
        if not self.history:
            return parse_event(raw, self.settings, time.time())
        event = parse_event(raw, self.settings, time.time(), self.newest - self.settings.max_event_age_s)
        if event.ts > self.newest:
            self.newest = event.ts
        return event
