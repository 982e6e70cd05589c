"""The idempotency store against Azurite: claim once, duplicates, release, stale takeover, queue hand-over."""

from __future__ import annotations

import uuid

import pytest
from azure.data.tables import TableServiceClient

from billing.records import ClaimKind
from billing.store.processed_events import STALE_AFTER, ProcessedEvents

pytestmark = pytest.mark.storage


@pytest.fixture
def store_and_clock(storage_connection_string: str) -> tuple[ProcessedEvents, list[float]]:
    service = TableServiceClient.from_connection_string(storage_connection_string)
    table = service.create_table_if_not_exists(f"events{uuid.uuid4().hex[:10]}")
    now = [1_000_000.0]
    return ProcessedEvents(table, clock=lambda: now[0]), now


def test_claim_done_duplicate(store_and_clock: tuple[ProcessedEvents, list[float]]) -> None:
    store, _ = store_and_clock
    first = store.claim("evt_1", "invoice.paid")
    assert first.kind is ClaimKind.CLAIMED
    assert store.claim("evt_1", "invoice.paid").kind is ClaimKind.BUSY  # another instance, same moment
    store.mark_done(first, "changed: x")
    again = store.claim("evt_1", "invoice.paid")
    assert (again.kind, again.outcome) == (ClaimKind.DONE, "changed: x")


def test_release_lets_the_retry_claim(store_and_clock: tuple[ProcessedEvents, list[float]]) -> None:
    store, _ = store_and_clock
    claim = store.claim("evt_2", "invoice.paid")
    store.release(claim)
    assert store.get("evt_2") is None
    assert store.claim("evt_2", "invoice.paid").kind is ClaimKind.CLAIMED


def test_stale_claim_is_taken_over_once(store_and_clock: tuple[ProcessedEvents, list[float]]) -> None:
    store, now = store_and_clock
    dead = store.claim("evt_3", "invoice.paid")
    now[0] += STALE_AFTER - 1
    assert store.claim("evt_3", "invoice.paid").kind is ClaimKind.BUSY
    now[0] += 2
    taken = store.claim("evt_3", "invoice.paid")
    assert taken.kind is ClaimKind.CLAIMED
    assert store.claim("evt_3", "invoice.paid").kind is ClaimKind.BUSY  # fresh again after the takeover
    store.release(dead)  # the dead handler's late release must not free the new owner's claim
    row = store.get("evt_3")
    assert row is not None
    assert row["attempts"] == 2


def test_queued_events_belong_to_the_worker(store_and_clock: tuple[ProcessedEvents, list[float]]) -> None:
    store, _ = store_and_clock
    claim = store.claim("evt_4", "invoice.paid")
    store.mark_queued(claim)
    webhook_retry = store.claim("evt_4", "invoice.paid")
    assert (webhook_retry.kind, webhook_retry.status) == (ClaimKind.BUSY, "queued")
    assert store.claim("evt_4", "invoice.paid", take_queued=True).kind is ClaimKind.CLAIMED
