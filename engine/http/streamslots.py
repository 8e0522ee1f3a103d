"""How many live streams each principal, and the worker, may hold at once. Pure.

Each open stream costs the worker a connection, a queue and a share of every change
(engine/store/changefeed.py): one caller must not be able to take them all.

>>> slots = StreamSlots(per_principal=2, total=3)
>>> [slots.take("ann"), slots.take("ann"), slots.take("ann"), slots.take("bob"), slots.take("cy")]
[True, True, False, True, False]
>>> slots.give_back("ann"); slots.take("cy")
True
"""

from __future__ import annotations

from collections import Counter


class StreamSlots:
    def __init__(self, per_principal: int, total: int) -> None:
        self.per_principal = per_principal
        self.total = total
        self._held: Counter[str] = Counter()

    def take(self, principal: str) -> bool:
        if self._held[principal] >= self.per_principal or sum(self._held.values()) >= self.total:
            return False
        self._held[principal] += 1
        return True

    def give_back(self, principal: str) -> None:
        self._held[principal] -= 1
        if self._held[principal] <= 0:
            del self._held[principal]
