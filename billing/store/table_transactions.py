"""Entity-group transactions with a light client side: the OData batch body built and read here.

`TableClient.submit_transaction` prepares each operation through azure-core's multipart support
(a thread pool per transaction, the `email` package to write and to parse the parts), which cost
the usage push's workers most of their CPU, and more with many threads (`python -m
bench.table_bench` prints both ways' CPU per transaction). This writes the same `$batch` request
(Table service REST API, "Performing entity group transactions") as text and sends it through
the TableClient's own pipeline (credential, shared key or managed identity, retries, TLS), then
reads the status and ETag of each operation from the answer.

Operations: insert (fails if the row exists) and replace-if-unchanged (If-Match an ETag). Values:
str, bool and int (Int32; larger ints as Edm.Int64), which is all the app's tables hold.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import HttpResponseError, ServiceResponseError
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient

MAX_OPERATIONS = 100  # Table Storage: operations per transaction
MAX_BODY_BYTES = 4 * 1024 * 1024  # ... and its payload
API_VERSION = "2019-02-02"  # as azure-data-tables 12.7 sends
SEND_ATTEMPTS = 3
_INT32 = range(-(2**31), 2**31)
_STATUS = re.compile(rb"^HTTP/1\.1 (\d{3})", re.MULTILINE)
_ETAG = re.compile(rb"^ETag: *(.+?)\r?$", re.MULTILINE | re.IGNORECASE)


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


def _json(entity: dict[str, Any]) -> bytes:
    body: dict[str, Any] = {}
    for key, value in entity.items():
        if isinstance(value, int) and not isinstance(value, bool) and value not in _INT32:
            body[key], body[f"{key}@odata.type"] = str(value), "Edm.Int64"
        elif isinstance(value, str | bool | int):
            body[key] = value
        else:
            raise TypeError(f"property '{key}' must be str, bool or int, not {type(value).__name__}")
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def _key(value: str) -> str:
    return quote(value.replace("'", "''"), safe="")


def _operation(base: str, table: str, write: Write, index: int) -> bytes:
    entity = write.entity
    body = _json(entity)
    if write.etag is None:
        line = f"POST {base}/{table} HTTP/1.1"
        condition = "Prefer: return-no-content\r\n"
    else:
        keys = f"PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}'"
        line = f"PUT {base}/{table}({keys}) HTTP/1.1"
        condition = f"If-Match: {write.etag}\r\n"
    head = (
        "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        f"Content-ID: {index}\r\n\r\n{line}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nx-ms-version: {API_VERSION}\r\n"
        f"DataServiceVersion: 3.0\r\nAccept: application/json;odata=minimalmetadata\r\n{condition}\r\n"
    )
    return head.encode("ascii") + body + b"\r\n"


def _body(table: TableClient, writes: Sequence[Write]) -> tuple[bytes, str]:
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    base = table.url.rstrip("/")
    parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode("ascii")]
    for index, write in enumerate(writes):
        parts.append(f"--{changeset}\r\n".encode("ascii"))
        parts.append(_operation(base, table.table_name, write, index))
    parts.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode("ascii"))
    return b"".join(parts), batch


def _refusal(part: bytes, status: int) -> TransactionRefused:
    """The failed operation: Table Storage's message starts with its index ("1:The ...")."""
    message, index = "", 0
    start = part.find(b"{")
    if start >= 0:
        try:
            error = json.loads(part[start : part.rfind(b"}") + 1])
            message = str(error["odata.error"]["message"]["value"]).splitlines()[0]
        except (ValueError, KeyError, TypeError):
            message = ""
    head, _, rest = message.partition(":")
    if head.isdigit():
        index, message = int(head), rest
    return TransactionRefused(status, index, message or f"status {status}")


def _send(table: TableClient, request: HttpRequest) -> tuple[Any, bytes]:
    """The answer to the transaction, sending it again if the connection broke before the answer.

    The pipeline does not retry a POST whose answer was lost (a pooled connection the server had
    closed, say). Sending it again is safe here: every operation is conditional (an insert, or a
    replace If-Match), so a transaction that was applied the first time is refused as a whole the
    second (409 or 412, TransactionRefused), never applied twice.
    """
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            # The TableClient's pipeline, not a new one; streamed, so that no policy decodes the parts.
            response = table._client.send_request(request, stream=True)
            return response, response.read()
        except ServiceResponseError:
            if attempt == SEND_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def submit(table: TableClient, writes: Sequence[Write]) -> list[str]:
    """Apply all writes or none; the new ETags, in order.

    Raises TransactionRefused when the service refused one operation (none applied),
    HttpResponseError when it refused the request itself.
    """
    if not 1 <= len(writes) <= MAX_OPERATIONS:
        raise ValueError(f"a transaction holds 1 to {MAX_OPERATIONS} operations, got {len(writes)}")
    if len({w.entity["PartitionKey"] for w in writes}) != 1:
        raise ValueError("every operation of a transaction must be in the same partition")
    body, boundary = _body(table, writes)
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"the transaction is {len(body):,} bytes, above Table Storage's {MAX_BODY_BYTES:,}")
    request = HttpRequest(
        "POST", f"{table.url.rstrip('/')}/$batch", content=body,
        headers={"x-ms-version": API_VERSION, "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
                 "Accept": "application/json", "Content-Type": f"multipart/mixed; boundary={boundary}"},
    )  # fmt: skip
    response, content = _send(table, request)
    if response.status_code != 202:
        raise HttpResponseError(response=response)
    kind = response.headers.get("Content-Type", "")
    found = re.search(r"boundary=([^;\s]+)", kind)
    if found is None:
        raise HttpResponseError(message=f"the transaction's answer is not multipart ({kind!r})", response=response)
    # The answer holds one changeset; each of its parts is one operation's HTTP response.
    pieces = [p for p in re.split(rb"--changesetresponse_[0-9a-fA-F-]+", content) if _STATUS.search(p)]
    etags: list[str] = []
    for part in pieces:
        status_match = _STATUS.search(part)
        assert status_match is not None
        status = int(status_match.group(1))
        if not 200 <= status < 300:
            raise _refusal(part, status)
        etag = _ETAG.search(part)
        if etag is None:
            raise HttpResponseError(message="an operation's answer carries no ETag", response=response)
        etags.append(etag.group(1).decode("ascii").strip())
    if len(etags) != len(writes):
        raise HttpResponseError(message=f"the transaction answered {len(etags)} of {len(writes)} operations",
                                response=response)  # fmt: skip
    return etags
