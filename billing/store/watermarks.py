"""Usage watermarks: per subscription and billing period, the cumulative billable calls reported.

PartitionKey = the period start (12 digits, unix seconds), RowKey = the APIM subscription id.
A push processes subscriptions of one period start in sid order, so one range query reads a whole
batch's watermarks and entity-group transactions (up to 100 rows of one partition) write them:
storage requests grow with batches, not with subscriptions.

Writes are optimistic (ETag): two runs working on the same subscription cannot both move it.

Receipts: a run writes each subscription's pending event (ETag-checked) before sending, and every
row written by one `write` call names the same receipt key. Once Stripe has accepted the events,
`record` inserts ONE receipt row for the chunk (RowKey `~receipt~<key>~<unique>`, the accepted
identifiers) instead of rewriting every subscription's row: a row whose pending event is listed in
a receipt of its key reads as recorded (`reported` = the pending `reported`, no pending). The next
write of that row (ETag of the row as read; the receipt never touches it) folds it in. So a
subscription with new usage costs one row write per run, not two, and exactly-once holds: a row
only counts as moved once a receipt, written after Stripe accepted its event, says so. Receipts
are insert-only (a recovery adds another under the same key), so they never conflict. They stay in
the period's partition: a few hundred bytes per chunk and run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import uuid4

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableClient, TableTransactionError, UpdateMode

from billing.usage.plan import MeterEvent, PendingEvent
from billing.usage.ports import Watermark, WatermarkConflict, WatermarkWrite

MAX_TRANSACTION_OPS = 100  # Azure Table Storage entity-group transaction limit
RECEIPT_PREFIX = "~receipt~"  # "~" sorts after the letters and digits of subscription ids
RECEIPT_MAX_IDS = 200  # identifiers per receipt row


def partition_key(period_start: int) -> str:
    return f"{period_start:012d}"


def _int(value: Any) -> int:
    return int(value.value if isinstance(value, EntityProperty) else value)


def _int64(value: int) -> EntityProperty:
    return EntityProperty(value, EdmType.INT64)


def _to_entity(
    period_start: int, sid: str, reported: int, pending: PendingEvent | None, receipt: str | None = None
) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition_key(period_start), "RowKey": sid,
                              "reported": _int64(reported), "has_pending": pending is not None}  # fmt: skip
    if pending is not None:
        event = pending.event
        entity.update(
            pending_receipt=receipt or "",
            pending_reported=_int64(pending.reported),
            pending_identifier=event.identifier,
            pending_event_name=event.event_name,
            pending_customer=event.customer_id,
            pending_value=_int64(event.value),
            pending_timestamp=_int64(event.timestamp),
        )
    return entity


def _from_entity(entity: Any) -> Watermark:
    sid = str(entity["RowKey"])
    pending = None
    if entity.get("has_pending"):
        pending = PendingEvent(
            MeterEvent(
                identifier=str(entity["pending_identifier"]),
                event_name=str(entity["pending_event_name"]),
                customer_id=str(entity["pending_customer"]),
                value=_int(entity["pending_value"]),
                timestamp=_int(entity["pending_timestamp"]),
                subscription_id=sid,
            ),
            _int(entity["pending_reported"]),
        )
    receipt = (str(entity.get("pending_receipt") or "") or None) if pending is not None else None
    return Watermark(sid, int(entity["PartitionKey"]), _int(entity["reported"]), pending,
                     str(entity.metadata["etag"]), receipt)  # fmt: skip


def _receipt_range(key: str) -> tuple[str, str]:
    # Every receipt row of one key: "~receipt~<key>~<unique>", unique in hex (which sorts below "~").
    return f"{RECEIPT_PREFIX}{key}~", f"{RECEIPT_PREFIX}{key}~~"


def _recorded(mark: Watermark) -> Watermark:
    assert mark.pending is not None
    return Watermark(mark.subscription_id, mark.period_start, mark.pending.reported, None, mark.etag)


class Watermarks:
    """Repository over the usage watermarks table."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self.requests = 0  # storage requests made (pages and transactions), for summaries

    def get(self, period_start: int, sid: str) -> Watermark:
        self.requests += 1
        try:
            entity = self._table.get_entity(partition_key(period_start), sid)
        except ResourceNotFoundError:
            return Watermark(sid, period_start)
        return self._resolve(period_start, {sid: _from_entity(entity)})[sid]

    def read_range(self, period_start: int, sids: Sequence[str]) -> dict[str, Watermark]:
        """Watermarks of `sids` (of one period start), one range query; absent rows start at 0."""
        if not sids:
            return {}
        low, high = min(sids), max(sids)
        query = "PartitionKey eq @pk and RowKey ge @low and RowKey le @high"
        params = {"pk": partition_key(period_start), "low": low, "high": high}
        wanted = set(sids)
        found: dict[str, Watermark] = {}
        pages = self._table.query_entities(query, parameters=params, results_per_page=1000).by_page()
        for page in pages:
            self.requests += 1
            for entity in page:
                if entity["RowKey"] in wanted:
                    mark = _from_entity(entity)
                    found[mark.subscription_id] = mark
        resolved = self._resolve(period_start, found)
        return {sid: resolved.get(sid, Watermark(sid, period_start)) for sid in sids}

    def _resolve(self, period_start: int, marks: dict[str, Watermark]) -> dict[str, Watermark]:
        """Pending events that a receipt lists read as recorded; the others stay pending."""
        keys = {m.receipt for m in marks.values() if m.pending is not None and m.receipt}
        accepted: set[str] = set()
        for key in sorted(keys):
            low, high = _receipt_range(key)
            query = "PartitionKey eq @pk and RowKey gt @low and RowKey lt @high"
            params = {"pk": partition_key(period_start), "low": low, "high": high}
            for page in self._table.query_entities(query, parameters=params, results_per_page=1000).by_page():
                self.requests += 1
                for entity in page:
                    accepted.update(str(entity.get("identifiers") or "").split("\n"))
        if not accepted:
            return marks
        return {sid: _recorded(m) if m.pending is not None and m.pending.event.identifier in accepted else m
                for sid, m in marks.items()}  # fmt: skip

    def record(self, period_start: int, accepted: Sequence[Watermark]) -> dict[str, Watermark]:
        """Stripe has the pending events of `accepted`: one receipt row per receipt key, rows untouched.

        The returned watermarks keep their row's ETag, so the next conditional write succeeds.
        """
        by_key: dict[str, list[str]] = {}
        result: dict[str, Watermark] = {}
        for mark in accepted:
            if mark.pending is None or not mark.receipt:
                raise ValueError(f"the watermark of {mark.subscription_id} has no pending event written by this store")
            if mark.period_start != period_start:
                raise ValueError("every watermark of one call must belong to the same period start")
            by_key.setdefault(mark.receipt, []).append(mark.pending.event.identifier)
            result[mark.subscription_id] = _recorded(mark)
        operations: list[Any] = []
        pk = partition_key(period_start)
        for key, ids in by_key.items():
            # A string property holds 32K characters; identifiers are at most 100 characters long.
            for start in range(0, len(ids), RECEIPT_MAX_IDS):
                row = {"PartitionKey": pk, "RowKey": f"{RECEIPT_PREFIX}{key}~{uuid4().hex}",
                       "identifiers": "\n".join(ids[start : start + RECEIPT_MAX_IDS])}  # fmt: skip
                operations.append(("create", row))
        for start in range(0, len(operations), MAX_TRANSACTION_OPS):
            self.requests += 1
            self._table.submit_transaction(operations[start : start + MAX_TRANSACTION_OPS])
        return result

    def write(self, period_start: int, writes: Iterable[WatermarkWrite]) -> dict[str, Watermark]:
        """Apply the writes (all of one period start) in transactions; the new watermarks by sid.

        Raises WatermarkConflict if a row changed since it was read (the transaction holding it is
        rejected as a whole; earlier transactions stay applied, which is safe: each is a complete
        state of its rows).
        """
        batch = list(writes)
        result: dict[str, Watermark] = {}
        receipt = uuid4().hex  # every pending event of this call: acceptance noted under this key
        for start in range(0, len(batch), MAX_TRANSACTION_OPS):
            chunk = batch[start : start + MAX_TRANSACTION_OPS]
            operations: list[Any] = []
            for w in chunk:
                if w.previous.period_start != period_start:
                    raise ValueError("every write of one call must belong to the same period start")
                entity = _to_entity(period_start, w.previous.subscription_id, w.reported, w.pending, receipt)
                if w.previous.etag is None:
                    operations.append(("create", entity))
                else:
                    options = {"mode": UpdateMode.REPLACE, "etag": w.previous.etag,
                               "match_condition": MatchConditions.IfNotModified}  # fmt: skip
                    operations.append(("update", entity, options))
            self.requests += 1
            try:
                answers = self._table.submit_transaction(operations)
            except TableTransactionError as exc:
                status = getattr(exc, "status_code", None)
                if status not in (409, 412):  # 409: created meanwhile, 412: ETag moved on
                    raise
                raise WatermarkConflict(
                    f"a usage watermark of period {period_start} changed while this push ran; rerun the batch"
                ) from None
            for w, answer in zip(chunk, answers, strict=True):
                sid = w.previous.subscription_id
                result[sid] = Watermark(sid, period_start, w.reported, w.pending, str(answer.get("etag")),
                                        receipt if w.pending is not None else None)  # fmt: skip
        return result
