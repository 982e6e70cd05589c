"""The retention purge on Azurite, over rows written by the app's own stores: what is past its use
goes, what is still in use stays, a run stops at its limit and the next goes on, and a row used again
between the read and the delete is kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.data.tables import TableClient, TableEntity, TableServiceClient

from billing.cli import main as billing_main
from billing.portal.records import CONFIRM, EmailLink
from billing.portal.throttle import Limit
from billing.store.accounts import UsedSalts
from billing.store.email_links import EmailLinks
from billing.store.processed_events import ProcessedEvents
from billing.store.retention import RULES, Rule, purge
from billing.store.tables import DELEGATION_SALTS_TABLE, EMAIL_TOKENS_TABLE, PROCESSED_EVENTS_TABLE, THROTTLES_TABLE
from billing.store.throttles import Throttles

pytestmark = pytest.mark.storage

DAY = 86_400
NOW = 1_780_000_000


@pytest.fixture
def new_table(storage_connection_string: str) -> Iterator[Callable[[], TableClient]]:
    service = TableServiceClient.from_connection_string(storage_connection_string)
    made: list[str] = []

    def make() -> TableClient:
        client = service.create_table_if_not_exists(f"retention{uuid.uuid4().hex[:12]}")
        made.append(client.table_name)
        return client

    yield make
    for name in made:
        service.delete_table(name)


def _rule(table: str) -> Rule:
    return next(r for r in RULES if r.table == table)


def _keys(table: TableClient) -> set[str]:
    return {e["PartitionKey"] for e in table.list_entities(select=["PartitionKey"])}


def test_applied_stripe_events_go_after_stripes_retry_horizon_and_unfinished_ones_stay(
    new_table: Callable[[], TableClient],
) -> None:
    table = new_table()
    for event_id, done_days_ago in (("evt_old", 5), ("evt_recent", 2)):

        def clock(days: int = done_days_ago) -> float:
            return NOW - days * DAY

        events = ProcessedEvents(table, clock=clock)
        events.mark_done(events.claim(event_id, "invoice.paid"), "applied")
    ProcessedEvents(table, clock=lambda: NOW - 9 * DAY).claim("evt_stuck", "invoice.paid")  # never finished
    result = purge(table, _rule(PROCESSED_EVENTS_TABLE), NOW)
    assert (result.deleted, result.more) == (1, False)
    # Stripe retries for 3 days: a 2-day-old event may still come back and must be known as done.
    assert _keys(table) == {"evt_recent", "evt_stuck"}


def test_salts_links_and_throttle_windows_go_once_past_their_use(new_table: Callable[[], TableClient]) -> None:
    salts_table, links_table, throttles_table = new_table(), new_table(), new_table()
    salts = UsedSalts(salts_table)
    assert salts.claim("expired-salt", "u1", NOW - 10 * DAY, retention_seconds=5 * DAY)
    assert salts.claim("live-salt", "u1", NOW - 10 * DAY, retention_seconds=20 * DAY)
    links = EmailLinks(links_table)
    links.create("token-old", EmailLink(CONFIRM, "a@example.com", NOW - 9 * DAY, NOW - 8 * DAY))
    links.create("token-week", EmailLink(CONFIRM, "b@example.com", NOW - 3 * DAY, NOW - 2 * DAY))
    throttles = Throttles(throttles_table)
    throttles.take("old-window", Limit(5, 3600), NOW - 3 * DAY)
    throttles.take("open-window", Limit(5, 3600), NOW - 600)

    assert purge(salts_table, _rule(DELEGATION_SALTS_TABLE), NOW).deleted == 1
    assert not salts.claim("live-salt", "u1", NOW, retention_seconds=DAY)  # still refused as a replay
    assert purge(links_table, _rule(EMAIL_TOKENS_TABLE), NOW).deleted == 1
    assert links.get("token-week") is not None  # expired recently: still answers "expired", not "unknown"
    assert links.get("token-old") is None
    assert purge(throttles_table, _rule(THROTTLES_TABLE), NOW).deleted == 1
    assert throttles.take("open-window", Limit(1, 3600), NOW) > 0  # the open window still counts


def test_a_run_stops_at_its_limit_and_the_next_goes_on(new_table: Callable[[], TableClient]) -> None:
    table = new_table()
    salts = UsedSalts(table)
    for n in range(7):
        salts.claim(f"salt-{n}", "u1", NOW - 10 * DAY, retention_seconds=DAY)
    rule = _rule(DELEGATION_SALTS_TABLE)
    assert purge(table, rule, NOW, limit=3, dry_run=True).deleted == 3
    assert len(_keys(table)) == 7  # a dry run deletes nothing
    first = purge(table, rule, NOW, limit=5)
    assert (first.deleted, first.more) == (5, True)
    second = purge(table, rule, NOW, limit=5)
    assert (second.deleted, second.more) == (2, False)
    assert _keys(table) == set()


def test_a_row_used_again_after_it_was_read_is_kept(new_table: Callable[[], TableClient]) -> None:
    table = new_table()
    throttles = Throttles(table)
    throttles.take("reused", Limit(5, 3600), NOW - 3 * DAY)

    class Reusing:
        """The table as the purge sees it: a request opens the window again just after the read."""

        def __init__(self, inner: TableClient) -> None:
            self.inner = inner

        def query_entities(self, *args: Any, **kwargs: Any) -> list[TableEntity]:
            rows = list(self.inner.query_entities(*args, **kwargs))
            throttles.take("reused", Limit(5, 3600), NOW)
            return rows

        def delete_entity(self, *args: Any, **kwargs: Any) -> None:
            self.inner.delete_entity(*args, **kwargs)

    # purge takes a TableClient; the wrapper has the two methods it calls.
    result = purge(Reusing(table), _rule(THROTTLES_TABLE), NOW)  # type: ignore[arg-type]
    assert result.deleted == 0
    assert _keys(table) == {"reused"}


def test_the_cli_counts_then_purges_the_apps_tables(
    storage_connection_string: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    service = TableServiceClient.from_connection_string(storage_connection_string)
    table = service.create_table_if_not_exists(DELEGATION_SALTS_TABLE)
    for name in (PROCESSED_EVENTS_TABLE, THROTTLES_TABLE, EMAIL_TOKENS_TABLE):
        service.create_table_if_not_exists(name)
    marker = f"cli-{uuid.uuid4().hex}"
    UsedSalts(table).claim(marker, "u1", 1_000, retention_seconds=DAY)  # expired long ago
    assert billing_main(["retention", "--dry-run"]) == 0
    assert "delegationsalts" in capsys.readouterr().out
    assert billing_main(["retention", "--limit", "100000"]) == 0
    assert not list(table.query_entities("used_at eq 1000 and uid eq 'u1'"))
    with pytest.raises(SystemExit) as bad:
        billing_main(["retention", "--limit", "0"])
    assert bad.value.code == 2
    assert "the limit must be at least 1 row" in capsys.readouterr().err
