"""The Table Storage wire: the two measured hot paths where the SDK's public API costs several times the CPU.

`python -m bench.table_bench` prints both paths side by side (figures in bench/README.md, "Public SDK
surfaces (issue 20)"), per row and per transaction of the usage push's shapes:

- reading rows: `TableClient.query_entities` turns every property of every row into Python values
  through the generated deserializer and `_convert_to_entity` (an `eval` per value, `strptime` per
  Timestamp), several times the CPU of the request itself; here the JSON is read once;
- entity-group transactions: `submit_transaction` prepares each operation through azure-core's
  multipart support (a thread pool per transaction, the `email` package to write and to parse the
  parts); here the `$batch` body (Table service REST API, "Performing entity group transactions") is
  written as text and its answer split on its own MIME boundaries.

Everything else goes through the public API, and so do these two paths unless the installed
azure-data-tables is the version this module was verified against (`ACTIVE`): `billing.store.table_rows`
and `billing.store.table_transactions` are the app's entry points and choose. Beyond the public API
this module relies on, and only here:

- `TableClient._client.send_request`: the client's own pipeline (its credential, shared key or
  managed identity, its retries, timeouts and TLS settings), as the SDK's `_batch_send` uses it;
- `build_table_query_entities_request` from `azure.data.tables._generated`: the query request the
  SDK itself builds (path, `$top`/`$select`/`$filter`, continuation, minimal-metadata JSON);
- the `$batch` request as the SDK 12.7 writes it, at the client's public `api_version`.

tests/integration/test_table_wire.py fails when the pinned version changes: run the tests in
tests/integration/test_table_rows.py (they run both paths) and the bench on the new version, then
move `VERIFIED_TABLES_VERSION`.
"""

from __future__ import annotations

import importlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import azure.data.tables
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, map_error
from azure.core.rest import HttpRequest, HttpResponse
from azure.data.tables import TableClient

log = logging.getLogger("billing.store")

VERIFIED_TABLES_VERSION = "12.7.0"  # azure-data-tables: the private surfaces above read against this release


def _query_request_builder() -> Callable[..., HttpRequest] | None:
    """The SDK's own builder of the query request; None if a release moved it (imported by name, so that
    such a release falls back to the public path instead of failing to import the app)."""
    try:
        module = importlib.import_module("azure.data.tables._generated.operations._operations")
    except ImportError:
        return None
    builder: Callable[..., HttpRequest] | None = getattr(module, "build_table_query_entities_request", None)
    return builder


_BUILD_QUERY = _query_request_builder()
ACTIVE = azure.data.tables.__version__ == VERIFIED_TABLES_VERSION and _BUILD_QUERY is not None
if not ACTIVE:
    log.warning(
        "azure-data-tables %s is not the version billing.store.table_wire was verified against (%s): "
        "Table Storage reads and transactions use the SDK's public API (slower; see bench/README.md)",
        azure.data.tables.__version__,
        VERIFIED_TABLES_VERSION,
    )

_TYPE_SUFFIX = "@odata.type"
_NEXT_PARTITION = "x-ms-continuation-NextPartitionKey"
_NEXT_ROW = "x-ms-continuation-NextRowKey"
_INT32 = range(-(2**31), 2**31)


