"""APIM usage reports for the usage push: one paged read for all subscriptions of a window.

`reports.list_by_subscription` with a `timestamp` filter returns one row per subscription with
calls in the window. The pages are read side by side (`$top`/`$skip`), so a report of many pages
costs about two round trips, not one per page. Each page goes through the shared ARM budget;
azure-core's own retries are switched off per call (`retry_total=0`) so that 429s pause the whole
process, not one thread.

Every page is one call of the SDK's public `reports.list_by_subscription` (its request, bearer token,
ARM policies, TLS settings, error mapping and `ReportRecordContract` models), read a page at a time
with `by_page` (the next link is the pager's `continuation_token`). Two things the pager does not
give are read from the raw answer through azure-core's per-call `raw_response_hook`: the report's
`count` of rows (the pager drops it; the side-by-side reads need it) and a check of the page's shape,
so that a malformed page is a ReportFormatError naming what is off (the SDK's deserializer would
turn `"12"` into 12 and fail on others with a generic message).
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.paging import ItemPaged, PageIterator
from azure.core.pipeline import PipelineResponse
from azure.mgmt.apimanagement.models import ReportRecordContract

from billing.adapters.apim_client import ApimService
from billing.usage.plan import UsageCounts
from billing.usage.ratelimit import TokenBucket
from billing.usage.retry import Throttled, Transient, call_with_retry, parse_retry_after
from billing.usage.windows import ReportWindow

log = logging.getLogger("billing.usage")

CONSISTENT_READ_ATTEMPTS = 3  # parallel reads of a report that keeps changing, before paging one by one


class ReportFormatError(ValueError):
    """A report page that is not the JSON APIM documents (ReportCollection); the message says what is off."""


def _odata_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _quoted(value: str) -> str:
    return value.replace("'", "''")  # OData string literal


def report_filter(window: ReportWindow, subscription_id: str | None = None, product_id: str | None = None) -> str:
    """Calls in [start, end): APIM's report filter takes `ge` and `le`, so the upper bound is end - 1 ms."""
    text = (
        f"timestamp ge datetime'{_odata_time(window.start)}' "
        f"and timestamp le datetime'{_odata_time(window.end - 0.001)}'"
    )
    if subscription_id is not None:
        text += f" and subscriptionId eq '{_quoted(subscription_id)}'"
    if product_id is not None:
        text += f" and productId eq '{_quoted(product_id)}'"
    return text


def _sid(value: str | None) -> str:
    # APIM returns "/subscriptions/{sid}" or the full resource id; the name is the last segment.
    return (value or "").rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class _Page:
    rows: list[tuple[str, UsageCounts]]  # every row, "" for a row without a subscription (still counted)
    count: int | None  # the report's total rows, as this response states it (None if absent)
    next_link: str | None


