"""Usage watermarks: per subscription and billing period, the billable calls reported and the cursor.

Layout (why: writing one Table Storage row per subscription costs the client most of a millisecond
of CPU, and most of a push's time went there): subscriptions are spread over `GROUPS` groups by a
stable hash of their id, per product; ONE row per product and group (RowKey = "{product}~{group}",
all in partition `GROUP_PARTITION`) holds the watermarks of all its subscriptions and periods, as
JSON in string properties. A push batch holds whole groups of one product (`group_of`), so it reads
its rows with one range query and writes each row once per step, in entity-group transactions of
up to 100 rows; and the push can send one product's events while it reads the next product's
report, since their batches never share a row.

Writes are optimistic: a row is replaced only if its ETag is still the one read, so two runs can
never both move a watermark (the loser gets WatermarkConflict and reruns from what is stored).
A `Watermark`'s etag is its group row's.

Rows stay bounded: a period's entry is dropped once it is closed (the closing report settled it)
and its cursor is more than `CLOSED_KEEP_SECONDS` behind the newest cursor of its group, long after
Stripe's retries of `invoice.created` could ask for the same closing report again.

Stored layout, named and versioned: a row's `layout` property says how its JSON reads.
- 2 (`LAYOUT`, written now): `{"<subscription id>|<period start>": StoredEntry}`, each entry an object
  of named fields (`StoredEntry`, `StoredPending`; fields at their default are left out), read and
  written by pydantic, strictly (a wrong type or an unknown field is an error, not a guess).
- 1 (rows without `layout`, as written before issue 20): each entry a JSON list by position,
  `[reported, counted_until, closed, pending]`, pending `[identifier, event name, customer id, value,
  timestamp, reported, counted_until, closed]` or null. Still read (`_entry_v1`); a row is written
  in layout 2 the next time any of its watermarks moves (the whole row is rewritten each time).
- anything else: a newer version of the app wrote it; UnknownLayout, and the row is left alone.
Code from before layout 2 cannot read layout-2 rows (its reads fail on them): a rollback past this
version needs one that reads both layouts.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient
from pydantic import ConfigDict, TypeAdapter

from billing.store.groups import group_of
from billing.store.table_rows import query_rows
from billing.store.table_transactions import MAX_OPERATIONS, TransactionRefused, Write, submit
from billing.usage.plan import MeterEvent, PendingEvent
from billing.usage.ports import ProductUsageState, Watermark, WatermarkConflict, WatermarkKey, WatermarkWrite

GROUP_PARTITION = "groups"
PART_CHARS = 30_000  # a string property holds 32K characters; an entity 1 MiB (about 15 parts)
MAX_PARTS = 15
CLOSED_KEEP_SECONDS = 40 * 86400

LAYOUT = 2  # the stored layout this code writes (the row's `layout` property); it reads 1 too


@dataclass(frozen=True, slots=True)
class StoredPending:
    """A pending meter event as stored (layout 2): the event without its subscription id (the entry's
    key has it), and the watermark it leads to once Stripe has it."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")

    identifier: str
    event_name: str
    customer_id: str
    value: int
    timestamp: int
    reported: int
    counted_until: int
    closed: bool = False


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One subscription's watermark for one period, as stored (layout 2)."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")

    reported: int
    counted_until: int | None  # None: a closing report came before any push
    closed: bool = False
    pending: StoredPending | None = None


_ENTRIES = TypeAdapter(dict[str, StoredEntry])  # strict: each record says so in its config


class UnknownLayout(ValueError):
    """A watermark row in a layout this code does not know (written by a newer version): left alone."""


def _entry_v1(raw: list[Any]) -> StoredEntry:
    """An entry of layout 1: `[reported, counted_until, closed, pending]`, pending by position or null."""
    reported, counted_until, closed, pending = raw
    stored = None
    if pending is not None:
        identifier, name, customer, value, timestamp, p_reported, p_until, p_closed = pending
        stored = StoredPending(
            identifier=str(identifier),
            event_name=str(name),
            customer_id=str(customer),
            value=int(value),
            timestamp=int(timestamp),
            reported=int(p_reported),
            counted_until=int(p_until),
            closed=bool(p_closed),
        )
    cursor = None if counted_until is None else int(counted_until)
    return StoredEntry(reported=int(reported), counted_until=cursor, closed=bool(closed), pending=stored)


def _open_cursor(entry: StoredEntry) -> int | None:
    """Where an open entry's cursor is, or will be once its pending event is recorded; None if closed."""
    if entry.closed:
        return None
    return entry.pending.counted_until if entry.pending is not None else entry.counted_until


def _key(subscription_id: str, period_start: int) -> str:
    return f"{subscription_id}|{period_start}"


def _encode(entries: dict[str, StoredEntry]) -> dict[str, Any]:
    text = _ENTRIES.dump_json(entries, exclude_defaults=True).decode("utf-8")
    parts = [text[i : i + PART_CHARS] for i in range(0, len(text), PART_CHARS)] or [""]
    if len(parts) > MAX_PARTS:
        raise ValueError(
            f"a watermark group outgrew its row ({len(text):,} characters): "
            "too few GROUPS (billing.store.groups) for this many subscriptions"
        )
    return {"layout": LAYOUT, "parts": len(parts), **{f"d{n}": part for n, part in enumerate(parts)}}


