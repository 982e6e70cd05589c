"""Usage from Azure Monitor Logs: `ApiManagementGatewayLogs` counted per subscription in the workspace.

The usage source for every tier (the Reports API retires on 15 March 2027 and the v2 tiers never
had it). `read` sends `billing.usage.log_query.usage_query` through `LogsQueryClient` with the app's
credential; the workspace aggregates, so an answer has one row per subscription with calls.

Log Analytics returns at most 500,000 rows (64 MB) a query, and a larger result comes back as a
partial one: the window is then read again in shards of the subscriptions (prefixes of the MD5 of
their ids), each shard split further if it is still too large. The shards that were needed are kept
per product, so later reads start from them (and split again only where a shard outgrew the limit).
Queries take tokens from their own budget (about 200 requests per 30 seconds per identity), with
azure-core's retries off per call so that 429s pause the whole process; 5xx and network errors
back off (`billing.usage.retry`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineResponse
from azure.identity import DefaultAzureCredential
from azure.monitor.query import LogsQueryClient, LogsQueryStatus

from billing import config
from billing.usage.log_query import shards, usage_query
from billing.usage.plan import UsageCounts
from billing.usage.ratelimit import TokenBucket
from billing.usage.retry import Throttled, Transient, call_with_retry, parse_retry_after
from billing.usage.windows import ReportWindow

log = logging.getLogger("billing.usage")

SERVER_TIMEOUT_SECONDS = 180  # the service's default; at most 600
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = SERVER_TIMEOUT_SECONDS + 30  # the server gives up first, with an answer
MAX_DEPTH = 3  # 4,096 shards: far beyond 1,000,000 subscriptions a product at 500,000 rows a query
PARALLEL_QUERIES = 4  # Log Analytics runs up to 5 queries of one identity at once, then queues them


class LogQueryError(RuntimeError):
    """The workspace refused the query or answered in a form the app does not know."""


class LogAnalyticsUsage:
    """The usage push's `UsageReports` port over a Log Analytics workspace."""

    def __init__(self, client: LogsQueryClient, workspace_id: str, bucket: TokenBucket) -> None:
        self._client = client
        self._workspace_id = workspace_id
        self._bucket = bucket
        self._lock = threading.Lock()
        self._shards: dict[str | None, list[str]] = {}  # product -> the shards its last read needed
        self.requests = 0

    def shards_by_product(self) -> dict[str | None, list[str]]:
        """The shards each product's last read needed ([""]: one query of the whole product), for summaries."""
        with self._lock:
            return {key: list(found) for key, found in self._shards.items()}

    def read(
        self, window: ReportWindow, subscription_id: str | None = None, product_id: str | None = None
    ) -> dict[str, UsageCounts]:
        """Counts per subscription id for calls in the window (subscriptions without calls are absent)."""
        if not self._workspace_id:
            raise LogQueryError("LOG_ANALYTICS_WORKSPACE_ID is not set: usage cannot be read from the logs")
        key = None if subscription_id is not None else product_id
        with self._lock:
            pending = [""] if subscription_id is not None else list(self._shards.get(key, [""]))
        counts: dict[str, UsageCounts] = {}
        leaves: list[str] = []
        with ThreadPoolExecutor(max_workers=PARALLEL_QUERIES) as pool:
            while pending:
                answers = list(
                    pool.map(lambda shard: (shard, self._query(window, subscription_id, product_id, shard)), pending)
                )
                pending = []
                for shard, rows in answers:
                    if rows is None:  # too large: read this shard's 16 parts instead
                        if len(shard) >= MAX_DEPTH:
                            raise LogQueryError(f"a shard of {len(shard)} hex digits is still over the row limit")
                        pending += [shard + h for h in shards(1)]
                        continue
                    leaves.append(shard)
                    counts.update(rows)
        if subscription_id is None:
            with self._lock:
                self._shards[key] = sorted(leaves)  # the next read of this product starts from these
        return counts

    def _query(
        self, window: ReportWindow, subscription_id: str | None, product_id: str | None, shard: str
    ) -> dict[str, UsageCounts] | None:
        """One query's rows, or None if the answer was cut at the row or size limit."""
        query = usage_query(window, subscription_id, product_id, shard)
        timespan = (datetime.fromtimestamp(window.start, UTC), datetime.fromtimestamp(window.end, UTC))
        status: dict[str, int] = {}

        def hook(response: PipelineResponse[Any, Any]) -> None:
            status["code"] = response.http_response.status_code

        def once() -> Any:
            with self._lock:
                self.requests += 1
            try:
                return self._client.query_workspace(
                    self._workspace_id,
                    query,
                    timespan=timespan,
                    server_timeout=SERVER_TIMEOUT_SECONDS,
                    retry_total=0,
                    raw_response_hook=hook,
                )
            except ValueError:
                # "204 No Content: a workspace has no data in it" (the Query API's documented answer),
                # which azure-monitor-query 2.0.0 tries to read as JSON.
                if status.get("code") == 204:
                    return None
                raise
            except HttpResponseError as exc:
                raise _translate(exc) from None
            except (ServiceRequestError, ServiceResponseError) as exc:
                raise Transient(f"Log Analytics did not answer: {type(exc).__name__}") from None

        result = call_with_retry(once, self._bucket)
        if result is None:
            return {}
        if result.status == LogsQueryStatus.PARTIAL:
            error = result.partial_error
            log.info("usage logs: a result over the limit (%s); reading it in shards", getattr(error, "code", "?"))
            return None
        return _rows(result.tables)


def _translate(exc: HttpResponseError) -> Exception:
    status = exc.status_code or 0
    if status == 429:
        headers: Mapping[str, str] = getattr(exc.response, "headers", None) or {}
        return Throttled("Log Analytics rate limit", parse_retry_after(headers.get("Retry-After")))
    if status >= 500:
        return Transient(f"Log Analytics answered {status}")
    if status == 403:
        return LogQueryError(
            "Log Analytics refused the query (403): the app's identity needs Log Analytics Reader "
            "on the workspace (infra/modules/app-roles.bicep)"
        )
    return LogQueryError(f"Log Analytics refused the query ({status}): {exc.message}")


def _rows(tables: Any) -> dict[str, UsageCounts]:
    if not tables:
        return {}
    table = tables[0]
    names = list(table.columns)
    try:
        at = {name: names.index(name) for name in ("ApimSubscriptionId", "success", "blocked", "failed", "total")}
    except ValueError:
        raise LogQueryError(f"the answer's columns are {names}, not the query's") from None
    counts: dict[str, UsageCounts] = {}
    for row in table.rows:
        sid = str(row[at["ApimSubscriptionId"]])
        success, blocked, failed, total = (int(row[at[c]]) for c in ("success", "blocked", "failed", "total"))
        counts[sid] = UsageCounts(success, blocked, failed, total - success - blocked - failed)
    return counts


def log_analytics_usage(bucket: TokenBucket, env: Mapping[str, str] | None = None) -> LogAnalyticsUsage:
    """The adapter built from settings, with the app's credential (its managed identity in Azure)."""
    client_id = config.get("AZURE_CLIENT_ID", env) or None
    client = LogsQueryClient(
        DefaultAzureCredential(managed_identity_client_id=client_id),
        endpoint=config.get("LOG_ANALYTICS_ENDPOINT", env),
        connection_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )
    return LogAnalyticsUsage(client, config.get("LOG_ANALYTICS_WORKSPACE_ID", env), bucket)
