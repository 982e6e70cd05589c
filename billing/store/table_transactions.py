"""Entity-group transactions: `submit`, the repositories' one way to write rows all or none.

Operations: insert (fails if the row exists) and replace-if-unchanged (If-Match an ETag). Values:
str, bool and int (Int32; larger ints as Edm.Int64), which is all the app's tables hold.

Two paths, one contract (tests/integration/test_table_rows.py runs both):
- "sdk": `TableClient.submit_transaction` ("create", or "update" in REPLACE mode If-Not-Modified),
  its TableTransactionError read as TransactionRefused;
- "wire": `billing.store.table_wire.submit`, the same `$batch` request written as text through the
  same client pipeline: several times less CPU per transaction (`python -m bench.table_bench`),
  which every usage push batch pays twice.

By default the wire when `table_wire.ACTIVE` (the installed azure-data-tables is the version it was
verified against), else the SDK. Either way a transaction whose answer was lost is sent again (see
`_resending`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ServiceResponseError
from azure.data.tables import (
    EdmType,
    EntityProperty,
    RequestTooLargeError,
    TableClient,
    TableTransactionError,
    UpdateMode,
)

from billing.store import table_wire
from billing.store.table_rows import Via

MAX_OPERATIONS = 100  # Table Storage: operations per transaction
MAX_BODY_BYTES = 4 * 1024 * 1024  # ... and its payload
SEND_ATTEMPTS = 3
_INT32 = range(-(2**31), 2**31)
_OPERATION_BYTES = 600  # the request line and headers of one operation in the `$batch` body, at most
T = TypeVar("T")


@dataclass(frozen=True)
class Write:
    """One operation: insert `entity` (etag None), or replace it only if its ETag is still `etag`."""

    entity: dict[str, Any]  # PartitionKey, RowKey and the properties
    etag: str | None = None


class TransactionRefused(Exception):
    """The service applied none of the transaction: `index` names the operation, `status` why.

    409: the row of an insert exists; 412: a replaced row changed since its ETag was read.
    """

    def __init__(self, status: int, index: int, message: str) -> None:
        super().__init__(f"operation {index} was refused with {status}: {message}")
        self.status = status
        self.index = index


def _check(writes: Sequence[Write]) -> None:
    if not 1 <= len(writes) <= MAX_OPERATIONS:
        raise ValueError(f"a transaction holds 1 to {MAX_OPERATIONS} operations, got {len(writes)}")
    if len({w.entity["PartitionKey"] for w in writes}) != 1:
        raise ValueError("every operation of a transaction must be in the same partition")
    for write in writes:
        for key, value in write.entity.items():
            if not isinstance(value, str | bool | int):
                raise TypeError(f"property '{key}' must be str, bool or int, not {type(value).__name__}")


def _resending(send: Callable[[], T]) -> T:
    """The answer to the transaction, sending it again if the connection broke before the answer.

    The pipeline does not retry a POST whose answer was lost (a pooled connection the server had
    closed, say). Sending it again is safe here: every operation is conditional (an insert, or a
    replace If-Match), so a transaction that was applied the first time is refused as a whole the
    second (409 or 412, TransactionRefused), never applied twice.
    """
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            return send()
        except ServiceResponseError:
            if attempt == SEND_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _sdk_entity(entity: dict[str, Any]) -> dict[str, Any]:
    # The SDK sends a Python int as Edm.Int32 and refuses a larger one: say Int64 for those.
    return {k: EntityProperty(v, EdmType.INT64) if type(v) is int and v not in _INT32 else v for k, v in entity.items()}


def _reason(message: str) -> str:
    """The first line of the service's message, without its "index:" prefix (as the wire reads it)."""
    lines = (message or "").splitlines()
    line = lines[0] if lines else ""
    head, sep, rest = line.partition(":")
    return rest if sep and head.isdigit() else line


def _sdk_submit(table: TableClient, writes: Sequence[Write]) -> list[str]:
    size = sum(len(json.dumps(w.entity).encode("utf-8")) + _OPERATION_BYTES for w in writes)
    if size > MAX_BODY_BYTES:
        raise ValueError(f"the transaction is about {size:,} bytes, above Table Storage's {MAX_BODY_BYTES:,}")
    operations = [
        ("create", _sdk_entity(w.entity))
        if w.etag is None
        else (
            "update",
            _sdk_entity(w.entity),
            {"mode": UpdateMode.REPLACE, "etag": w.etag, "match_condition": MatchConditions.IfNotModified},
        )
        for w in writes
    ]
    try:
        answers = _resending(lambda: table.submit_transaction(operations))
    except RequestTooLargeError:
        raise
    except TableTransactionError as exc:
        raise TransactionRefused(exc.status_code or 0, exc.index, _reason(exc.message)) from None
    return [str(a["etag"]) for a in answers]


def submit(table: TableClient, writes: Sequence[Write], *, via: Via | None = None) -> list[str]:
    """Apply all writes or none; the new ETags, in order.

    Raises TransactionRefused when the service refused one operation (none applied),
    HttpResponseError when it refused the request itself; ValueError or TypeError, before sending,
    for what a transaction cannot hold. `via` forces a path (tests, benchmarks).
    """
    _check(writes)
    if (via or ("wire" if table_wire.ACTIVE else "sdk")) == "sdk":
        return _sdk_submit(table, writes)
    operations = [(w.entity, w.etag) for w in writes]
    try:
        return _resending(lambda: table_wire.submit(table, operations, max_body_bytes=MAX_BODY_BYTES))
    except table_wire.OperationRefused as exc:
        raise TransactionRefused(exc.status, exc.index, exc.message) from None
