"""Idempotency records for Stripe events: one row per event id (PartitionKey), RowKey "event".

A handler claims an event with an insert that fails on a duplicate, so of two instances receiving
the same event at the same moment only one works on it. Row states:
  processing  claimed by a handler at `claimed_at` (unix seconds); stale after STALE_AFTER seconds
  queued      handed to the event work queue; the queue worker claims it from there
  done        applied; `outcome` says what happened
A failed handler deletes its claim, so Stripe's retry (or the queue's) applies the event again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from billing.records import Claim, ClaimKind

ROW_KEY = "event"
STALE_AFTER = 300  # seconds: a claim this old belongs to a handler that died
OUTCOME_MAX = 1000  # characters of the outcome kept (Table Storage strings are up to 32 K)


class ProcessedEvents:
    def __init__(self, table: TableClient, clock: Callable[[], float] = time.time, stale_after: int = STALE_AFTER):
        self._table = table
        self._clock = clock
        self._stale_after = stale_after

    def claim(self, event_id: str, event_type: str, *, take_queued: bool = False) -> Claim:
        """Claim an event; `take_queued` is for the queue worker, which owns queued events."""
        now = int(self._clock())
        entity = {
            "PartitionKey": event_id,
            "RowKey": ROW_KEY,
            "status": "processing",
            "claimed_at": now,
            "event_type": event_type,
            "attempts": 1,
            "outcome": "",
        }
        try:
            meta = self._table.create_entity(entity)
            return Claim(ClaimKind.CLAIMED, event_id, _etag(meta))
        except ResourceExistsError:
            pass
        try:
            row = self._table.get_entity(event_id, ROW_KEY)
        except ResourceNotFoundError:
            # Released between our insert and our read: let the caller's retry claim it afresh.
            return Claim(ClaimKind.BUSY, event_id, status="released")
        status = str(row.get("status", ""))
        if status == "done":
            return Claim(ClaimKind.DONE, event_id, outcome=str(row.get("outcome", "")), status=status)
        stale = now - int(row.get("claimed_at", 0)) >= self._stale_after
        if not (stale or (status == "queued" and take_queued)):
            return Claim(ClaimKind.BUSY, event_id, status=status)
        entity["attempts"] = int(row.get("attempts", 0)) + 1
        try:
            meta = self._table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=row.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return Claim(ClaimKind.BUSY, event_id, status=status)
        return Claim(ClaimKind.CLAIMED, event_id, _etag(meta))

    def mark_done(self, claim: Claim, outcome: str) -> None:
        # Unconditional: the work is applied even if a stale-claim takeover happened meanwhile.
        self._table.update_entity(
            {
                "PartitionKey": claim.event_id,
                "RowKey": ROW_KEY,
                "status": "done",
                "outcome": outcome[:OUTCOME_MAX],
                "done_at": int(self._clock()),
            },
            mode=UpdateMode.MERGE,
        )

    def mark_queued(self, claim: Claim) -> None:
        self._table.update_entity(
            {"PartitionKey": claim.event_id, "RowKey": ROW_KEY, "status": "queued", "claimed_at": int(self._clock())},
            mode=UpdateMode.MERGE,
            etag=claim.etag,
            match_condition=MatchConditions.IfNotModified,
        )

    def release(self, claim: Claim) -> None:
        """Forget a claim whose handling failed, so a retry applies the event."""
        # Not found or modified: somebody took over the claim; theirs it is.
        with contextlib.suppress(ResourceModifiedError, ResourceNotFoundError):
            self._table.delete_entity(
                claim.event_id, ROW_KEY, etag=claim.etag, match_condition=MatchConditions.IfNotModified
            )

    def get(self, event_id: str) -> dict[str, Any] | None:
        try:
            return dict(self._table.get_entity(event_id, ROW_KEY))
        except ResourceNotFoundError:
            return None


def _etag(meta: Any) -> str:
    return str(meta.get("etag", "")) if isinstance(meta, dict) else ""
