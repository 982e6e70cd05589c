"""APIM usage reports for the usage push: one paged read for all subscriptions of a window.

`reports.list_by_subscription` with a `timestamp` filter returns one row per subscription with
calls in the window. Each page goes through the shared ARM budget; azure-core's own retries are
switched off per call (`retry_total=0`) so that 429s pause the whole process, not one thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from billing.adapters.apim_client import ApimService
from billing.usage.plan import UsageCounts
from billing.usage.ratelimit import TokenBucket
from billing.usage.retry import Throttled, Transient, call_with_retry, parse_retry_after
from billing.usage.windows import ReportWindow


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


class ApimUsageReports:
    def __init__(self, service: ApimService, bucket: TokenBucket, *, page_size: int | None = None) -> None:
        self._service = service
        self._bucket = bucket
        self._page_size = page_size
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

    def _pages(self, filter_text: str) -> Iterator[list[Any]]:
        ops = self._service.client.reports
        token: str | None = None
        while True:

            def fetch(token: str | None = token) -> tuple[list[Any], str | None]:
                self.requests += 1
                try:
                    items: Any = ops.list_by_subscription(
                        self._service.resource_group, self._service.service_name, filter=filter_text,
                        top=self._page_size, retry_total=0,
                    )  # fmt: skip
                    pager = items.by_page(continuation_token=token)  # an ItemPaged, typed as Iterable
                    page = list(next(pager))
                    return page, pager.continuation_token
                except StopIteration:
                    return [], None
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

            page, token = call_with_retry(fetch, self._bucket)
            yield page
            if not token:
                return
