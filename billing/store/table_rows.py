"""Reading many Table Storage rows quickly: the SDK's own request, its JSON read here.

`TableClient.query_entities` turns every property of every row into an `EntityProperty` through
the generated deserializer, which costs several times more CPU than the request itself
(`python -m bench.table_bench` prints both per row). These reads send the very request the SDK
builds (`build_table_query_entities_request`) through the client's own pipeline (its credential,
whether shared key or managed identity, its retries and its TLS settings) and parse the JSON
themselves. Only the types this app stores are converted: Edm.Int64 (sent as a string) becomes an int;
strings, booleans, numbers and Int32 are JSON already.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, map_error
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient
from azure.data.tables._generated.operations._operations import build_table_query_entities_request

PAGE_SIZE = 1000  # Table Storage returns at most 1,000 rows a page
_TYPE_SUFFIX = "@odata.type"
_NEXT_PARTITION = "x-ms-continuation-NextPartitionKey"
_NEXT_ROW = "x-ms-continuation-NextRowKey"


@dataclass(frozen=True)
class Row:
    """One entity: its properties (PartitionKey and RowKey included) and its ETag."""

    values: dict[str, Any]
    etag: str


def _row(raw: dict[str, Any]) -> Row:
    """The decoded JSON row, its annotations removed in place (minimal metadata annotates few keys)."""
    etag = str(raw.pop("odata.etag", ""))
    for key in [k for k in raw if "@" in k or k.startswith("odata.")]:
        kind = raw.pop(key)
        if key.endswith(_TYPE_SUFFIX) and kind == "Edm.Int64":
            name = key[: -len(_TYPE_SUFFIX)]
            raw[name] = int(raw[name])
    return Row(raw, etag)


def _request(table: TableClient, filter_text: str | None, select: Sequence[str] | None, page_size: int,
             continuation: tuple[str, str | None] | None) -> HttpRequest:  # fmt: skip
    request: HttpRequest = build_table_query_entities_request(
        table=table.table_name, top=page_size, filter=filter_text,
        select=",".join(select) if select else None,
        next_partition_key=continuation[0] if continuation else None,
        next_row_key=continuation[1] if continuation else None,
    )  # fmt: skip
    return request


def query_rows(
    table: TableClient, filter_text: str | None = None, *, select: Sequence[str] | None = None,
    page_size: int = PAGE_SIZE, on_page: Callable[[], None] | None = None,
) -> Iterator[Row]:  # fmt: skip
    """Every row matching the OData filter (all rows when None), page after page.

    `on_page` is called once per request sent (for request counts in summaries).

    Raises ResourceNotFoundError if the table does not exist, HttpResponseError on other refusals
    (after the pipeline's own retries), as `query_entities` would.
    """
    continuation: tuple[str, str | None] | None = None
    while True:
        request = _request(table, filter_text, select, page_size, continuation)
        # The TableClient's pipeline, not a new one; streamed, so that its policies do not decode the
        # JSON a first time (read once here).
        response = table._client.send_request(request, stream=True)
        content = response.read()
        if on_page is not None:
            on_page()
        if response.status_code != 200:
            map_error(status_code=response.status_code, response=response, error_map={404: ResourceNotFoundError})
            raise HttpResponseError(response=response)
        for raw in json.loads(content).get("value", []):
            yield _row(raw)
        next_partition = response.headers.get(_NEXT_PARTITION)
        if not next_partition:
            return
        continuation = (next_partition, response.headers.get(_NEXT_ROW))
