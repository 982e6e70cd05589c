"""The Query API's answers: columns and types, result limits, throttling, authentication, bad queries, batches."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import DefaultAzureCredential
from azure.monitor.query import LogsBatchQuery, LogsQueryClient, LogsQueryError, LogsQueryPartialResult, LogsQueryResult

from emulators.loganalytics.limits import Limits
from tests.emulators.loganalytics.conftest import START, Workspace

# The table reference (azure-reference-other, apimanagementgatewaylogs.md) and the columns the current
# learn.microsoft.com page adds (_BilledSize, _IsBillable, IsMasterTrace, IsTrace*).
DOCUMENTED = {
    "ApiId": "string",
    "ApimSubscriptionId": "string",
    "ApiRevision": "string",
    "BackendId": "string",
    "BackendMethod": "string",
    "BackendProtocol": "string",
    "BackendRequestBody": "string",
    "BackendRequestHeaders": "dynamic",
    "BackendResponseBody": "string",
    "BackendResponseCode": "int",
    "BackendResponseHeaders": "dynamic",
    "BackendTime": "long",
    "BackendUrl": "string",
    "Cache": "string",
    "CacheTime": "long",
    "CallerIpAddress": "string",
    "Category": "string",
    "ClientProtocol": "string",
    "ClientTime": "long",
    "ClientTlsVersion": "string",
    "CorrelationId": "string",
    "Errors": "dynamic",
    "IsRequestSuccess": "bool",
    "LastErrorElapsed": "long",
    "LastErrorMessage": "string",
    "LastErrorReason": "string",
    "LastErrorScope": "string",
    "LastErrorSection": "string",
    "LastErrorSource": "string",
    "Method": "string",
    "OperationId": "string",
    "OperationName": "string",
    "ProductId": "string",
    "Region": "string",
    "RequestBody": "string",
    "RequestHeaders": "dynamic",
    "RequestSize": "int",
    "_ResourceId": "string",
    "ResponseBody": "string",
    "ResponseCode": "int",
    "ResponseHeaders": "dynamic",
    "ResponseSize": "int",
    "SourceSystem": "string",
    "_SubscriptionId": "string",
    "TenantId": "string",
    "TimeGenerated": "datetime",
    "TotalTime": "long",
    "TraceRecords": "dynamic",
    "Type": "string",
    "Url": "string",
    "UserId": "string",
    "_BilledSize": "real",
    "_IsBillable": "string",
    "IsMasterTrace": "bool",
    "IsTraceAllowed": "bool",
    "IsTraceExpired": "bool",
    "IsTraceRequested": "bool",
}


def _inner(error: HttpResponseError) -> Any:
    """The innererror of an error answer, as sent."""
    assert error.response is not None
    return json.loads(error.response.text())["error"]["innererror"]


def _with_rows(ws: Workspace, calls: int = 7) -> None:
    ws.apim.product("payg")
    ws.apim.user("u1")
    ws.apim.subscription("s1", "payg", "u1")
    ws.emu.record_usage("s1", calls, at=START)
    ws.settle()


def test_the_table_has_the_documented_columns_and_types(workspace: Workspace) -> None:
    _with_rows(workspace, 1)
    result = workspace.logs.query_workspace(
        workspace.emu.workspace_id, "ApiManagementGatewayLogs | take 1", timespan=None
    )
    assert isinstance(result, LogsQueryResult)
    table = result.tables[0]
    assert table.name == "PrimaryResult"
    assert dict(zip(table.columns, table.columns_types, strict=True)) == DOCUMENTED
    summary = workspace.logs.query_workspace(
        workspace.emu.workspace_id,
        "ApiManagementGatewayLogs | summarize n = count(), t = max(TimeGenerated), "
        "ok = countif(IsRequestSuccess), avg = avg(TotalTime) by ApiId",
        timespan=None,
    )
    assert isinstance(summary, LogsQueryResult)
    assert summary.tables[0].columns_types == ["string", "long", "datetime", "long", "real"]
    assert list(summary.tables[0].rows[0]) == ["echo", 1, START, 1, 0.0]


def test_more_rows_than_the_record_limit_give_a_partial_result(make_workspace: Callable[..., Workspace]) -> None:
    ws = make_workspace(log_limits=Limits(max_records=5))
    _with_rows(ws, 7)
    result = ws.logs.query_workspace(
        ws.emu.workspace_id, "ApiManagementGatewayLogs | project CorrelationId", timespan=None
    )
    assert isinstance(result, LogsQueryPartialResult)
    assert len(result.partial_data[0].rows) == 5
    assert result.partial_error is not None
    assert result.partial_error.code == "PartialError"
    assert result.partial_error.details is not None
    detail = result.partial_error.details[0]["innererror"]["message"]
    assert "record count limit 5" in detail
    assert "E_QUERY_RESULT_SET_TOO_LARGE" in detail
    assert ws.query("ApiManagementGatewayLogs | count") == [{"Count": 7}]  # an aggregate is one row


def test_more_data_than_the_size_limit_gives_a_partial_result(make_workspace: Callable[..., Workspace]) -> None:
    ws = make_workspace(log_limits=Limits(max_bytes=200))
    _with_rows(ws, 10)
    result = ws.logs.query_workspace(
        ws.emu.workspace_id, "ApiManagementGatewayLogs | project Url, CorrelationId", timespan=None
    )
    assert isinstance(result, LogsQueryPartialResult)
    assert 0 < len(result.partial_data[0].rows) < 10
    assert result.partial_error is not None
    assert result.partial_error.details is not None
    assert "data size limit 200" in result.partial_error.details[0]["innererror"]["message"]


def test_too_many_queries_are_throttled_until_the_window_moves(make_workspace: Callable[..., Workspace]) -> None:
    ws = make_workspace(log_limits=Limits(requests_per_window=3, window_seconds=30))
    _with_rows(ws)
    for _ in range(3):
        assert ws.query("ApiManagementGatewayLogs | count") == [{"Count": 7}]
    headers: list[str] = []

    def keep_retry_after(response: Any) -> None:
        headers.append(response.http_response.headers["Retry-After"])

    with pytest.raises(HttpResponseError) as refused:
        ws.logs.query_workspace(
            ws.emu.workspace_id, "ApiManagementGatewayLogs | count", timespan=None, raw_response_hook=keep_retry_after
        )
    assert refused.value.status_code == 429
    wait = int(headers[0])
    assert 0 < wait <= 30
    ws.clock.advance(seconds=wait - 1)
    with pytest.raises(HttpResponseError):
        ws.query("ApiManagementGatewayLogs | count")
    ws.clock.advance(seconds=1)
    assert ws.query("ApiManagementGatewayLogs | count") == [{"Count": 7}]


def test_requests_without_a_valid_token_for_the_api_are_refused(workspace: Workspace) -> None:
    _with_rows(workspace)
    missing = workspace.raw()
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "AuthenticationFailed"
    forged = workspace.raw(Authorization="Bearer emu.not-issued-here")
    assert (forged.status_code, forged.json()["error"]["code"]) == (403, "InvalidAuthenticationToken")
    arm_token = workspace.emu.emu.tokens.issue("https://management.azure.com")[0]
    wrong = workspace.raw(Authorization=f"Bearer {arm_token}")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "InvalidAuthenticationTokenAudience")
    # The documented resource is accepted, so the app may pass audience="https://api.loganalytics.io".
    credential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    client = LogsQueryClient(
        credential, endpoint=workspace.emu.log_analytics_endpoint, audience="https://api.loganalytics.io"
    )
    with client:
        result = client.query_workspace(workspace.emu.workspace_id, "ApiManagementGatewayLogs | count", timespan=None)
    assert isinstance(result, LogsQueryResult)
    assert list(result.tables[0].rows[0]) == [7]


@pytest.mark.parametrize(
    ("kql", "code", "named"),
    [
        ("ApiManagementGatewayLogs | extend h = hash(ApimSubscriptionId)", "SEM0260", "'hash'"),
        ("ApiManagementGatewayLogs | extend at = ingestion_time()", "SEM0260", "'ingestion_time'"),
        ("ApiManagementGatewayLogs | where NoSuchColumn == 1", "SEM0100", "'NoSuchColumn'"),
        ("NoSuchTable | take 1", "SEM0100", "NoSuchTable"),
    ],
)
def test_a_query_that_cannot_run_gets_the_bad_query_answer_naming_why(
    workspace: Workspace, kql: str, code: str, named: str
) -> None:
    _with_rows(workspace)
    with pytest.raises(HttpResponseError) as refused:
        workspace.query(kql)
    assert refused.value.status_code == 400
    assert refused.value.error is not None
    assert refused.value.error.code == "BadArgumentError"
    body = _inner(refused.value)
    assert (body["code"], body["innererror"]["code"]) == ("SemanticError", code)
    assert named in body["innererror"]["message"]
    if code == "SEM0260":  # the real service runs these; the message says the emulator cannot
        assert "emulator cannot run" in body["innererror"]["message"]


def test_a_syntax_error_and_a_bad_timespan_are_bad_requests(workspace: Workspace) -> None:
    _with_rows(workspace)
    with pytest.raises(HttpResponseError) as syntax:
        workspace.query("ApiManagementGatewayLogs | where")
    assert _inner(syntax.value)["code"] == "SyntaxError"
    token = workspace.emu.emu.tokens.issue("https://api.loganalytics.io")[0]
    bad_span = workspace.raw(
        {"query": "ApiManagementGatewayLogs | count", "timespan": "yesterday"}, Authorization=f"Bearer {token}"
    )
    assert bad_span.status_code == 400
    assert "yesterday" in bad_span.json()["error"]["innererror"]["message"]
    other = requests.post(
        f"{workspace.emu.log_analytics_endpoint}/workspaces/not-this-one/query",
        json={"query": "ApiManagementGatewayLogs | count"},
        headers={"Authorization": f"Bearer {token}"},
        verify=workspace.emu.ca_bundle,
        timeout=30,
    )
    assert (other.status_code, other.json()["error"]["code"]) == (400, "FailedToResolveResource")


def test_a_batch_answers_each_query_on_its_own(workspace: Workspace) -> None:
    _with_rows(workspace)
    ws_id = workspace.emu.workspace_id
    answers = workspace.logs.query_batch(
        [
            LogsBatchQuery(ws_id, "ApiManagementGatewayLogs | count", timespan=timedelta(hours=1)),
            LogsBatchQuery(ws_id, "ApiManagementGatewayLogs | extend h = hash(ApiId)", timespan=None),
            LogsBatchQuery(
                ws_id,
                "ApiManagementGatewayLogs | count",
                timespan=(START + timedelta(hours=1), START + timedelta(hours=2)),
            ),
        ]
    )
    assert isinstance(answers[0], LogsQueryResult)
    assert list(answers[0].tables[0].rows[0]) == [7]
    assert isinstance(answers[1], LogsQueryError)
    assert answers[1].code == "BadArgumentError"
    assert isinstance(answers[2], LogsQueryResult)
    assert list(answers[2].tables[0].rows[0]) == [0]


def test_a_query_running_past_its_server_timeout_is_stopped_with_504(workspace: Workspace) -> None:
    _with_rows(workspace, 50_000_000)  # hashing every row's correlation id takes DuckDB tens of seconds here
    with pytest.raises(HttpResponseError) as stopped:
        workspace.query("ApiManagementGatewayLogs | summarize n = sum(strlen(CorrelationId))", server_timeout=1)
    assert stopped.value.status_code == 504
    assert workspace.query("ApiManagementGatewayLogs | count") == [{"Count": 50_000_000}]  # the workspace goes on


def test_now_is_the_emulators_clock_and_a_post_without_json_gets_an_empty_200(workspace: Workspace) -> None:
    _with_rows(workspace)  # rows at START; the clock is now START + 10 minutes
    assert workspace.query("ApiManagementGatewayLogs | where TimeGenerated > ago(11m) | count") == [{"Count": 7}]
    assert workspace.query("ApiManagementGatewayLogs | where TimeGenerated > ago(9m) | count") == [{"Count": 0}]
    token = workspace.emu.emu.tokens.issue("https://api.loganalytics.io")[0]
    url = f"{workspace.emu.log_analytics_endpoint}/workspaces/{workspace.emu.workspace_id}/query"
    # "If you send a POST request that's missing either the JSON body or the Content-Type: application/json
    # header, the API returns an empty 200 response."
    bare = requests.post(
        url,
        data="ApiManagementGatewayLogs | count",
        timeout=30,
        verify=workspace.emu.ca_bundle,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    )
    assert (bare.status_code, bare.content) == (200, b"")


def test_functions_the_app_may_use_run_on_the_table(workspace: Workspace) -> None:
    _with_rows(workspace, 3)
    rows = workspace.query(
        'ApiManagementGatewayLogs | where Url startswith "http://127.0.0.1" and isnotempty(ApiId) '
        "| summarize n = count() by hour = bin(TimeGenerated, 1h), code = tostring(ResponseCode), "
        "digest = hash_md5(ApimSubscriptionId)"
    )
    assert {r["hour"] for r in rows} == {START}
    assert sum(r["n"] for r in rows) == 3
    assert all(int(r["code"]) <= 301 or r["code"] in ("304", "307") for r in rows)  # successes, as recorded
    assert {r["digest"] for r in rows} == {hashlib.md5(b"s1").hexdigest()}  # noqa: S324 - KQL's hash_md5
