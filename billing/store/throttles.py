"""Fixed-window use counters in Table Storage, claimed atomically across instances.

throttles: PartitionKey = the key (already a digest, see billing/portal/throttle.py), RowKey =
"window"; `window_start` and `uses`. A use is claimed with a conditional write (ETag): of requests
sent at the same moment, each claim that lands was counted, and none passes a full window.
"""

from __future__ import annotations

import contextlib
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from billing.portal.throttle import Limit

WINDOW_ROW = "window"
# Conditional writes tried before giving up. Every lost race means another claim landed, and at most
# `uses` can land per window, so a claimer sees the window full after a few rounds; one that still
# loses every round is refused (it never passes by default).
_TRIES = 12


class Throttles:
    def __init__(self, table: TableClient) -> None:
        self._table = table

    def take(self, key: str, limit: Limit, now: int) -> int:
        for _ in range(_TRIES):
            found = self._read(key)
            if found is None:
                if self._create(key, now):
                    return 0
                continue
            start, uses, etag = found
            if now - start >= limit.window_seconds:
                start, uses = now, 0  # the window has passed: this claim opens the next one
            elif uses >= limit.uses:
                return max(1, start + limit.window_seconds - now)
            if self._replace(key, start, uses + 1, etag):
                return 0
        return 1

    def clear(self, key: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self._table.delete_entity(key, WINDOW_ROW)

    def _read(self, key: str) -> tuple[int, int, str] | None:
        try:
            entity = self._table.get_entity(key, WINDOW_ROW)
        except ResourceNotFoundError:
            return None
        return int(entity["window_start"]), int(entity["uses"]), str(entity.metadata["etag"])

    def _create(self, key: str, now: int) -> bool:
        try:
            self._table.create_entity(self._entity(key, now, 1))
        except ResourceExistsError:
            return False
        return True

    def _replace(self, key: str, start: int, uses: int, etag: str) -> bool:
        try:
            self._table.update_entity(
                self._entity(key, start, uses),
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    @staticmethod
    def _entity(key: str, start: int, uses: int) -> dict[str, Any]:
        return {"PartitionKey": key, "RowKey": WINDOW_ROW, "window_start": start, "uses": uses}
