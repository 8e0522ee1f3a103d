"""Where a customer's keys live: one Redis, or spread over a Redis Cluster's slots.

On one Redis (or a single primary with replicas) a customer's keys are ``P:{<customer>}``
plus a suffix (engine/store/keys.py), every batch is one script call, and every commit
appends to the one outbox stream ``P:outbox``.

On a Redis Cluster a script may touch only keys of one slot, and a commit must write the
customer's state and its outbox entry in one atomic step. So customers are spread over
``redis_slot_groups`` groups: a customer's keys are ``P:{<group tag>}:<customer>`` plus the
same suffixes, each group has its own outbox stream in its own slot, and a batch becomes
one script call per group, sent to the groups' nodes at once. Each group's tag is chosen
so that the groups' slots lie evenly over the 16,384, which a cluster's masters split in
ranges: 64 groups over 3 masters is 21, 21 and 22 groups. The group of a customer is a
hash of the id, so it never changes while ``redis_slot_groups`` does not.

Two things a commit changes are not a customer's: the customers seen on a device (the
device's own slot) and the impressions of an offer today (one hash for every customer). On
a cluster they are kept outside the scripts: the state adapter updates the device's key
beside the ingest call, and the daily counts are read before a commit and added by the
relay when it delivers the entry (engine/store/outbox.py), so a daily cap may be passed
by the impressions of the decisions in flight, never undercounted.

>>> one = KeyLayout.of("beacon", cluster=False, groups=64)
>>> one.customer("C1"), one.outboxes, one.caps("20261204")
('beacon:{C1}', ('beacon:outbox',), 'beacon:caps:20261204')
>>> many = KeyLayout.of("beacon", cluster=True, groups=64)
>>> many.customer("C1") == many.group_key(many.group_of("C1")) + ":C1"
True
>>> len(many.outboxes), len({key_slot(k.encode()) for k in many.outboxes})
(64, 64)
>>> many.caps("20261204")
'beacon:caps:{beacon:caps}:20261204'
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from engine.store import keys


@functools.cache
def group_tags(groups: int) -> tuple[str, ...]:
    """One hash tag per group, group k's slot in the middle quarter of the k-th of ``groups``
    equal ranges: away from the ends, so masters that split the slots in even ranges (as
    ``redis-cli --cluster create`` does) get even shares of the groups.

    >>> tags = group_tags(4)
    >>> [key_slot(t.encode()) * 4 // REDIS_CLUSTER_HASH_SLOTS for t in tags]
    [0, 1, 2, 3]
    """
    width = REDIS_CLUSTER_HASH_SLOTS / groups
    found: dict[int, str] = {}
    n = 0
    while len(found) < groups:
        tag = f"g{n}"
        slot = key_slot(tag.encode())
        k = int(slot // width)
        if abs(slot - (k + 0.5) * width) <= width / 8:
            found.setdefault(k, tag)
        n += 1
    return tuple(found[k] for k in range(groups))


@dataclass(frozen=True)
class KeyLayout:
    prefix: str
    cluster: bool
    tags: tuple[str, ...]

    @classmethod
    def of(cls, prefix: str, cluster: bool, groups: int) -> KeyLayout:
        return cls(prefix, cluster, group_tags(groups) if cluster else ())

    def group_of(self, customer_id: str) -> int:
        """The customer's group (0 on one Redis)."""
        if not self.cluster:
            return 0
        return zlib.crc32(customer_id.encode()) % len(self.tags)

    def group_key(self, group: int) -> str:
        return f"{self.prefix}:{{{self.tags[group]}}}"

    def customer(self, customer_id: str, group: int | None = None) -> str:
        """The key the scripts get as KEYS[i] and extend with a suffix (``group``: the
        customer's, when the caller has it already)."""
        if not self.cluster:
            return keys.customer(self.prefix, customer_id)
        return f"{self.group_key(self.group_of(customer_id) if group is None else group)}:{customer_id}"

    def outbox(self, group: int) -> str:
        """The stream a commit in ``group`` appends to: in the group's slot on a cluster."""
        if not self.cluster:
            return keys.outbox(self.prefix)
        return self.group_key(group) + ":outbox"

    @property
    def outboxes(self) -> tuple[str, ...]:
        if not self.cluster:
            return (keys.outbox(self.prefix),)
        return tuple(self.outbox(g) for g in range(len(self.tags)))

    def caps(self, day: str) -> str:
        """Impressions per offer on ``day`` (yyyymmdd): written by the commit script on one
        Redis, by the relay on a cluster (its own slot there)."""
        if not self.cluster:
            return self.prefix + keys.DAILY_CAPS + day
        return f"{self.prefix}:caps:{{{self.prefix}:caps}}:{day}"

    def device(self, device_id: str) -> str:
        """The customers seen on a device in 24 h (the device's own slot)."""
        return self.prefix + keys.DEVICE_TAG + device_id + keys.DEVICE_CUSTOMERS

    def suppression(self, customer_id: str, rule_id: str) -> str:
        return self.customer(customer_id) + keys.SUPPRESS + rule_id
