"""Rows written by real gateway calls and by `record_usage`, counted the way the app will count them."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import requests

from tests.emulators.apim.conftest import policy
from tests.emulators.loganalytics.conftest import START, Workspace

# The report classes of ReportRecordContract: success "<= 301 and NotModified and TemporaryRedirect",
# blocked 401/403/429, failed 400 and 500-599, other the rest.
BY_OUTCOME = """
| summarize success = countif(ResponseCode <= 301 or ResponseCode in (304, 307)),
            blocked = countif(ResponseCode in (401, 403, 429)),
            failed = countif(ResponseCode == 400 or (ResponseCode >= 500 and ResponseCode < 600)),
            other = countif(not(ResponseCode <= 301 or ResponseCode in (304, 307, 401, 403, 429, 400)
                                or (ResponseCode >= 500 and ResponseCode < 600)))
  by ApimSubscriptionId"""
DAY = (
    "| where TimeGenerated >= datetime(2026-12-01T00:00:00Z) and TimeGenerated < datetime(2026-12-02T00:00:00Z)"
    ' | where ProductId == "payg"'
)


def _seed(ws: Workspace) -> str:
    """Calls of every kind; the key of the subscription that made gateway calls."""
    apim = ws.apim
    apim.product("payg")  # the echo API at /echo
    apim.product("limited", policy('<rate-limit calls="2" renewal-period="60" />'))
    for uid in ("u1", "u2", "u3", "u4"):
        apim.user(uid)
    apim.subscription("s-gw", "payg", "u1")
    apim.subscription("s-bulk", "payg", "u2")
    apim.subscription("s-limited", "limited", "u3")
    apim.subscription("s-suspended", "payg", "u4", state="suspended")
    key = apim.key("s-gw")
    statuses = [ws.call("/echo/ok", key) for _ in range(3)]
    statuses += [ws.call("/echo/status/500", key) for _ in range(2)]
    statuses += [ws.call("/echo/status/404", key), ws.call("/echo/status/304", key), ws.call("/echo/status/302", key)]
    by_query = requests.get(f"{ws.emu.gateway_url}/echo/q?subscription-key={key}&page=2", timeout=10)
    assert by_query.status_code == 200
    assert statuses == [200, 200, 200, 500, 500, 404, 304, 302]
    assert [ws.call("/echo/x", apim.key("s-limited")) for _ in range(3)] == [200, 200, 429]
    assert [ws.call("/echo/x", apim.key("s-suspended")) for _ in range(2)] == [401, 401]
    assert ws.call("/echo/x", "not-a-key") == 401
    assert ws.call("/echo/x") == 401
    assert ws.call("/nothing/here", key) == 404
    ws.emu.record_usage("s-bulk", 1000, at=START)
    ws.emu.record_usage("s-bulk", 20, at=START, outcome="blocked")
    ws.emu.record_usage("s-bulk", 7, at=START, outcome="failed")
    ws.emu.record_usage("s-bulk", 3, at=START, outcome="other")
    ws.emu.record_usage("s-gw", 50, at=START - timedelta(minutes=1))
    ws.settle()
    return key


EXPECTED = {  # success, blocked, failed, other, from the calls above
    "s-gw": (3 + 1 + 1 + 50, 0, 2, 2),
    "s-bulk": (1000, 20, 7, 3),
    "s-limited": (2, 1, 0, 0),
    "s-suspended": (0, 2, 0, 0),
}


def test_calls_are_counted_per_subscription_and_outcome_class_as_the_reports_api_counts_them(
    workspace: Workspace,
) -> None:
    _seed(workspace)
    rows = workspace.query(f"ApiManagementGatewayLogs | where isnotempty(ApimSubscriptionId) {BY_OUTCOME}")
    counted = {r["ApimSubscriptionId"]: (r["success"], r["blocked"], r["failed"], r["other"]) for r in rows}
    assert counted == EXPECTED
    # The witness agrees with the other witness: the emulator's Reports API over the same calls.
    apim = workspace.apim
    window = "timestamp ge datetime'2026-12-01T00:00:00' and timestamp le datetime'2026-12-02T00:00:00'"
    reported = {
        str(r.subscription_id).rsplit("/", 1)[-1]: (
            r.call_count_success,
            r.call_count_blocked,
            r.call_count_failed,
            r.call_count_other,
        )
        for r in apim.client.reports.list_by_subscription(apim.rg, apim.svc, window)
    }
    assert reported == counted


def test_the_apps_sharded_daily_query_sees_each_subscription_in_exactly_one_shard(workspace: Workspace) -> None:
    _seed(workspace)
    payg = {sid: counts for sid, counts in EXPECTED.items() if sid != "s-limited"}
    seen: dict[str, tuple[int, int, int, int]] = {}
    for shard in "0123456789abcdef":
        kql = (
            f'ApiManagementGatewayLogs {DAY} | where substring(hash_md5(ApimSubscriptionId), 0, 1) == "{shard}" '
            f"| where isnotempty(ApimSubscriptionId) {BY_OUTCOME}"
        )
        for row in workspace.query(kql):
            sid = row["ApimSubscriptionId"]
            assert hashlib.md5(sid.encode()).hexdigest()[0] == shard  # noqa: S324 - KQL's hash_md5, not security
            assert sid not in seen
            seen[sid] = (row["success"], row["blocked"], row["failed"], row["other"])
    assert seen == payg


def test_refused_calls_are_logged_without_a_subscription_and_name_their_error(workspace: Workspace) -> None:
    _seed(workspace)
    rows = workspace.query(
        "ApiManagementGatewayLogs | where isempty(ApimSubscriptionId) | project ResponseCode, "
        "LastErrorReason, LastErrorSource, ApiId, ProductId, UserId"
    )
    assert sorted(tuple(r.values()) for r in rows) == [
        (401, "SubscriptionKeyInvalid", "authorization", "echo", "", ""),
        (401, "SubscriptionKeyNotFound", "authorization", "echo", "", ""),
        (404, "OperationNotFound", "configuration", "", "", ""),
    ]
    limited = workspace.query(
        'ApiManagementGatewayLogs | where ApimSubscriptionId == "s-limited" '
        "| project ResponseCode, BackendResponseCode, LastErrorReason, UserId, ProductId "
        "| sort by ResponseCode asc"
    )
    assert [tuple(r.values()) for r in limited] == [
        (200, 200, "", "u3", "limited"),
        (200, 200, "", "u3", "limited"),
        (429, None, "RateLimitExceeded", "u3", "limited"),
    ]


def test_gateway_rows_describe_the_request_and_never_the_key(workspace: Workspace) -> None:
    key = _seed(workspace)
    rows = workspace.query('ApiManagementGatewayLogs | where ApimSubscriptionId == "s-gw" and Url has "/echo/q"')
    assert len(rows) == 1
    row = rows[0]
    assert key not in str(row)
    assert row["Url"].endswith("/echo/q?page=2")
    assert (row["Method"], row["ApiId"], row["ProductId"], row["UserId"]) == ("GET", "echo", "payg", "u1")
    assert (row["ResponseCode"], row["BackendResponseCode"], row["IsRequestSuccess"]) == (200, 200, True)
    assert row["TimeGenerated"] == START
    assert row["Type"] == "ApiManagementGatewayLogs"
    assert row["TenantId"] == workspace.emu.workspace_id
    assert row["_ResourceId"].endswith(f"/providers/microsoft.apimanagement/service/{workspace.apim.svc}")
    ids = workspace.query("ApiManagementGatewayLogs | summarize rows = count(), ids = dcount(CorrelationId)")
    assert ids[0]["rows"] == ids[0]["ids"] > 1000  # one correlation id per request, bulk rows too