# Reading ------------------------------------------------------------------------------------------
def _plain(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A decoded JSON row as (properties, ETag): annotations, odata and Timestamp removed in place, as
    the SDK keeps them out of its entities; Edm.Int64 (sent as a string) becomes an int."""
    etag = str(raw.pop("odata.etag", ""))
    raw.pop("Timestamp", None)
    for key in [k for k in raw if "@" in k or k.startswith("odata.")]:
        kind = raw.pop(key)
        if kind == "Edm.Int64" and key.endswith(_TYPE_SUFFIX):
            name = key[: -len(_TYPE_SUFFIX)]
            raw[name] = int(raw[name])
    return raw, etag


def query(
    table: TableClient,
    filter_text: str | None,
    select: Sequence[str] | None,
    page_size: int,
    on_page: Callable[[], None] | None,
) -> Iterator[tuple[dict[str, Any], str]]:
    """(properties, ETag) of every row matching the OData filter (all rows when None), page after page.

    Raises ResourceNotFoundError if the table does not exist, HttpResponseError on other refusals
    (after the pipeline's own retries), as `query_entities` does.
    """
    if _BUILD_QUERY is None:
        raise RuntimeError(f"azure-data-tables {azure.data.tables.__version__} has no query request builder")
    continuation: tuple[str, str | None] | None = None
    while True:
        request = _BUILD_QUERY(
            table=table.table_name,
            top=page_size,
            filter=filter_text,
            select=",".join(select) if select else None,
            next_partition_key=continuation[0] if continuation else None,
            next_row_key=continuation[1] if continuation else None,
        )
        # Streamed, so that the pipeline's policies do not decode the JSON a first time (read once here).
        response = table._client.send_request(request, stream=True)
        content = response.read()
        if on_page is not None:
            on_page()
        if response.status_code != 200:
            map_error(status_code=response.status_code, response=response, error_map={404: ResourceNotFoundError})
            raise HttpResponseError(response=response)
        for raw in json.loads(content).get("value", []):
            yield _plain(raw)
        next_partition = response.headers.get(_NEXT_PARTITION)
        if not next_partition:
            return
        continuation = (next_partition, response.headers.get(_NEXT_ROW))


# Transactions -------------------------------------------------------------------------------------
class OperationRefused(Exception):
    """The service applied none of the transaction: operation `index` was answered `status`."""

    def __init__(self, status: int, index: int, message: str) -> None:
        super().__init__(f"operation {index} was refused with {status}: {message}")
        self.status = status
        self.index = index
        self.message = message


def _json(entity: dict[str, Any]) -> bytes:
    """The entity as Table Storage's JSON; values are str, bool or int (checked by the caller)."""
    body: dict[str, Any] = {}
    for key, value in entity.items():
        if type(value) is int and value not in _INT32:
            body[key], body[f"{key}{_TYPE_SUFFIX}"] = str(value), "Edm.Int64"
        else:
            body[key] = value
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _key(value: str) -> str:
    return quote(value.replace("'", "''"), safe="")


def _operation(table: TableClient, entity: dict[str, Any], etag: str | None, index: int) -> bytes:
    body = _json(entity)
    base = table.url.rstrip("/")
    if etag is None:  # insert: fails with 409 if the row exists
        line = f"POST {base}/{table.table_name} HTTP/1.1"
        condition = "Prefer: return-no-content\r\n"
    else:  # replace, only if the row is still at `etag` (else 412)
        keys = f"PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}'"
        line = f"PUT {base}/{table.table_name}({keys}) HTTP/1.1"
        condition = f"If-Match: {etag}\r\n"
    head = (
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: {index}\r\n\r\n{line}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nx-ms-version: {table.api_version}\r\n"
        f"DataServiceVersion: 3.0\r\nAccept: application/json;odata=minimalmetadata\r\n{condition}\r\n"
    )
    return head.encode("ascii") + body + b"\r\n"


def batch_request(table: TableClient, operations: Sequence[tuple[dict[str, Any], str | None]]) -> HttpRequest:
    """The `$batch` request: one changeset, an operation per (entity, ETag); ETag None inserts."""
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode("ascii")]
    for index, (entity, etag) in enumerate(operations):
        parts.append(f"--{changeset}\r\n".encode("ascii"))
        parts.append(_operation(table, entity, etag, index))
    parts.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode("ascii"))
    return HttpRequest(
        "POST",
        f"{table.url.rstrip('/')}/$batch",
        content=b"".join(parts),
        headers={
            "x-ms-version": table.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Accept": "application/json",
            "Content-Type": f"multipart/mixed; boundary={batch}",
        },
    )