def _decode(entity: Mapping[str, Any]) -> dict[str, StoredEntry]:
    """The entries of a row in any layout this code reads (see the module docstring)."""
    parts = int(entity.get("parts") or 0)
    text = "".join(str(entity[f"d{n}"]) for n in range(parts))
    layout = entity.get("layout", 1)
    if layout == LAYOUT:
        return _ENTRIES.validate_json(text) if text else {}
    if layout == 1:
        return {key: _entry_v1(raw) for key, raw in json.loads(text).items()} if text else {}
    raise UnknownLayout(
        f"usage watermark row {entity.get('RowKey')!r} is in layout {layout!r}; this version "
        f"reads layouts 1 and {LAYOUT}: a newer version of the app wrote it"
    )


def group_key(subscription_id: str, product_id: str) -> str:
    """The RowKey of the subscription's group row ("~" sorts after the letters, digits and "-" of ids)."""
    return f"{product_id}~{group_of(subscription_id)}"


def _to_watermark(
    sid: str, product_id: str, period_start: int, entry: StoredEntry | None, etag: str | None
) -> Watermark:
    if entry is None:
        return Watermark(sid, product_id, period_start, etag=etag)
    pending = None
    if entry.pending is not None:
        p = entry.pending
        event = MeterEvent(
            identifier=p.identifier,
            event_name=p.event_name,
            customer_id=p.customer_id,
            value=p.value,
            timestamp=p.timestamp,
            subscription_id=sid,
        )
        pending = PendingEvent(event, reported=p.reported, counted_until=p.counted_until, closed=p.closed)
    return Watermark(
        sid,
        product_id,
        period_start,
        reported=entry.reported,
        counted_until=entry.counted_until,
        pending=pending,
        etag=etag,
    )


def _to_entry(write: WatermarkWrite) -> StoredEntry:
    stored = None
    if write.pending is not None:
        p, e = write.pending, write.pending.event
        stored = StoredPending(
            identifier=e.identifier,
            event_name=e.event_name,
            customer_id=e.customer_id,
            value=e.value,
            timestamp=e.timestamp,
            reported=p.reported,
            counted_until=p.counted_until,
            closed=p.closed,
        )
    return StoredEntry(reported=write.reported, counted_until=write.counted_until, closed=write.closed, pending=stored)


def _purged(entries: dict[str, StoredEntry]) -> dict[str, StoredEntry]:
    newest = max((e.counted_until for e in entries.values() if e.counted_until is not None), default=0)
    settled = newest - CLOSED_KEEP_SECONDS  # closed entries whose cursor is older are dropped

    def dropped(e: StoredEntry) -> bool:
        return e.closed and e.counted_until is not None and e.counted_until < settled

    return {k: e for k, e in entries.items() if not dropped(e)}