class ApimUsageReports:
    """Report reads through the management client: the first page, then the other pages side by side.

    The first page states the report's `count` of rows; the other pages are then independent
    `$top`/`$skip` reads, fetched by up to `parallel_pages` threads, each page taking its token from
    the shared ARM budget (so parallel paging never exceeds the rate, it only stops waiting on
    latency one page at a time). Every page must state the same count and the rows must add up to
    it, else the report changed while it was read and the read starts over.
    """

    def __init__(
        self, service: ApimService, bucket: TokenBucket, *, page_size: int | None = None, parallel_pages: int = 16
    ) -> None:
        if parallel_pages < 1:
            raise ValueError(f"parallel_pages must be at least 1, got {parallel_pages}")
        self._service = service
        self._bucket = bucket
        self._page_size = page_size
        self._parallel = parallel_pages
        self._lock = threading.Lock()
        self.requests = 0  # report pages fetched (including retries)

    def read(
        self, window: ReportWindow, subscription_id: str | None = None, product_id: str | None = None
    ) -> dict[str, UsageCounts]:
        """Counts per subscription id for calls in the window (subscriptions without calls are absent)."""
        counts: dict[str, UsageCounts] = {}
        for page in self._pages(report_filter(window, subscription_id, product_id)):
            for sid, row in page:
                if not sid:
                    continue
                previous = counts.get(sid)
                # The same subscription on two rows (e.g. regions): add up.
                counts[sid] = (
                    row
                    if previous is None
                    else UsageCounts(
                        previous.success + row.success,
                        previous.blocked + row.blocked,
                        previous.failed + row.failed,
                        previous.other + row.other,
                    )
                )
        return counts

    def _pages(self, filter_text: str) -> list[list[tuple[str, UsageCounts]]]:
        for _ in range(CONSISTENT_READ_ATTEMPTS):
            pages = self._parallel_pages(filter_text)
            if pages is not None:
                return pages
            log.warning("usage push: the APIM report changed while its pages were read; reading it again")
        log.warning("usage push: the APIM report kept changing; reading its pages one after another")
        return self._sequential_pages(filter_text)

    def _parallel_pages(self, filter_text: str) -> list[list[tuple[str, UsageCounts]]] | None:
        """All pages, or None if they disagree (the report changed between two page reads)."""
        first = self._page(filter_text, self._page_size, None)
        if not first.next_link:
            return [first.rows]
        if first.count is None or not first.rows:
            return self._sequential_pages(filter_text, first)
        size = len(first.rows)  # a full page: the page size the service applies
        skips = range(size, first.count, size)
        with ThreadPoolExecutor(max_workers=min(self._parallel, len(skips)) or 1) as pool:
            rest = list(pool.map(lambda skip: self._page(filter_text, size, skip), skips))
        pages = [first, *rest]
        if any(p.count != first.count for p in rest) or sum(len(p.rows) for p in pages) != first.count:
            return None
        return [p.rows for p in pages]

    def _sequential_pages(self, filter_text: str, first: _Page | None = None) -> list[list[tuple[str, UsageCounts]]]:
        """Following nextLink one page at a time: for a service that states no count."""
        page = first or self._page(filter_text, self._page_size, None)
        pages = [page.rows]
        while page.next_link:
            page = self._page(filter_text, None, None, page.next_link)
            pages.append(page.rows)
        return pages

    def _page(self, filter_text: str, top: int | None, skip: int | None, next_link: str | None = None) -> _Page:
        service = self._service

        def fetch() -> _Page:
            with self._lock:
                self.requests += 1
            counts: list[int | None] = []  # the page's `count`, once its shape is checked

            def check(pipeline_response: PipelineResponse[Any, Any]) -> None:
                response = pipeline_response.http_response
                if response.status_code == 200:  # errors are the SDK's to map (401, 404, ... with ARM's message)
                    counts.append(check_page(response.body(), _where(pipeline_response.http_request.url)))

            pager = service.client.reports.list_by_subscription(
                service.resource_group,
                service.service_name,
                filter_text,
                top=top,
                skip=skip,
                retry_total=0,
                raw_response_hook=check,
            )
            # The SDK annotates an Iterable; it returns an ItemPaged, whose pages are a PageIterator.
            paged = cast(ItemPaged[ReportRecordContract], pager)
            pages = cast(PageIterator[ReportRecordContract], paged.by_page(continuation_token=next_link))
            try:
                records = list(next(pages))
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise Transient(f"network error reading APIM reports: {type(exc).__name__}") from None
            except HttpResponseError as exc:
                status = exc.status_code or 0
                if status == 429:
                    retry_after = getattr(exc.response, "headers", {}).get("Retry-After")
                    raise Throttled("ARM throttled the report read", parse_retry_after(retry_after)) from None
                if status >= 500:
                    raise Transient(f"ARM answered {status} to the report read") from None
                raise
            rows = [(_sid(r.subscription_id), _counts(r)) for r in records]
            return _Page(rows, counts[-1] if counts else None, pages.continuation_token or None)

        return call_with_retry(fetch, self._bucket)


def _counts(record: ReportRecordContract) -> UsageCounts:
    # None: absent or null in the answer, no calls of that kind (check_page let only whole numbers through)
    return UsageCounts(
        success=record.call_count_success or 0,
        blocked=record.call_count_blocked or 0,
        failed=record.call_count_failed or 0,
        other=record.call_count_other or 0,
    )


def _where(url: str) -> str:
    # For error messages: the path says which report and page; the query (the long filter) adds nothing.
    return f"APIM report page (GET {urlsplit(url).path})"


_CALL_COUNTS = ("callCountSuccess", "callCountBlocked", "callCountFailed", "callCountOther")


def check_page(body: bytes, where: str) -> int | None:
    """The `count` of one ReportCollection page, after checking its shape (`value` rows of whole call
    counts and a subscriptionId string, `count`, `nextLink`); ReportFormatError names what is wrong."""
    try:
        doc = json.loads(body)
    except ValueError:
        start = body[:60].decode("utf-8", "replace")
        raise ReportFormatError(
            f"{where}: the answer is not JSON ({len(body)} bytes starting {start!r}); expected a report page "
            'like {"value": [...], "count": N, "nextLink": ...}'
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("value"), list):
        shape = f"keys {sorted(doc)[:8]}" if isinstance(doc, dict) else f"a JSON {type(doc).__name__}"
        raise ReportFormatError(f"{where}: expected an object with a 'value' list of report rows, got {shape}")
    for n, row in enumerate(doc["value"]):
        if not isinstance(row, dict):
            raise ReportFormatError(f"{where}: row {n} must be an object, not a JSON {type(row).__name__}")
        sid = row.get("subscriptionId")
        if sid is not None and not isinstance(sid, str):
            raise ReportFormatError(
                f"{where}: row {n}: 'subscriptionId' must be a string like '/subscriptions/name', not {sid!r}"
            )
        for name in _CALL_COUNTS:
            value = row.get(name)
            if value is not None and (type(value) is not int or value < 0):  # None: no calls of that kind
                raise ReportFormatError(
                    f"{where}: row {n}: '{name}' must be a whole number of calls, 0 or more, not {value!r}"
                )
    count = doc.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ReportFormatError(f"{where}: 'count' must be the report's whole number of rows, not {count!r}")
    next_link = doc.get("nextLink")
    if next_link is not None and not isinstance(next_link, str):
        raise ReportFormatError(f"{where}: 'nextLink' must be a URL string or null, not {next_link!r}")
    return count