def _boundary(content_type: str) -> bytes | None:
    """The boundary parameter of a multipart Content-Type, or None."""
    kind, *params = (p.strip() for p in content_type.split(";"))
    if not kind.lower().startswith("multipart/"):
        return None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "boundary" and value:
            return value.strip().strip('"').encode("ascii")
    return None


def _split(data: bytes) -> tuple[dict[str, str], bytes]:
    """Header lines (names lower-cased) and what follows the blank line after them (CRLF or LF)."""
    end, gap = data.find(b"\r\n\r\n"), 4
    if end < 0 or (0 <= data.find(b"\n\n") < end):
        end, gap = data.find(b"\n\n"), 2
    head, rest = (data, b"") if end < 0 else (data[:end], data[end + gap :])
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _parts(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts of a multipart body, between its `--boundary` lines (the closing `--boundary--` ends it)."""
    pieces = body.split(b"--" + boundary)
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        parts.append(piece.lstrip(b"\r\n"))
    return parts


def _refusal(status: int, content: bytes) -> OperationRefused:
    """The failed operation: Table Storage's message starts with its index ("1:The ...")."""
    message = ""
    try:
        error = json.loads(content)
        message = str(error["odata.error"]["message"]["value"]).splitlines()[0]
    except (ValueError, KeyError, TypeError, IndexError):
        message = ""
    head, _, rest = message.partition(":")
    index = int(head) if head.isdigit() else 0
    return OperationRefused(status, index, (rest if head.isdigit() else message) or f"status {status}")


def batch_answer(response: HttpResponse, content: bytes, operations: int) -> list[str]:
    """The ETags of a 202 answer's operations, in order; OperationRefused if the service refused one."""
    if response.status_code != 202:
        raise HttpResponseError(response=response)
    batch = _boundary(response.headers.get("Content-Type", ""))
    if batch is None:
        raise HttpResponseError(message="the transaction's answer is not multipart", response=response)
    etags: list[str] = []
    for part in _parts(content, batch):
        part_headers, changeset_body = _split(part)
        changeset = _boundary(part_headers.get("content-type", ""))
        if changeset is None:  # a whole-batch error answered outside a changeset
            raise HttpResponseError(message="the transaction's answer holds no changeset", response=response)
        for operation in _parts(changeset_body, changeset):
            _mime, http = _split(operation)
            status_line, _, rest = http.partition(b"\n")
            fields = status_line.split()
            if len(fields) < 2 or not fields[1].isdigit():
                raise HttpResponseError(
                    message=f"an operation's answer has no status line: {status_line[:60]!r}", response=response
                )
            status = int(fields[1])
            headers, content_body = _split(rest)
            if not 200 <= status < 300:
                raise _refusal(status, content_body)
            if "etag" not in headers:
                raise HttpResponseError(message="an operation's answer carries no ETag", response=response)
            etags.append(headers["etag"])
    if len(etags) != operations:
        raise HttpResponseError(
            message=f"the transaction answered {len(etags)} of {operations} operations", response=response
        )
    return etags


def submit(
    table: TableClient, operations: Sequence[tuple[dict[str, Any], str | None]], *, max_body_bytes: int
) -> list[str]:
    """Send one transaction (checked by the caller) through the table client's pipeline; the new ETags
    in order. Raises OperationRefused, ValueError above `max_body_bytes`, HttpResponseError, or
    azure-core's network errors (ServiceResponseError when the answer was lost)."""
    request = batch_request(table, operations)
    size = len(request.content)
    if size > max_body_bytes:
        raise ValueError(f"the transaction is {size:,} bytes, above Table Storage's {max_body_bytes:,}")
    # Streamed, so that no policy decodes the parts.
    response = table._client.send_request(request, stream=True)
    return batch_answer(response, response.read(), len(operations))
