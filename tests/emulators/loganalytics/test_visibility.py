"""When a row can be queried: the ingestion delay, rows that arrive late, the timespan, an empty workspace."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from tests.emulators.loganalytics.conftest import DOCUMENTED_LATENCY, START, Workspace

SECOND = timedelta(seconds=1)


def _subscribed(ws: Workspace, *sids: str) -> None:
    ws.apim.product("payg")
    ws.apim.user("u1")
    for sid in sids:
        ws.apim.subscription(sid, "payg", "u1")
    # Something older than any test row, so the workspace has data and answers 200, not 204.
    ws.emu.record_usage(sids[0], 1, at=START - timedelta(days=1))


def _count(ws: Workspace, sid: str, **kwargs: object) -> int:
    kql = f'ApiManagementGatewayLogs | where ApimSubscriptionId == "{sid}" and TimeGenerated >= datetime(2026-12-01)'
    return int(ws.query(f"{kql} | count", **kwargs)[0]["Count"])


def test_a_row_is_queryable_only_once_the_documented_latency_has_passed(workspace: Workspace) -> None:
    _subscribed(workspace, "s1")
    assert workspace.call("/echo/x", workspace.apim.key("s1")) == 200
    workspace.emu.record_usage("s1", 4, at=START)
    assert _count(workspace, "s1") == 0  # the rows exist, but were not ingested yet
    workspace.clock.advance(seconds=(DOCUMENTED_LATENCY - SECOND).total_seconds())
    assert _count(workspace, "s1") == 0
    workspace.clock.advance(seconds=1)
    assert _count(workspace, "s1") == 5


def test_rows_that_arrive_late_stay_invisible_past_the_usual_delay(workspace: Workspace) -> None:
    _subscribed(workspace, "s1", "s2")
    with workspace.emu.logs_arrive_late(3600, subscription_id="s1"):
        assert workspace.call("/echo/x", workspace.apim.key("s1")) == 200
        workspace.emu.record_usage("s1", 10, at=START)
        workspace.emu.record_usage("s2", 3, at=START)  # another subscription's rows: on time
    workspace.emu.record_usage("s1", 2, at=START)  # after the block: on time
    workspace.settle()
    assert (_count(workspace, "s1"), _count(workspace, "s2")) == (2, 3)
    workspace.clock.advance(minutes=59, seconds=59)
    assert _count(workspace, "s1") == 2
    workspace.clock.advance(seconds=1)
    assert _count(workspace, "s1") == 13


def test_the_delay_can_be_set_and_zero_makes_rows_queryable_at_once(
    make_workspace: Callable[..., Workspace],
) -> None:
    ws = make_workspace(log_ingestion_delay_seconds=0)
    _subscribed(ws, "s1")
    ws.emu.record_usage("s1", 3, at=START)
    assert _count(ws, "s1") == 3
    ws.emu.log_ingestion_delay_seconds = 120
    assert _count(ws, "s1") == 0
    ws.clock.advance(minutes=2)
    assert _count(ws, "s1") == 3


def test_the_timespan_is_applied_on_top_of_the_querys_own_time_filter(workspace: Workspace) -> None:
    _subscribed(workspace, "s1")
    for hours_before, calls in ((3, 5), (1, 7), (0, 11)):
        workspace.emu.record_usage("s1", calls, at=START - timedelta(hours=hours_before))
    workspace.settle()  # now: START + 10 minutes
    assert _count(workspace, "s1") == 23
    assert _count(workspace, "s1", timespan=(START - timedelta(hours=2), START + timedelta(hours=1))) == 18
    assert _count(workspace, "s1", timespan=(START - timedelta(hours=2), timedelta(minutes=90))) == 7
    assert _count(workspace, "s1", timespan=timedelta(minutes=30)) == 11  # the last 30 minutes up to now
    # "The query is evaluated for the intersection of the time interval in the query string and the timespan."
    kql = (
        'ApiManagementGatewayLogs | where ApimSubscriptionId == "s1" and TimeGenerated < datetime(2026-12-01T08:30:00Z)'
    )
    both = workspace.query(f"{kql} | count", timespan=(START - timedelta(hours=2), START))
    assert both[0]["Count"] == 7
    # Both bounds inclusive (a guess, see README): rows exactly at the start and at the end are in.
    assert _count(workspace, "s1", timespan=(START - timedelta(hours=1), START)) == 18


def test_a_workspace_without_data_answers_204_until_its_first_row_is_ingested(workspace: Workspace) -> None:
    workspace.apim.product("payg")
    workspace.apim.user("u1")
    workspace.apim.subscription("s1", "payg", "u1")
    empty = workspace.raw(Authorization=f"Bearer {workspace.emu.emu.tokens.issue(workspace.emu.log_analytics.url)[0]}")
    assert (empty.status_code, empty.content) == (204, b"")
    assert workspace.call("/echo/x", workspace.apim.key("s1")) == 200
    token = workspace.emu.emu.tokens.issue("https://api.loganalytics.io")[0]
    assert workspace.raw(Authorization=f"Bearer {token}").status_code == 204  # logged, not yet ingested
    workspace.settle()
    answer = workspace.raw(Authorization=f"Bearer {token}")
    assert answer.status_code == 200
    assert answer.json()["tables"][0]["rows"] == [[1]]
