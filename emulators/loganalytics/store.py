"""Rows of the workspace in DuckDB, and which of them a query may see.

Two kinds of rows make up ApiManagementGatewayLogs:

- one stored row per gateway request (`append`), buffered in memory and written to DuckDB in columns
  before the next query, so the gateway never waits on the database;
- one stored *event* per bulk synthetic usage (`add_bulk`): "N calls of subscription S at T". The table
  a query sees expands each event into its N rows (`range(calls)`) inside DuckDB, so recording a million
  calls costs one insert and DuckDB pushes a query's filters below the expansion (an event of more than
  100,000 calls is stored in parts). Row i of a bulk usage gets the status `codes[i % len(codes)]`; the
  gateway's own answers among them (`gateway_errors`) carry its LastError.

Both are buffered in Python and written to DuckDB one list per column at the next query.

A query sees a row once `now >= TimeGenerated + ingestion delay (+ any extra delay it was given)`, and only
inside the request's timespan: `view_sql` builds that view per query, in the query's own cursor.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from emulators.loganalytics import schema

# Typical end-to-end latency of Azure resource logs (README.md, [ING]): "usually available within 3 to 10
# minutes"; the emulator waits the upper end so an app that reads too early is caught.
DEFAULT_INGESTION_DELAY_SECONDS = 600.0
LOOPBACK = "127.0.0.1"
MEMORY_LIMIT = "4GB"  # DuckDB's own limit for one workspace
_FLUSH_AT = 10_000  # buffered gateway rows written at once
_CHUNK = 50_000  # rows per INSERT
_EVENT_ROWS = 100_000  # most rows one stored bulk event expands into


@dataclass(frozen=True)
class LastError:
    """What the gateway logs as LastErrorSource / Reason / Message when it answers a call itself."""

    source: str
    reason: str
    message: str
    section: str = "inbound"


@dataclass(frozen=True)
class ServiceColumns:
    """Columns that are the same on every row of one service and workspace."""

    workspace_id: str
    azure_subscription_id: str
    resource_id: str  # as Log Analytics stores _ResourceId: lower case
    region: str


@dataclass(frozen=True)
class BulkCalls:
    """`calls` synthetic calls of one subscription at one instant, expanded into rows at query time."""

    at: datetime
    subscription_id: str
    product_id: str
    user_id: str
    api_id: str
    url: str
    backend_url: str
    codes: tuple[int, ...]  # row i gets codes[i % len(codes)]
    calls: int


@dataclass
class _Late:
    seconds: float
    subscription_id: str | None


@dataclass
class LogStore:
    service: ServiceColumns
    gateway_errors: Mapping[int, LastError]  # statuses the gateway answers itself, for bulk rows
    ingestion_delay_seconds: float = DEFAULT_INGESTION_DELAY_SECONDS
    _db: duckdb.DuckDBPyConnection | None = field(init=False, repr=False)
    _buffer: list[tuple[Any, ...]] = field(default_factory=list, init=False, repr=False)
    _bulk_buffer: list[tuple[Any, ...]] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _flush_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _late: list[_Late] = field(default_factory=list, init=False, repr=False)
    _events: Iterator[int] = field(default_factory=itertools.count, init=False, repr=False)
    _code_sets: dict[tuple[int, ...], int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        check_delay(self.ingestion_delay_seconds)
        # Bounded, so a runaway query fails with an error instead of taking the machine's memory.
        self._db = duckdb.connect(":memory:", config={"memory_limit": MEMORY_LIMIT})
        self._db.execute("SET TimeZone='UTC'")
        self._db.execute(f'CREATE TABLE gateway_rows ({schema.column_ddl()}, "_AvailableAt" TIMESTAMP NOT NULL)')
        self._db.execute(
            'CREATE TABLE bulk_calls (event BIGINT, "TimeGenerated" TIMESTAMP, sid VARCHAR, product VARCHAR, '
            "uid VARCHAR, api VARCHAR, url VARCHAR, backend_url VARCHAR, code_set INTEGER, calls BIGINT, "
            'first BIGINT, "_AvailableAt" TIMESTAMP)'
        )

    def close(self) -> None:
        """Drop the database. Final: server threads still holding the store must not keep DuckDB alive."""
        with self._flush_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            raise RuntimeError("this Log Analytics workspace is closed (its APIM emulator was stopped)")
        return self._db

    # Writing ------------------------------------------------------------------------------------
    def append(self, row: Mapping[str, Any]) -> None:
        """One gateway row by column name; absent strings are "", other absent values null."""
        unknown = set(row) - set(schema.NAMES)
        if unknown:
            raise ValueError(f"unknown ApiManagementGatewayLogs columns {sorted(unknown)}")
        generated = row.get("TimeGenerated")
        if not isinstance(generated, datetime) or generated.tzinfo is None:
            raise ValueError("TimeGenerated must be a timezone-aware datetime")
        given = {**self.constants(), **row}
        values = [given.get(name, "" if la_type == "string" else None) for name, la_type in schema.COLUMNS]
        values[schema.NAMES.index("TimeGenerated")] = _naive(generated)
        available = _naive(generated) + timedelta(seconds=self._extra_delay(str(row.get("ApimSubscriptionId", ""))))
        with self._lock:
            self._buffer.append((*values, available))
            due = len(self._buffer) >= _FLUSH_AT
        if due:  # a long run of calls without a query: keep the buffer small, at the cost of one slow call
            self.flush()

    def add_bulk(self, calls: BulkCalls) -> None:
        if calls.calls < 0:
            raise ValueError(f"calls must be zero or more, not {calls.calls}")
        if not calls.codes:
            raise ValueError("codes must name at least one status code")
        if calls.at.tzinfo is None:
            raise ValueError("`at` must be timezone-aware")
        at = _naive(calls.at)
        available = at + timedelta(seconds=self._extra_delay(calls.subscription_id))
        with self._lock:  # buffered like gateway rows: a DuckDB INSERT per event would cost ~1 ms
            # Events refer to their code list by number: a list per event is slow to hand to DuckDB.
            code_set = self._code_sets.setdefault(tuple(calls.codes), len(self._code_sets))
            # DuckDB holds one event's range(calls) in memory while expanding it: a big event is cut into
            # parts whose rows go on numbering where the last part stopped (`first`), so codes cycle as one.
            for first in range(0, calls.calls, _EVENT_ROWS):
                self._bulk_buffer.append(
                    (
                        next(self._events),
                        at,
                        calls.subscription_id,
                        calls.product_id,
                        calls.user_id,
                        calls.api_id,
                        calls.url,
                        calls.backend_url,
                        code_set,
                        min(_EVENT_ROWS, calls.calls - first),
                        first,
                        available,
                    )
                )

    @contextmanager
    def late_by(self, seconds: float, *, subscription_id: str | None = None) -> Iterator[None]:
        """Rows written inside the block (of one subscription, or all) arrive `seconds` after the usual delay."""
        check_delay(seconds)
        rule = _Late(seconds, subscription_id)
        with self._lock:
            self._late.append(rule)
        try:
            yield
        finally:
            with self._lock:
                self._late.remove(rule)

    def constants(self) -> dict[str, str]:
        """Columns with one value for every row of this service and workspace."""
        service = self.service
        return {
            "TenantId": service.workspace_id,
            "OperationName": "Microsoft.ApiManagement/GatewayLogs",
            "Region": service.region,
            "Category": "GatewayLogs",
            "SourceSystem": "Azure",
            "_SubscriptionId": service.azure_subscription_id,
            "_IsBillable": "True",
            "Type": schema.TABLE,
            "_ResourceId": service.resource_id,
        }

    def _extra_delay(self, subscription_id: str) -> float:
        if not self._late:  # the usual case, without taking the lock
            return 0.0
        with self._lock:
            return max((r.seconds for r in self._late if r.subscription_id in (None, subscription_id)), default=0.0)

    def flush(self) -> None:
        """Write the buffered rows and events, one list per column (a row-by-row INSERT costs ~1 ms a row)."""
        with self._flush_lock:
            with self._lock:
                rows, self._buffer = self._buffer, []
                events, self._bulk_buffer = self._bulk_buffer, []
            _insert_columns(self._con, "gateway_rows", _GATEWAY_TYPES, rows)
            _insert_columns(self._con, "bulk_calls", _BULK_TYPES, events)

    # Reading ------------------------------------------------------------------------------------
    @contextmanager
    def cursor(self, now: datetime, timespan: tuple[datetime, datetime] | None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor whose `ApiManagementGatewayLogs` holds the rows visible at `now` inside `timespan`."""
        self.flush()
        cur = self._con.cursor()
        try:
            cur.execute("SET TimeZone='UTC'")
            cur.execute(self.view_sql(now, timespan))
            yield cur
        finally:
            cur.close()

    def has_data(self, now: datetime) -> bool:
        """Whether anything at all has been ingested by `now` (a workspace without data answers 204)."""
        self.flush()
        cut = self._cutoff(now)
        cur = self._con.cursor()
        try:
            found = cur.execute(
                'SELECT EXISTS (SELECT 1 FROM gateway_rows WHERE "_AvailableAt" <= $cut) OR '
                'EXISTS (SELECT 1 FROM bulk_calls WHERE calls > 0 AND "_AvailableAt" <= $cut)',
                {"cut": cut},
            ).fetchone()
        finally:
            cur.close()
        return bool(found and found[0])

    def _cutoff(self, now: datetime) -> datetime:
        return _naive(now) - timedelta(seconds=self.ingestion_delay_seconds)

    def view_sql(self, now: datetime, timespan: tuple[datetime, datetime] | None) -> str:
        cut = _literal(self._cutoff(now))
        stored = ", ".join(f'"{name}"' for name in schema.NAMES)
        expanded = ", ".join(f'{self._bulk_column(name)} AS "{name}"' for name in schema.NAMES)
        # A view takes no parameters: the values in it are our own timestamps and quoted constants.
        visible, visible_bulk = (f'{t}"_AvailableAt" <= {cut}{_within(timespan, t)}' for t in ("", "b."))
        gateway = f"SELECT {stored} FROM main.gateway_rows WHERE {visible}"  # noqa: S608
        bulk = f"SELECT {expanded} FROM main.bulk_calls b, range(b.calls) r(i) WHERE {visible_bulk}"  # noqa: S608
        return f'CREATE TEMP VIEW "{schema.TABLE}" AS {gateway} UNION ALL {bulk}'

    def _bulk_column(self, name: str) -> str:
        """The SQL for one column of an expanded bulk row (`b` the event, `i` its row number)."""
        with self._lock:
            sets = sorted(self._code_sets.items(), key=lambda item: item[1])
        # A code set's list, by its number: CASE b.code_set WHEN 0 THEN [200, 201] ... (none yet: NULL).
        whens = " ".join(f"WHEN {n} THEN {list(codes)}" for codes, n in sets)
        codes = f"(CASE b.code_set {whens} END)" if sets else "CAST(NULL AS INTEGER[])"
        code = f"{codes}[1 + ((b.first + r.i) % len({codes}))]"
        gateway = sorted(self.gateway_errors)
        answered_by_backend = f"{code} NOT IN ({', '.join(map(str, gateway))})" if gateway else "TRUE"

        def by_error(pick: str) -> str:
            cases = " ".join(f"WHEN {c} THEN {_quote(getattr(self.gateway_errors[c], pick))}" for c in gateway)
            return f"CASE {code} {cases} ELSE '' END" if gateway else "''"

        constants = {name: _quote(value) for name, value in self.constants().items()}
        constants |= {
            "CallerIpAddress": _quote(LOOPBACK),
            "Method": "'GET'",
            "ClientProtocol": "'HTTP/1.1'",
            "Cache": "'none'",
        }
        per_event = {
            "TimeGenerated": 'b."TimeGenerated"',
            "ApimSubscriptionId": "b.sid",
            "ProductId": "b.product",
            "UserId": "b.uid",
            "ApiId": "b.api",
            "Url": "b.url",
            "ApiRevision": "CASE WHEN b.api = '' THEN '' ELSE '1' END",
        }
        digest = "md5(b.event::VARCHAR || '-' || r.i::VARCHAR)"
        per_row = {
            "ResponseCode": code,
            "IsRequestSuccess": f"{code} BETWEEN 200 AND 399",
            "CorrelationId": " || '-' || ".join(f"substr({digest}, {s}, {n})" for s, n in _UUID_PARTS),
            "BackendResponseCode": f"CASE WHEN {answered_by_backend} THEN {code} END",
            "BackendMethod": f"CASE WHEN {answered_by_backend} THEN 'GET' ELSE '' END",
            "BackendProtocol": f"CASE WHEN {answered_by_backend} THEN 'HTTP/1.1' ELSE '' END",
            "BackendUrl": f"CASE WHEN {answered_by_backend} THEN b.backend_url ELSE '' END",
            "BackendTime": f"CASE WHEN {answered_by_backend} THEN 0 END",
            "LastErrorSource": by_error("source"),
            "LastErrorReason": by_error("reason"),
            "LastErrorMessage": by_error("message"),
            "LastErrorSection": by_error("section"),
            "TotalTime": "0",
            "ClientTime": "0",
            "CacheTime": "0",
            "RequestSize": "0",
            "ResponseSize": "0",
            "IsMasterTrace": "FALSE",
            "IsTraceAllowed": "FALSE",
            "IsTraceExpired": "FALSE",
            "IsTraceRequested": "FALSE",
        }
        for table in (constants, per_event, per_row):
            if name in table:
                return table[name]
        la_type = schema.LA_TYPES[name]
        return "''" if la_type == "string" else f"CAST(NULL AS {schema.duckdb_type(la_type)})"


