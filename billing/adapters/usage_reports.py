"""APIM usage reports for the usage push: one paged read for all subscriptions of a window.

`reports.list_by_subscription` with a `timestamp` filter returns one row per subscription with
calls in the window. The pages are read side by side (`$top`/`$skip`), so a report of many pages
costs about two round trips, not one per page. Each page goes through the shared ARM budget;
azure-core's own retries are switched off per call (`retry_total=0`) so that 429s pause the whole
process, not one thread.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from billing.adapters.apim_client import ApimService
from billing.usage.plan import UsageCounts
from billing.usage.ratelimit import TokenBucket
from billing.usage.retry import Throttled, Transient, call_with_retry, parse_retry_after
from billing.usage.windows import ReportWindow

log = logging.getLogger("billing.usage")

CONSISTENT_READ_ATTEMPTS = 3  # parallel reads of a report that keeps changing, before paging one by one


def _odata_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def report_filter(window: ReportWindow, subscription_id: str | None = None) -> str:
    """Calls in [start, end): APIM's report filter takes `ge` and `le`, so the upper bound is end - 1 ms."""
    text = (
        f"timestamp ge datetime'{_odata_time(window.start)}' "
        f"and timestamp le datetime'{_odata_time(window.end - 0.001)}'"
    )
    if subscription_id is not None:
        text += f" and subscriptionId eq '{subscription_id}'"
    return text


def _sid(value: str | None) -> str:
    # APIM returns "/subscriptions/{sid}" or the full resource id; the name is the last segment.
    return (value or "").rstrip("/").rsplit("/", 1)[-1]


def _count(value: Any) -> int:
    return int(value or 0)


@dataclass(frozen=True)
class _Page:
    rows: list[Any]
    count: int | None  # the report's total rows, as this response states it (None if absent)
    next_link: str | None


class ApimUsageReports:
    """Report reads through the SDK: the first page, then the other pages side by side.

    The first page states the report's `count` of rows; the other pages are then independent
    `$top`/`$skip` reads, fetched by up to `parallel_pages` threads, each page taking its token from
    the shared ARM budget (so parallel paging never exceeds the rate, it only stops waiting on
    latency one page at a time). Every page must state the same count and the rows must add up to
    it, else the report changed while it was read and the read starts over.
    """

    def __init__(
        self, service: ApimService, bucket: TokenBucket, *, page_size: int | None = None, parallel_pages: int = 8
    ) -> None:
        if parallel_pages < 1:
            raise ValueError(f"parallel_pages must be at least 1, got {parallel_pages}")
        self._service = service
        self._bucket = bucket
        self._page_size = page_size
        self._parallel = parallel_pages
        self._lock = threading.Lock()
        self.requests = 0  # report pages fetched (including retries)

    def read(self, window: ReportWindow, subscription_id: str | None = None) -> dict[str, UsageCounts]:
        """Counts per subscription id for calls in the window (subscriptions without calls are absent)."""
        counts: dict[str, UsageCounts] = {}
        for page in self._pages(report_filter(window, subscription_id)):
            for record in page:
                sid = _sid(record.subscription_id)
                if not sid:
                    continue
                row = UsageCounts(
                    success=_count(record.call_count_success), blocked=_count(record.call_count_blocked),
                    failed=_count(record.call_count_failed), other=_count(record.call_count_other),
                )  # fmt: skip
                previous = counts.get(sid)
                if previous is not None:  # the same subscription on two rows (e.g. regions): add up
                    row = UsageCounts(previous.success + row.success, previous.blocked + row.blocked,
                                      previous.failed + row.failed, previous.other + row.other)  # fmt: skip
                counts[sid] = row
        return counts

    def _pages(self, filter_text: str) -> list[list[Any]]:
        for _ in range(CONSISTENT_READ_ATTEMPTS):
            pages = self._parallel_pages(filter_text)
            if pages is not None:
                return pages
            log.warning("usage push: the APIM report changed while its pages were read; reading it again")
        log.warning("usage push: the APIM report kept changing; reading its pages one after another")
        return self._sequential_pages(filter_text)

    def _parallel_pages(self, filter_text: str) -> list[list[Any]] | None:
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

    def _sequential_pages(self, filter_text: str, first: _Page | None = None) -> list[list[Any]]:
        """Following nextLink one page at a time: for a service that states no count."""
        page = first or self._page(filter_text, self._page_size, None)
        pages = [page.rows]
        while page.next_link:
            page = self._page(filter_text, None, None, page.next_link)
            pages.append(page.rows)
        return pages

    def _page(self, filter_text: str, top: int | None, skip: int | None, next_link: str | None = None) -> _Page:
        ops = self._service.client.reports
        stated: dict[str, Any] = {}

        def keep_count(response: Any) -> None:
            # The SDK's pager hands out rows and nextLink only; the page's `count` is read here.
            try:
                body = json.loads(response.http_response.text())
            except ValueError:
                return
            if isinstance(body, dict) and isinstance(body.get("count"), int):
                stated["count"] = body["count"]

        def fetch() -> _Page:
            with self._lock:
                self.requests += 1
            try:
                items: Any = ops.list_by_subscription(
                    self._service.resource_group, self._service.service_name, filter=filter_text,
                    top=top, skip=skip, retry_total=0, raw_response_hook=keep_count,
                )  # fmt: skip
                pager = items.by_page(continuation_token=next_link)  # an ItemPaged, typed as Iterable
                rows = list(next(pager))
                return _Page(rows, stated.get("count"), pager.continuation_token)
            except StopIteration:
                return _Page([], stated.get("count"), None)
            except HttpResponseError as exc:
                status = exc.status_code or 0
                if status == 429:
                    response: Any = exc.response
                    retry_after = response.headers.get("Retry-After") if response is not None else None
                    raise Throttled("ARM throttled the report read", parse_retry_after(retry_after)) from None
                if status >= 500:
                    raise Transient(f"ARM answered {status} to the report read") from None
                raise
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise Transient(f"network error reading APIM reports: {type(exc).__name__}") from None

        return call_with_retry(fetch, self._bucket)
