"""The Table Storage wire (`billing.store.table_wire`) relies on azure-data-tables' private surfaces as
one release has them: it must fail here, not in production, when the pinned version moves. Also its
reading of `$batch` answers as the documented examples and Azurite write them (CRLF or LF lines,
quoted boundaries, a refusal, an answer without its changeset), without a service.

The contract both paths share (the SDK's public API and the wire) is tested against Azurite in
tests/integration/test_table_rows.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import azure.data.tables
import pytest
from azure.core.exceptions import HttpResponseError

from billing.store import table_wire

ROOT = Path(__file__).resolve().parents[2]


def test_the_wire_was_verified_against_the_pinned_and_installed_sdk() -> None:
    pinned = re.search(r"^azure-data-tables==(\S+)", (ROOT / "requirements.txt").read_text(encoding="utf-8"), re.M)
    assert pinned is not None, "requirements.txt must pin azure-data-tables"
    assert pinned.group(1) == azure.data.tables.__version__ == table_wire.VERIFIED_TABLES_VERSION, (
        f"azure-data-tables is pinned at {pinned.group(1)} and installed at {azure.data.tables.__version__}; "
        f"billing.store.table_wire was verified against {table_wire.VERIFIED_TABLES_VERSION}. Until it is "
        "verified again, the app reads and writes Table Storage through the SDK's public API (slower). To verify: "
        "check what the module docstring lists (TableClient._client.send_request, the generated "
        "build_table_query_entities_request, the $batch request the SDK writes), run "
        "tests/integration/test_table_rows.py (both paths) and `python -m bench.table_bench`, then move "
        "VERIFIED_TABLES_VERSION and the figures in bench/README.md"
    )
    assert table_wire.ACTIVE


class _Response:
    """What `batch_answer` and HttpResponseError read of an answer."""

    def __init__(self, content_type: str, status: int = 202) -> None:
        self.status_code = status
        self.reason = "Accepted"
        self.headers = {"Content-Type": content_type}
        self.content = b""

    def text(self, encoding: str | None = None) -> str:
        return ""


def _answer(parts: list[str], newline: str = "\r\n", quoted: bool = False) -> tuple[_Response, bytes]:
    batch, changeset = "batchresponse_b1", "changesetresponse_c1"
    lines = [f"--{batch}", f"Content-Type: multipart/mixed; boundary={changeset}", ""]
    for part in parts:
        lines += [f"--{changeset}", "Content-Type: application/http", "Content-Transfer-Encoding: binary", "", part]
    lines += [f"--{changeset}--", f"--{batch}--", ""]
    boundary = f'"{batch}"' if quoted else batch
    return _Response(f"multipart/mixed; boundary={boundary}"), "\n".join(lines).replace("\n", newline).encode()


_OK = "HTTP/1.1 204 No Content\nContent-ID: {n}\nETag: W/\"datetime'2026-01-01T00%3A00%3A0{n}Z'\"\n"


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
@pytest.mark.parametrize("quoted", [False, True])
def test_the_etags_of_an_applied_transaction_are_read_in_order(newline: str, quoted: bool) -> None:
    response, content = _answer([_OK.format(n=n) for n in range(3)], newline, quoted)
    etags = table_wire.batch_answer(response, content, 3)  # type: ignore[arg-type]
    assert etags == [f"W/\"datetime'2026-01-01T00%3A00%3A0{n}Z'\"" for n in range(3)]


def test_a_refused_operation_is_named_by_its_index_and_status() -> None:
    refusal = (
        "HTTP/1.1 412 Precondition Failed\nContent-ID: 2\nContent-Type: application/json;odata=minimalmetadata\n\n"
        '{"odata.error":{"code":"UpdateConditionNotSatisfied","message":{"lang":"en-US",'
        '"value":"1:The update condition specified in the request was not satisfied.\\nRequestId:x\\nTime:y"}}}\n'
    )
    response, content = _answer([refusal])
    with pytest.raises(table_wire.OperationRefused) as refused:
        table_wire.batch_answer(response, content, 2)  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.index) == (412, 1)
    assert refused.value.message == "The update condition specified in the request was not satisfied."


def test_an_answer_that_is_not_a_whole_transaction_is_an_error() -> None:
    response, content = _answer([_OK.format(n=0)])
    with pytest.raises(HttpResponseError, match="answered 1 of 2 operations"):
        table_wire.batch_answer(response, content, 2)  # type: ignore[arg-type]
    response, content = _answer([_OK.format(n=0).replace("ETag", "X-Other")])
    with pytest.raises(HttpResponseError, match="no ETag"):
        table_wire.batch_answer(response, content, 1)  # type: ignore[arg-type]
    with pytest.raises(HttpResponseError, match="not multipart"):
        table_wire.batch_answer(_Response("application/json"), b"{}", 1)  # type: ignore[arg-type]
    flat = b"--b1\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 400 Bad Request\r\n\r\n--b1--\r\n"
    with pytest.raises(HttpResponseError, match="no changeset"):
        table_wire.batch_answer(_Response("multipart/mixed; boundary=b1"), flat, 1)  # type: ignore[arg-type]
