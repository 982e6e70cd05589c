"""The watermark table against Azurite: group rows, optimistic writes, the run cursor, bounded rows."""

from __future__ import annotations

import uuid

import pytest
from azure.data.tables import TableClient

from billing.store.groups import GROUPS, group_of
from billing.store.watermarks import CLOSED_KEEP_SECONDS, GROUP_PARTITION, Watermarks, group_key
from billing.usage.plan import MeterEvent, PendingEvent
from billing.usage.ports import WatermarkConflict, WatermarkWrite
from devstack.azurite import Azurite

pytestmark = pytest.mark.storage
P0 = 1_750_000_000
DAY = 86_400


@pytest.fixture
def table(azurite: Azurite) -> TableClient:
    client = TableClient.from_connection_string(azurite.connection_string, f"wm{uuid.uuid4().hex[:12]}")
    client.create_table()
    return client


def _pending(sid: str, before: int, after: int, until: int) -> PendingEvent:
    event = MeterEvent(
        identifier=f"{sid}:{P0}:{after}",
        event_name="apim_payg_calls",
        customer_id="cus_1",
        value=after - before,
        timestamp=P0 + 60,
        subscription_id=sid,
    )
    return PendingEvent(event, after, until)


def test_many_subscriptions_are_stored_in_one_row_per_group_and_read_back_exactly(table: TableClient) -> None:
    marks = Watermarks(table)
    sids = [f"sub_{n:05d}" for n in range(3000)]
    keys = [(sid, "payg", P0 + n) for n, sid in enumerate(sids)]  # each with its own period start
    found = marks.read(keys)
    assert all(m.counted_until is None and m.reported == 0 for m in found.values())
    pending = {sid: _pending(sid, 0, n + 1, P0 + DAY) for n, sid in enumerate(sids) if n % 2}
    marks.write(WatermarkWrite(found[sid], n, P0 + DAY // 2, pending.get(sid)) for n, sid in enumerate(sids))

    again = Watermarks(table).read(keys)  # a fresh store: nothing cached
    for n, sid in enumerate(sids):
        assert (again[sid].reported, again[sid].counted_until, again[sid].pending) == (
            n,
            P0 + DAY // 2,
            pending.get(sid),
        )
    rows = list(table.query_entities("PartitionKey eq @pk", parameters={"pk": GROUP_PARTITION}))
    assert len(rows) == len({group_key(sid, "payg") for sid in sids}) <= GROUPS
    # Another period of the same subscription is a separate watermark.
    assert Watermarks(table).get(sids[0], "payg", P0 + 1).counted_until is None


def test_a_row_changed_since_it_was_read_is_not_overwritten(table: TableClient) -> None:
    first, second = Watermarks(table), Watermarks(table)
    a = first.get("sub_a", "payg", P0)
    b = second.get("sub_a", "payg", P0)
    first.write([WatermarkWrite(a, 5, P0 + 10)])
    with pytest.raises(WatermarkConflict):
        second.write([WatermarkWrite(b, 7, P0 + 20)])
    assert Watermarks(table).get("sub_a", "payg", P0).reported == 5
    # Reading again gives the new version, which can be written.
    fresh = second.get("sub_a", "payg", P0)
    second.write([WatermarkWrite(fresh, 7, P0 + 20)])
    assert Watermarks(table).get("sub_a", "payg", P0).reported == 7


def test_two_subscriptions_of_one_group_written_by_two_runs_conflict_rather_than_lose_a_write(
    table: TableClient,
) -> None:
    sid_a = "sub_a"
    sid_b = next(f"sub_{n}" for n in range(100_000) if group_of(f"sub_{n}") == group_of(sid_a))
    one, two = Watermarks(table), Watermarks(table)
    a, b = one.get(sid_a, "payg", P0), two.get(sid_b, "payg", P0)
    one.write([WatermarkWrite(a, 1, P0 + 10)])
    with pytest.raises(WatermarkConflict):
        two.write([WatermarkWrite(b, 2, P0 + 10)])
    b = two.get(sid_b, "payg", P0)
    two.write([WatermarkWrite(b, 2, P0 + 10)])
    both = Watermarks(table).read([(sid_a, "payg", P0), (sid_b, "payg", P0)])
    assert (both[sid_a].reported, both[sid_b].reported) == (1, 2)


def test_closed_periods_are_dropped_long_after_they_were_settled_and_open_ones_never(table: TableClient) -> None:
    marks = Watermarks(table)
    old, current = ("sub_a", "payg", P0), ("sub_a", "payg", P0 + 30 * DAY)
    found = marks.read([old])
    marks.write([WatermarkWrite(found["sub_a"], 9, P0 + 30 * DAY, None, closed=True)])
    other = ("sub_b", "payg", P0)  # open, never advanced
    marks.write([WatermarkWrite(marks.get(*other), 3, P0 + DAY)])
    later = P0 + 30 * DAY + CLOSED_KEEP_SECONDS + DAY
    marks.write([WatermarkWrite(marks.get(*current), 1, later)])
    store = Watermarks(table)
    if group_of("sub_b") == group_of("sub_a"):
        assert store.get(*other).reported == 3
    assert store.get(*old).counted_until is None  # dropped: its group moved on 40+ days after it closed
    assert store.get(*current).counted_until == later


def test_a_group_larger_than_one_property_is_split_over_several_and_read_back(table: TableClient) -> None:
    target = group_of("sub_0")
    sids = [sid for n in range(400_000) if group_of(sid := f"sub_{n}") == target][:300]
    marks = Watermarks(table)
    found = marks.read([(sid, "payg", P0) for sid in sids])
    pending = {sid: _pending(sid, 0, n + 7, P0 + DAY) for n, sid in enumerate(sids)}
    marks.write(WatermarkWrite(found[sid], 0, P0, pending[sid]) for sid in sids)
    (row,) = table.query_entities("PartitionKey eq @pk", parameters={"pk": GROUP_PARTITION})
    assert row["parts"] > 1  # one row, its JSON beyond one string property's 32K characters
    again = Watermarks(table).read([(sid, "payg", P0) for sid in sids])
    assert {sid: m.pending for sid, m in again.items()} == pending


def test_a_closing_report_before_any_push_writes_a_watermark_without_a_cursor(table: TableClient) -> None:
    marks = Watermarks(table)
    first = marks.get("sub_new", "payg", P0)
    pending = PendingEvent(_pending("sub_new", 0, 12, P0 + 30 * DAY).event, 12, P0 + 30 * DAY, closed=True)
    marks.write([WatermarkWrite(first, 0, None, pending)])
    found = Watermarks(table).get("sub_new", "payg", P0)
    assert (found.reported, found.counted_until, found.pending) == (0, None, pending)
    marks.write([WatermarkWrite(found, 12, P0 + 30 * DAY, None, closed=True)])
    assert Watermarks(table).get("sub_new", "payg", P0).counted_until == P0 + 30 * DAY


def test_products_are_kept_apart_and_their_open_cursors_read_in_one_pass(table: TableClient) -> None:
    marks = Watermarks(table)
    payg = [f"sub_p{n}" for n in range(5)]
    standard = [f"sub_s{n}" for n in range(2)]
    found = marks.read([(sid, "payg", P0) for sid in payg] + [(sid, "standard", P0) for sid in standard])
    marks.write(
        [WatermarkWrite(found[sid], 1, P0 + DAY) for sid in payg[:4]]
        + [WatermarkWrite(found[payg[4]], 1, P0 + 2 * DAY)]
        + [WatermarkWrite(found[sid], 2, P0 + 3 * DAY) for sid in standard]
    )
    # A row per product and group: the same group number of two products are two rows.
    rows = {r["RowKey"] for r in table.query_entities("PartitionKey eq @pk", parameters={"pk": GROUP_PARTITION})}
    assert rows == {group_key(sid, "payg") for sid in payg} | {group_key(sid, "standard") for sid in standard}
    assert all(key.startswith(("payg~", "standard~")) for key in rows)
    fresh = Watermarks(table)
    cursors = fresh.open_cursors(P0 + 10 * DAY)
    assert list(cursors.items()) == [("payg", {P0 + DAY: 4, P0 + 2 * DAY: 1}), ("standard", {P0 + 3 * DAY: 2})]
    assert fresh.open_cursors(P0 + 3 * DAY) == {"payg": {P0 + DAY: 4, P0 + 2 * DAY: 1}}  # at or after: not open
    # A plan's read is not kept for a write; a write from it still checks the row's version.
    planned = fresh.read([(payg[0], "payg", P0)], planning=True)[payg[0]]
    assert (planned.reported, planned.counted_until) == (1, P0 + DAY)
    marks.write([WatermarkWrite(marks.get(payg[0], "payg", P0), 5, P0 + 4 * DAY)])
    with pytest.raises(WatermarkConflict):
        fresh.write([WatermarkWrite(planned, 9, P0 + 5 * DAY)])
