"""Groups of subscriptions: a stable hash of the subscription id into `GROUPS` buckets.

The usage watermarks keep one row per group, and the subscription links use the group as their
partition, so a usage batch of whole groups reads its links and its watermarks as ranges.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

GROUPS = 1024  # never change for tables in use: a subscription's group must not move


def group_of_number(number: int) -> str:
    return f"{number:04d}"


@lru_cache(maxsize=1 << 18)  # asked many times per subscription and run; 256K ids are a few tens of MB
def group_of(subscription_id: str) -> str:
    return group_of_number(zlib.crc32(subscription_id.encode("utf-8")) % GROUPS)
