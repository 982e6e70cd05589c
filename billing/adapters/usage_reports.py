"""APIM usage reports for the usage push: one paged read for all subscriptions of a window.

`reports.list_by_subscription` with a `timestamp` filter returns one row per subscription with
calls in the window. The pages are read side by side (`$top`/`$skip`), so a report of many pages
costs about two round trips, not one per page. Each page goes through the shared ARM budget;
azure-core's own retries are switched off per call (`retry_total=0`) so that 429s pause the whole
process, not one thread.

Pages are fetched through the management client's own pipeline (`_send_request`: its bearer token,
ARM policies, TLS settings and user agent) and their JSON read here: the SDK's model deserialisation
of ReportRecordContract rows cost more CPU than the rest of the push.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceRequestError,
    ServiceResponseError,
    map_error,
)
from azure.core.rest import HttpRequest
from azure.mgmt.core.exceptions import ARMErrorFormat

from billing.adapters.apim_client import ApimService
from billing.usage.plan import UsageCounts
from billing.usage.ratelimit import TokenBucket
from billing.usage.retry import Throttled, Transient, call_with_retry, parse_retry_after
from billing.usage.windows import ReportWindow

log = logging.getLogger("billing.usage")

CONSISTENT_READ_ATTEMPTS = 3  # parallel reads of a report that keeps changing, before paging one by one

# azure-mgmt-apimanagement 5.0.0, ReportsOperations.list_by_subscription: the path and the errors it maps.
_REPORT_PATH = (
    "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}"
    "/providers/Microsoft.ApiManagement/service/{serviceName}/reports/bySubscription"
)
_ERROR_MAP: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError, 404: ResourceNotFoundError,
    409: ResourceExistsError, 304: ResourceNotModifiedError,
}  # fmt: skip


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
                counts[sid] = row if previous is None else UsageCounts(
                    previous.success + row.success, previous.blocked + row.blocked,
                    previous.failed + row.failed, previous.other + row.other,
                )  # fmt: skip
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
        request = self._request(filter_text, top, skip, next_link)

        def fetch() -> _Page:
            with self._lock:
                self.requests += 1
            try:
                response = self._service.client._send_request(request, retry_total=0)
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise Transient(f"network error reading APIM reports: {type(exc).__name__}") from None
            status = response.status_code
            if status == 429:
                retry_after = response.headers.get("Retry-After")
                raise Throttled("ARM throttled the report read", parse_retry_after(retry_after))
            if status >= 500:
                raise Transient(f"ARM answered {status} to the report read")
            if status != 200:
                # The errors the SDK's list_by_subscription raises (401, 404, ... with ARM's message).
                map_error(status_code=status, response=response, error_map=_ERROR_MAP)
                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
            return parse_page(response.content, _where(request))

        return call_with_retry(fetch, self._bucket)

    def _request(self, filter_text: str, top: int | None, skip: int | None, next_link: str | None) -> HttpRequest:
        """The request `reports.list_by_subscription` would send (its `build_list_by_subscription_request`)."""
        if next_link:  # absolute, with the service's own query (filter, paging, api-version)
            return HttpRequest("GET", next_link, headers={"Accept": "application/json"})
        config = self._service.client._config  # the client's subscription and api-version, as the SDK uses them
        path = _REPORT_PATH.format(
            subscriptionId=quote(config.subscription_id, safe=""),
            resourceGroupName=quote(self._service.resource_group, safe=""),
            serviceName=quote(self._service.service_name, safe=""),
        )  # fmt: skip
        # HttpRequest expects query values already quoted, as the SDK's serializer does.
        params = {"$filter": quote(filter_text, safe="")}
        if top is not None:
            params["$top"] = str(top)
        if skip is not None:
            params["$skip"] = str(skip)
        params["api-version"] = quote(config.api_version, safe="")
        return HttpRequest("GET", path, params=params, headers={"Accept": "application/json"})


def _where(request: HttpRequest) -> str:
    # For error messages: the path says which report and page; the query (the long filter) adds nothing.
    return f"APIM report page (GET {urlsplit(request.url).path})"


def _int_field(row: dict[str, Any], name: str, where: str) -> int:
    value = row.get(name)
    if type(value) is int and value >= 0:  # the usual case first: a row of every page goes through here
        return value
    if value is None:  # absent or null: no calls of that kind (the SDK's model reads None)
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportFormatError(f"{where}: '{name}' must be a whole number of calls, 0 or more, not {value!r}")
    return value


def parse_page(body: bytes, where: str) -> _Page:
    """One ReportCollection page: `value` rows, `count`, `nextLink`; ReportFormatError names what is wrong."""
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
    rows: list[tuple[str, UsageCounts]] = []
    for n, row in enumerate(doc["value"]):
        at = f"{where}: row {n}"
        if not isinstance(row, dict):
            raise ReportFormatError(f"{at} must be an object, not a JSON {type(row).__name__}")
        sid = row.get("subscriptionId")
        if sid is not None and not isinstance(sid, str):
            raise ReportFormatError(f"{at}: 'subscriptionId' must be a string like '/subscriptions/name', not {sid!r}")
        counts = UsageCounts(
            success=_int_field(row, "callCountSuccess", at), blocked=_int_field(row, "callCountBlocked", at),
            failed=_int_field(row, "callCountFailed", at), other=_int_field(row, "callCountOther", at),
        )  # fmt: skip
        rows.append((_sid(sid), counts))
    count = doc.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise ReportFormatError(f"{where}: 'count' must be the report's whole number of rows, not {count!r}")
    next_link = doc.get("nextLink")
    if next_link is not None and not isinstance(next_link, str):
        raise ReportFormatError(f"{where}: 'nextLink' must be a URL string or null, not {next_link!r}")
    return _Page(rows, count, next_link or None)  # the last page may say "" (as the SDK, read as no next page)
