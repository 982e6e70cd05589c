"""Usage watermarks: per subscription and billing period, the cumulative billable calls reported.

PartitionKey = the period start (12 digits, unix seconds), RowKey = the APIM subscription id.
A push processes subscriptions of one period start in sid order, so one range query reads a whole
batch's watermarks and entity-group transactions (up to 100 rows of one partition) write them:
storage requests grow with batches, not with subscriptions.

Writes are optimistic (ETag): two runs working on the same subscription cannot both move it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableClient, TableTransactionError, UpdateMode

from billing.usage.plan import MeterEvent, PendingEvent
from billing.usage.ports import Watermark, WatermarkConflict, WatermarkWrite

MAX_TRANSACTION_OPS = 100  # Azure Table Storage entity-group transaction limit


def partition_key(period_start: int) -> str:
    return f"{period_start:012d}"


def _int(value: Any) -> int:
    return int(value.value if isinstance(value, EntityProperty) else value)


def _int64(value: int) -> EntityProperty:
    return EntityProperty(value, EdmType.INT64)


def _to_entity(period_start: int, sid: str, reported: int, pending: PendingEvent | None) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": partition_key(period_start), "RowKey": sid,
                              "reported": _int64(reported), "has_pending": pending is not None}  # fmt: skip
    if pending is not None:
        event = pending.event
        entity.update(
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
    return Watermark(sid, int(entity["PartitionKey"]), _int(entity["reported"]), pending,
                     str(entity.metadata["etag"]))  # fmt: skip


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
        return _from_entity(entity)

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
        return {sid: found.get(sid, Watermark(sid, period_start)) for sid in sids}

    def write(self, period_start: int, writes: Iterable[WatermarkWrite]) -> dict[str, Watermark]:
        """Apply the writes (all of one period start) in transactions; the new watermarks by sid.

        Raises WatermarkConflict if a row changed since it was read (the transaction holding it is
        rejected as a whole; earlier transactions stay applied, which is safe: each is a complete
        state of its rows).
        """
        batch = list(writes)
        result: dict[str, Watermark] = {}
        for start in range(0, len(batch), MAX_TRANSACTION_OPS):
            chunk = batch[start : start + MAX_TRANSACTION_OPS]
            operations: list[Any] = []
            for w in chunk:
                if w.previous.period_start != period_start:
                    raise ValueError("every write of one call must belong to the same period start")
                entity = _to_entity(period_start, w.previous.subscription_id, w.reported, w.pending)
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
                result[sid] = Watermark(sid, period_start, w.reported, w.pending, str(answer.get("etag")))
        return result
