"""Usage from Log Analytics (the app's adapter over the emulated workspace, real LogsQueryClient):
the same traffic counted alike by both usage sources, results over the row limit read in shards,
rows that arrive late billed exactly once in their period, and the workspace's refusals named.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from azure.identity import DefaultAzureCredential
from azure.monitor.query import LogsQueryClient

from billing.adapters.apim_client import ApimService
from billing.adapters.usage_logs import LogAnalyticsUsage, LogQueryError, log_analytics_usage
from billing.adapters.usage_reports import ApimUsageReports
from billing.model_loader import load_models
from billing.usage.closing import report_closing_usage
from billing.usage.plan import UsageCounts
from billing.usage.push import UsagePush
from billing.usage.ratelimit import TokenBucket
from billing.usage.runner import run_in_process
from billing.usage.windows import ReportWindow
from emulators.loganalytics.limits import Limits
from tests.emulators.loganalytics.conftest import START, Workspace, clock, make_workspace  # noqa: F401 - fixtures
from tests.fakes import FakeLinks
from tests.usage.fakes import FakeMeter, FakeWatermarks, link

MODELS = load_models()
HOUR = 3600


@pytest.fixture
def ws(make_workspace: Callable[..., Workspace]) -> Workspace:  # noqa: F811 - the imported fixture
    """An APIM emulator with its workspace, on a manual clock; the app's settings point at it."""
    return make_workspace()


def _ts(when: datetime) -> int:
    return int(when.timestamp())


def _usage(workspace: Workspace) -> LogAnalyticsUsage:
    return log_analytics_usage(TokenBucket(1000))  # the settings the emulator put in the environment


def _traffic(workspace: Workspace) -> dict[str, UsageCounts]:
    """Real gateway calls of every status class and bulk calls: what both sources must count alike."""
    apim = workspace.apim
    apim.user("u1")
    apim.product("payg")
    apim.product("basic")
    for sid, pid in (("sub_a", "payg"), ("sub_b", "payg"), ("sub_c", "basic")):
        apim.subscription(sid, pid, "u1")
    key = apim.key("sub_a")
    for status in (200, 201, 301, 302, 304, 307, 308, 400, 401, 404, 429, 500, 503, 599):
        assert workspace.call(f"/echo/status/{status}", key) == status
    workspace.emu.record_usage("sub_b", 1_000, at=START + timedelta(minutes=5))
    workspace.emu.record_usage("sub_b", 7, at=START + timedelta(minutes=6), outcome="blocked")
    workspace.emu.record_usage("sub_b", 3, at=START + timedelta(minutes=7), outcome="failed")
    workspace.emu.record_usage("sub_c", 11, at=START + timedelta(minutes=8), outcome="other")
    assert workspace.call("/echo/status/200", "not-a-key") == 401  # counts for nobody
    # By hand: 200, 201, 301, 304 and 307 are successes; 401 and 429 blocked; 400 and 5xx failed; the rest other.
    return {
        "sub_a": UsageCounts(success=5, blocked=2, failed=4, other=3),
        "sub_b": UsageCounts(1_000, 7, 3, 0),
        "sub_c": UsageCounts(0, 0, 0, 11),
    }


def test_both_usage_sources_count_the_same_traffic_alike(ws: Workspace) -> None:
    expected = _traffic(ws)
    ws.clock.advance(minutes=30)  # past the ingestion delay of the last rows (the Reports API: no lag)
    window = ReportWindow(_ts(START) - HOUR, _ts(START) + HOUR)
    apim = ws.apim
    reports = ApimUsageReports(ApimService(apim.client, apim.rg, apim.svc), TokenBucket(1000))
    logs = _usage(ws)
    assert reports.read(window) == expected
    assert logs.read(window) == expected
    assert (
        logs.read(window, product_id="payg")
        == reports.read(window, product_id="payg")
        == {"sub_a": expected["sub_a"], "sub_b": expected["sub_b"]}
    )
    assert logs.read(window, subscription_id="sub_c") == {"sub_c": expected["sub_c"]}
    # The window is [start, end): a call at the end belongs to the next one.
    assert logs.read(ReportWindow(_ts(START) - HOUR, _ts(START + timedelta(minutes=5)))).get("sub_b") is None


