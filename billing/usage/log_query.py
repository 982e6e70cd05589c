"""The KQL that counts calls per subscription in `ApiManagementGatewayLogs`. Pure: no SDK.

Calls are classed as APIM's Reports API classes them (ReportRecordContract): success is a status
<= 301, 304 or 307; blocked 401, 403 or 429; failed 400 or 500-599; other the rest. So both usage
sources bill the same calls. The workspace aggregates: one row per subscription comes back, never
one per call. Rows the gateway refused before it knew a subscription (no key, an unknown key, no
matching API) have no `ApimSubscriptionId` and count for nobody.

A shard is a prefix of the hex MD5 of the subscription id: the 16**depth prefixes of one depth split
the subscriptions into disjoint parts of about equal size, so a result over Log Analytics' row
limit (500,000 rows a query) is read as several smaller ones.
"""

from __future__ import annotations

from datetime import UTC, datetime

from billing.usage.windows import ReportWindow

TABLE = "ApiManagementGatewayLogs"
HEX = "0123456789abcdef"


def kql_string(value: str) -> str:
    """A KQL string literal: double quotes, backslash escapes; control characters are refused."""
    if any(ord(ch) < 32 for ch in value):
        raise ValueError(f"a KQL string cannot hold control characters: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _datetime(ts: int) -> str:
    return "datetime(" + datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + ")"


def shards(depth: int) -> list[str]:
    """The prefixes of one depth: [''] at 0, 16 at 1, 256 at 2."""
    prefixes = [""]
    for _ in range(depth):
        prefixes = [p + h for p in prefixes for h in HEX]
    return prefixes


def usage_query(
    window: ReportWindow, subscription_id: str | None = None, product_id: str | None = None, shard: str = ""
) -> str:
    """Calls per subscription with TimeGenerated in [window.start, window.end)."""
    if any(ch not in HEX for ch in shard):
        raise ValueError(f"a shard is a lower-case hex prefix, got {shard!r}")
    lines = [
        TABLE,
        f"| where TimeGenerated >= {_datetime(window.start)} and TimeGenerated < {_datetime(window.end)}",
        "| where isnotempty(ApimSubscriptionId)",
    ]
    if product_id is not None:
        lines.append(f"| where ProductId == {kql_string(product_id)}")
    if subscription_id is not None:
        lines.append(f"| where ApimSubscriptionId == {kql_string(subscription_id)}")
    if shard:
        lines.append(f"| where substring(hash_md5(ApimSubscriptionId), 0, {len(shard)}) == {kql_string(shard)}")
    lines += [
        "| summarize success = countif(ResponseCode <= 301 or ResponseCode in (304, 307)),",
        "    blocked = countif(ResponseCode in (401, 403, 429)),",
        "    failed = countif(ResponseCode == 400 or (ResponseCode >= 500 and ResponseCode < 600)),",
        "    total = count() by ApimSubscriptionId",
    ]
    return "\n".join(lines)
