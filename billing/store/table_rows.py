"""Reading many Table Storage rows: `query_rows`, the repositories' one way to list rows.

Two paths, one contract (tests/integration/test_table_rows.py runs both):
- "sdk": `TableClient.query_entities` / `list_entities` with `select` and `results_per_page`, page by
  page (`by_page`), each `TableEntity` made a plain dict;
- "wire": `billing.store.table_wire.query`, the same request through the same client pipeline with
  the JSON read once: several times less CPU per row (`python -m bench.table_bench`), which the
  usage push pays for every subscription link and watermark row.

By default the wire, when `table_wire.ACTIVE` (the installed azure-data-tables is the version it was
verified against), else the SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from azure.core.exceptions import HttpResponseError
from azure.data.tables import EntityProperty, TableClient, TableEntity

from billing.store import table_wire

PAGE_SIZE = 1000  # Table Storage returns at most 1,000 rows a page

Via = Literal["sdk", "wire"]


@dataclass(frozen=True)
class Row:
    """One entity: its properties (PartitionKey and RowKey included, Timestamp not) and its ETag.

    Values are str, bool, int (Int32 and Int64) and float, all that the app's tables hold.
    """

    values: dict[str, Any]
    etag: str


def _plain(entity: TableEntity) -> Row:
    values = {k: v.value if isinstance(v, EntityProperty) else v for k, v in entity.items()}
    return Row(values, str(entity.metadata["etag"]))


def _sdk_rows(
    table: TableClient,
    filter_text: str | None,
    select: Sequence[str] | None,
    page_size: int,
    on_page: Callable[[], None] | None,
) -> Iterator[Row]:
    chosen = list(select) if select else None
    if filter_text is None:
        entities = table.list_entities(results_per_page=page_size, select=chosen)
    else:
        entities = table.query_entities(filter_text, results_per_page=page_size, select=chosen)
    pages = entities.by_page()
    while True:
        try:
            page = next(pages)
        except StopIteration:
            return
        except HttpResponseError:
            if on_page is not None:
                on_page()  # answered, if with a refusal: a request all the same
            raise
        if on_page is not None:
            on_page()
        for entity in page:
            yield _plain(entity)


def query_rows(
    table: TableClient,
    filter_text: str | None = None,
    *,
    select: Sequence[str] | None = None,
    page_size: int = PAGE_SIZE,
    on_page: Callable[[], None] | None = None,
    via: Via | None = None,
) -> Iterator[Row]:
    """Every row matching the OData filter (all rows when None), page after page.

    `on_page` is called once per page answered (for request counts in summaries). `via` forces a
    path (tests, benchmarks); None takes the wire when it is active.

    Raises ResourceNotFoundError if the table does not exist, HttpResponseError on other refusals
    (after the pipeline's own retries), as `query_entities` does.
    """
    if (via or ("wire" if table_wire.ACTIVE else "sdk")) == "sdk":
        return _sdk_rows(table, filter_text, select, page_size, on_page)
    return (Row(values, etag) for values, etag in table_wire.query(table, filter_text, select, page_size, on_page))