def test_a_result_over_the_row_limit_is_read_in_shards_each_subscription_once(
    make_workspace: Callable[..., Workspace],  # noqa: F811 - the imported fixture
) -> None:
    workspace = make_workspace(log_limits=Limits(max_records=7))
    apim = workspace.apim
    apim.user("u1")
    apim.product("payg")
    sids = [f"sub_{n:03d}" for n in range(60)]
    workspace.emu.bulk_create_subscriptions(sids, product_id="payg", owner_id="u1")
    for n, sid in enumerate(sids):
        workspace.emu.record_usage(sid, n + 1, at=START + timedelta(minutes=1))
    workspace.clock.advance(minutes=30)
    logs = _usage(workspace)
    window = ReportWindow(_ts(START), _ts(START) + HOUR)
    counts = logs.read(window, product_id="payg")
    assert counts == {sid: UsageCounts(success=n + 1) for n, sid in enumerate(sids)}
    first = logs.requests
    assert first > 1 + 16  # one query cut at 7 rows, 16 shards (some still over 7 rows), their parts
    assert logs.read(window, product_id="payg") == counts
    assert logs.requests - first < first  # the next read starts at the depth the first one needed


def test_an_empty_workspace_means_no_calls(ws: Workspace) -> None:
    assert _usage(ws).read(ReportWindow(_ts(START) - HOUR, _ts(START))) == {}


def test_a_refused_query_names_what_is_missing(ws: Workspace) -> None:
    wrong_audience = LogsQueryClient(
        DefaultAzureCredential(), endpoint=ws.emu.log_analytics_endpoint, audience="https://management.azure.com"
    )
    logs = LogAnalyticsUsage(wrong_audience, ws.emu.workspace_id, TokenBucket(1000))
    with pytest.raises(LogQueryError, match="Log Analytics Reader"):
        logs.read(ReportWindow(_ts(START) - HOUR, _ts(START)))
    with pytest.raises(LogQueryError, match="LOG_ANALYTICS_WORKSPACE_ID is not set"):
        LogAnalyticsUsage(wrong_audience, "", TokenBucket(1000)).read(ReportWindow(_ts(START) - HOUR, _ts(START)))


def test_rows_that_arrive_late_are_billed_once_in_their_period(ws: Workspace) -> None:
    """The push reads each window `lag` behind now: rows that arrive within the lag are counted by the
    run that reads their window; the closing report re-reads the whole period after the lag."""
    apim, emu = ws.apim, ws.emu
    apim.user("u1")
    apim.product("payg")
    apim.subscription("sub_late", "payg", "u1")
    period_start, period_end = _ts(START), _ts(START) + 2 * 86_400
    lag = 1800
    emu.log_ingestion_delay_seconds = 300  # rows are queryable 5 minutes after the call...
    meter, marks = FakeMeter(), FakeWatermarks()
    links = FakeLinks([link("sub_late", "payg", period_start, period_end)])
    push = UsagePush(MODELS, _usage(ws), meter, marks, links, lag_seconds=lag, counts=meter)

    def at(when: int) -> None:
        ws.clock.current = datetime.fromtimestamp(when, START.tzinfo)

    at(period_start + lag + 60)
    run_in_process(push, period_start + lag + 60)  # the first run adopts
    emu.record_usage("sub_late", 100, at=START + timedelta(hours=2))
    with emu.logs_arrive_late(1_200):  # ... these 20 minutes later still: within the 30-minute lag
        emu.record_usage("sub_late", 40, at=START + timedelta(hours=3))
    at(period_start + 3 * HOUR + lag + 60)
    run_in_process(push, period_start + 3 * HOUR + lag + 60)  # reads up to 3 h 1 min: both are in
    assert meter.total() == 140
    with emu.logs_arrive_late(2_400):  # 45 minutes after the call: beyond the lag
        emu.record_usage("sub_late", 7, at=START + timedelta(hours=4))
    at(period_start + 4 * HOUR + lag + 60)
    run_in_process(push, period_start + 4 * HOUR + lag + 60)  # its window is read before they arrive
    at(period_start + 6 * HOUR)
    run_in_process(push, period_start + 6 * HOUR)  # ... and the next window starts after them
    assert meter.total() == 140
    # Calls in the last seconds of the period, arriving after the period ended: the closing report,
    # after the lag, reads the whole period again and bills what the pushes could not.
    emu.record_usage("sub_late", 9, at=datetime.fromtimestamp(period_end - 5, START.tzinfo))
    at(period_end + lag)
    report_closing_usage("sub_late", period_start, period_end, push)
    report_closing_usage("sub_late", period_start, period_end, push)  # a redelivered request: nothing more
    assert meter.total() == 156  # payg bills every call: each once
    assert all(period_start <= e.timestamp < period_end for e in meter.kept)