_UUID_PARTS = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
_GATEWAY_TYPES = (*(schema.duckdb_type(t) for _, t in schema.COLUMNS), "TIMESTAMP")  # + _AvailableAt
_BULK_TYPES = (
    "BIGINT",
    "TIMESTAMP",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "VARCHAR",
    "INTEGER",
    "BIGINT",
    "BIGINT",
    "TIMESTAMP",
)


def _insert_columns(
    con: duckdb.DuckDBPyConnection, table: str, types: list[str] | tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    select = ", ".join(f"unnest(${i + 1}::{t}[])" for i, t in enumerate(types))
    for start in range(0, len(rows), _CHUNK):  # bounded chunks keep the conversion's memory small
        chunk = rows[start : start + _CHUNK]
        con.execute(f"INSERT INTO {table} SELECT {select}", [list(c) for c in zip(*chunk, strict=True)])


def check_delay(seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError(f"an ingestion delay must be a number of seconds >= 0, not {seconds!r}")


def _within(timespan: tuple[datetime, datetime] | None, table: str) -> str:
    # Both bounds inclusive (README: a guess; the app should bound its days in KQL).
    if timespan is None:
        return ""
    return f' AND {table}"TimeGenerated" BETWEEN {_literal(timespan[0])} AND {_literal(timespan[1])}'


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def _literal(moment: datetime) -> str:
    return f"TIMESTAMP '{_naive(moment).isoformat(sep=' ')}'"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
