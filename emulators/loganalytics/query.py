"""One query: KQL translated by duckdb-kql, run in DuckDB on the visible rows, answered as the API does.

The query text is never matched: whatever duckdb-kql translates runs, whatever it cannot is refused with
the API's answer for a bad query, naming the construct the emulator lacks. Result limits cut the rows
and turn the answer into a partial one, as the real API does.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import duckdb_kql

from emulators.loganalytics import errors, schema
from emulators.loganalytics.limits import Limits
from emulators.loganalytics.store import LogStore

_TIMES = ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS", "DATE")
_MISSING_COLUMN = re.compile(r'Referenced column "([^"]+)" not found')
_MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist")


@dataclass(frozen=True)
class QueryRequest:
    query: str
    timespan: tuple[datetime, datetime] | None
    wait_seconds: float | None  # the Prefer: wait=N header
    include_statistics: bool = False


def execute(store: LogStore, request: QueryRequest, *, now: datetime, limits: Limits) -> bytes:
    """The JSON body of a 200 answer; raises errors.ApiError for every other answer."""
    sql, params = _translate(request.query, now)
    started = time.perf_counter()
    with store.cursor(now, request.timespan) as cur:
        timeout = min(request.wait_seconds or limits.default_timeout_seconds, limits.max_timeout_seconds)
        timer = threading.Timer(timeout, cur.interrupt)  # the server gives up after `wait`, answering 504
        timer.start()
        try:
            relation = cur.sql(sql, params=params) if params else cur.sql(sql)
            names, types = list(relation.columns), [str(t) for t in relation.types]
            # `sql` is the translator's output for the KQL (which can only read); the rest is ours.
            rendered = ", ".join(_rendered(n, t) for n, t in zip(names, types, strict=True))
            wrapped = f"SELECT {rendered} FROM ({sql}) _q LIMIT {limits.max_records + 1}"  # noqa: S608
            rows = cur.execute(wrapped, params).fetchall() if params else cur.execute(wrapped).fetchall()
        except duckdb.InterruptException:
            raise errors.timed_out() from None
        except duckdb.Error as exc:
            raise _engine_error(exc) from None
        finally:
            timer.cancel()
    elapsed = time.perf_counter() - started
    columns = [{"name": n, "type": schema.answer_type(t)} for n, t in zip(names, types, strict=True)]
    pieces, size, cut = [], 0, None
    for count, row in enumerate(rows):
        if count == limits.max_records:
            cut = f"record count limit {limits.max_records}"
            break
        piece = json.dumps([_value(v) for v in row], separators=(",", ":"))
        if size + len(piece) > limits.max_bytes:
            cut = f"data size limit {limits.max_bytes}"
            break
        pieces.append(piece)
        size += len(piece) + 1
    body = f'{{"tables":[{{"name":"PrimaryResult","columns":{json.dumps(columns)},"rows":[{",".join(pieces)}]}}]'
    if cut is not None:
        body += f',"error":{json.dumps(errors.partial(cut))}'
    if request.include_statistics:
        statistics = {
            "query": {
                "executionTime": round(elapsed, 6),
                "datasetStatistics": [{"tableRowCount": len(pieces), "tableSize": size}],
            }
        }
        body += f',"statistics":{json.dumps(statistics)}'
    return (body + "}").encode()


def _translate(query: str, now: datetime) -> tuple[str, dict[str, Any]]:
    table = {schema.TABLE: list(schema.NAMES)}
    moment = now.astimezone(UTC).replace(tzinfo=None)  # now() and ago() read the emulator's clock
    try:
        translated = duckdb_kql.to_sql(query, schema=table, allow_write=False, query_now=moment)
    except duckdb_kql.KqlSyntaxError as exc:
        raise errors.syntax(str(exc)) from None
    except duckdb_kql.KqlUnsupportedError as exc:
        raise _unsupported(exc.construct) from None
    except duckdb_kql.KqlSchemaError as exc:
        raise errors.semantic("SEM0100", f"Failed to resolve table or column expression named '{exc.name}'") from None
    except duckdb_kql.KqlError as exc:
        raise errors.semantic("SEM0001", str(exc)) from None
    if translated.unbound:
        raise errors.semantic("SEM0100", f"Query parameters declared without a value: {', '.join(translated.unbound)}")
    return str(translated), dict(translated.parameters)


def _unsupported(construct: str) -> errors.ApiError:
    kind, _, name = construct.partition(":")
    engine = f"duckdb-kql {duckdb_kql.__version__}"
    if kind in ("function", "aggregate"):
        return errors.semantic(
            "SEM0260",
            (
                f"Unknown function: '{name}'. The Log Analytics emulator cannot run this function: {engine} has no "
                "translation for it. The real service may accept it; see emulators/loganalytics/README.md."
            ),
        )
    return errors.semantic(
        "SEM0002",
        (
            f"The Log Analytics emulator cannot run the KQL construct '{construct}': {engine} has no translation for "
            "it. The real service may accept it; see emulators/loganalytics/README.md."
        ),
    )


def _engine_error(exc: duckdb.Error) -> errors.ApiError:
    text = str(exc)
    column, table = _MISSING_COLUMN.search(text), _MISSING_TABLE.search(text)
    if isinstance(exc, duckdb.BinderException) and column:
        return errors.semantic("SEM0100", f"Failed to resolve scalar expression named '{column.group(1)}'")
    if isinstance(exc, duckdb.CatalogException) and table:
        return errors.semantic("SEM0100", f"Failed to resolve table or column expression named '{table.group(1)}'")
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return errors.semantic("SEM0001", f"The emulator's engine (DuckDB) could not run the query: {first_line}")


def _rendered(name: str, duckdb_type: str) -> str:
    """The column as the API writes it: datetimes as ISO 8601 UTC text, dynamic values as JSON text."""
    column = '_q."' + name.replace('"', '""') + '"'
    if duckdb_type in _TIMES:
        return f"regexp_replace(strftime({column}, '%Y-%m-%dT%H:%M:%S.%f'), '\\.?0+$', '') || 'Z'"
    if schema.answer_type(duckdb_type) == "dynamic" and duckdb_type != "JSON":
        return f"to_json({column})::VARCHAR"
    if duckdb_type in ("JSON", "UUID", "BLOB", "BIT") or duckdb_type.startswith("DECIMAL"):
        return f"{column}::VARCHAR"
    return column


def _value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, timedelta):
        return _timespan(value)
    return value


def _timespan(value: timedelta) -> str:
    """Kusto's timespan text: [-][d.]hh:mm:ss[.fffffff]."""
    sign, value = ("-", -value) if value < timedelta(0) else ("", value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    days = f"{value.days}." if value.days else ""
    fraction = f".{value.microseconds:06d}0" if value.microseconds else ""
    return f"{sign}{days}{hours:02d}:{minutes:02d}:{seconds:02d}{fraction}"