class Watermarks:
    """Repository over the usage watermarks table (see the module docstring for the layout)."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[str | None, dict[str, StoredEntry]]] = {}  # group -> (etag, entries); None: no row
        self.requests = 0  # storage requests made (reads and transactions), for summaries

    def group_of(self, subscription_id: str, product_id: str) -> str:
        return group_key(subscription_id, product_id)

    def _count_request(self) -> None:
        with self._lock:
            self.requests += 1

    # Reading -------------------------------------------------------------------------------
    def read(self, keys: Sequence[WatermarkKey], *, planning: bool = False) -> dict[str, Watermark]:
        """Watermarks of (sid, product, period start) keys, by sid: one range query over their groups.

        `planning`: the rows are not kept for a later write (a plan reads every group once and writes none).
        """
        if not keys:
            return {}
        groups = {group_key(sid, pid) for sid, pid, _ in keys}
        rows = self._read_groups(min(groups), max(groups), keep=not planning)
        if not planning:
            with self._lock:
                self._rows.update({g: (None, {}) for g in groups if g not in rows})
        out: dict[str, Watermark] = {}
        for sid, pid, period_start in keys:
            etag, entries = rows.get(group_key(sid, pid), (None, {}))
            out[sid] = _to_watermark(sid, pid, period_start, entries.get(_key(sid, period_start)), etag)
        return out

    def get(self, subscription_id: str, product_id: str, period_start: int) -> Watermark:
        return self.read([(subscription_id, product_id, period_start)])[subscription_id]

    def open_cursors(self, before: int) -> dict[str, dict[int, int]]:
        """Per product, its open watermarks by cursor below `before`, the product with most first: one pass
        over every row, row after row, none kept."""
        found: dict[str, dict[int, int]] = {}
        for group, _etag, entries in self._each_row(None, None):
            product, _, number = group.rpartition("~")
            if not product or not number:
                continue  # not a group row of this layout
            cursors = found.setdefault(product, {})
            for cursor in (_open_cursor(e) for e in entries.values()):
                if cursor is not None and cursor < before:
                    cursors[cursor] = cursors.get(cursor, 0) + 1
        return dict(sorted(((p, c) for p, c in found.items() if c), key=lambda item: -sum(item[1].values())))

    def states(self) -> dict[str, ProductUsageState]:
        """Per product: open periods, cursors and pending events (one pass over every row)."""
        states: dict[str, ProductUsageState] = {}
        for group, _etag, entries in self._each_row(None, None):
            product, _, number = group.rpartition("~")
            if not product or not number:
                continue  # not a group row of this layout
            state = states.get(product, ProductUsageState(product))
            for entry in entries.values():
                cursor, pending = _open_cursor(entry), entry.pending
                if pending is not None:
                    stamp = pending.timestamp
                    state = replace(
                        state, pending=state.pending + 1, oldest_pending=min(stamp, state.oldest_pending or stamp)
                    )
                if cursor is None:
                    continue
                state = replace(
                    state,
                    open_periods=state.open_periods + 1,
                    counted_until=max(cursor, state.counted_until or cursor),
                    oldest_cursor=min(cursor, state.oldest_cursor or cursor),
                )
            states[product] = state
        return dict(sorted(states.items()))

    def _each_row(self, low: str | None, high: str | None) -> Iterator[tuple[str, str | None, dict[str, StoredEntry]]]:
        """(group, etag, entries) of the rows with RowKey in [low, high] (every row when None), as read."""
        query = f"PartitionKey eq '{GROUP_PARTITION}'"
        if low is not None and high is not None:
            query += f" and RowKey ge '{low}' and RowKey le '{high}'"
        for row in query_rows(self._table, query, on_page=self._count_request):
            yield str(row.values["RowKey"]), row.etag, _decode(row.values)

    def _read_groups(self, low: str, high: str, *, keep: bool) -> dict[str, tuple[str | None, dict[str, StoredEntry]]]:
        """Rows with RowKey in [low, high]; `keep`: remembered for the writes that follow."""
        rows = {group: (etag, entries) for group, etag, entries in self._each_row(low, high)}
        if keep:
            with self._lock:
                self._rows.update(rows)
        return rows

    def _entries(self, group: str, etag: str | None) -> dict[str, StoredEntry]:
        """The entries of `group` as of `etag` (None: no row); WatermarkConflict if it moved on."""
        with self._lock:
            seen = self._rows.get(group)
        if seen is None or seen[0] != etag:
            try:
                entity = self._table.get_entity(GROUP_PARTITION, group)
                seen = (str(entity.metadata["etag"]), _decode(entity))
            except ResourceNotFoundError:
                seen = (None, {})
            with self._lock:
                self.requests += 1
                self._rows[group] = seen
        if seen[0] != etag:
            raise WatermarkConflict(f"usage watermark group {group} changed while this push ran; rerun the batch")
        return dict(seen[1])

    # Writing -------------------------------------------------------------------------------
    def write(self, writes: Iterable[WatermarkWrite]) -> dict[str, Watermark]:
        """Apply the writes, each group row replaced if unchanged since read; the new watermarks by sid.

        Raises WatermarkConflict if a row changed since it was read. Rows go in transactions of up
        to 100; a conflict rejects its transaction as a whole, and earlier transactions stay applied,
        which is safe: each row is a complete state of its watermarks.
        """
        by_group: dict[str, list[WatermarkWrite]] = {}
        for w in writes:
            by_group.setdefault(group_key(w.previous.subscription_id, w.previous.product_id), []).append(w)
        operations: list[tuple[str, list[WatermarkWrite], dict[str, StoredEntry], Write]] = []
        for group, group_writes in sorted(by_group.items()):
            etags = {w.previous.etag for w in group_writes}
            if len(etags) != 1:
                raise WatermarkConflict(f"writes to usage watermark group {group} were read at different versions")
            etag = etags.pop()
            entries = self._entries(group, etag)
            for w in group_writes:
                entries[_key(w.previous.subscription_id, w.previous.period_start)] = _to_entry(w)
            entries = _purged(entries)
            entity = {"PartitionKey": GROUP_PARTITION, "RowKey": group, **_encode(entries)}
            operations.append((group, group_writes, entries, Write(entity, etag)))  # etag None: a new row
        result: dict[str, Watermark] = {}
        for start in range(0, len(operations), MAX_OPERATIONS):
            chunk = operations[start : start + MAX_OPERATIONS]
            with self._lock:
                self.requests += 1
            try:
                answers = submit(self._table, [op for *_, op in chunk])
            except TransactionRefused as exc:
                if exc.status not in (409, 412):  # 409: created meanwhile; 412: moved on
                    raise
                raise WatermarkConflict("a usage watermark group changed while this push ran; rerun it") from None
            for (group, group_writes, entries, _), etag in zip(chunk, answers, strict=True):
                with self._lock:
                    self._rows[group] = (etag, entries)
                for w in group_writes:
                    sid, period_start = w.previous.subscription_id, w.previous.period_start
                    result[sid] = _to_watermark(
                        sid, w.previous.product_id, period_start, entries[_key(sid, period_start)], etag
                    )
        return result
