"""Watermark rows in each stored layout (`billing.store.watermarks`), against Azurite.

Layout 1 is what the app wrote before the layout was named (positional JSON lists, no `layout`
property): the rows below are written literally, as that code wrote them, not through this code.
They read as the same watermarks, a write moves the whole row to layout 2 (named fields) without
changing any other entry, and the usage push over such a row bills what it would over the same
state in layout 2. A layout this code does not know is refused and left alone.
"""

from __future__ import annotations

import json
import uuid

import pytest
from azure.data.tables import TableClient
from pydantic import ValidationError

from billing.catalog_names import meter_event_name
from billing.model_loader import load_models
from billing.store.watermarks import GROUP_PARTITION, LAYOUT, UnknownLayout, Watermarks, group_key
from billing.usage.plan import MeterEvent, PendingEvent
from billing.usage.ports import Watermark, WatermarkWrite
from billing.usage.push import UsagePush
from billing.usage.runner import run_in_process
from devstack.azurite import Azurite
from tests.fakes import FakeLinks
from tests.usage.fakes import FakeMeter, FakeReports, link

pytestmark = pytest.mark.storage

P0 = 1_750_000_000
DAY = 86_400
LAG = 1800
A, B, C = "sub_a", "sub_102", "sub_2577"  # three subscriptions of one group (billing.store.groups)
ROW_KEY = "payg~0695"

# Layout 1, as the code before issue 20 wrote it (json.dumps of {key: [reported, counted_until, closed,
# pending]}, pending [identifier, event name, customer, value, timestamp, reported, counted_until, closed];
# byte for byte what that code (commit 00782e8) wrote for EXPECTED, in properties `parts` and `d0`):
# A counted up to a day in; B with an event written down and not yet recorded (a crash after sending);
# C's previous period closed, and its current one opened by a closing report's event before any push.
LAYOUT_1 = (
    '{"sub_a|1750000000":[0,1750086400,false,null],'
    '"sub_102|1750000000":[0,1750086400,false,'
    '["sub_102:1750000000:7","apim_calls_payg","cus_sub_102",7,1750172799,7,1750172800,false]],'
    '"sub_2577|1747408000":[40,1750000000,true,null],'
    '"sub_2577|1750000000":[0,null,false,'
    '["sub_2577:1750000000:12","apim_calls_payg","cus_sub_2577",12,1750000090,12,1750172800,true]]}'
)


@pytest.fixture
def table(azurite: Azurite) -> TableClient:
    client = TableClient.from_connection_string(azurite.connection_string, f"wl{uuid.uuid4().hex[:12]}")
    client.create_table()
    return client


def _row(table: TableClient, parts: list[str], **extra: object) -> None:
    entity = {"PartitionKey": GROUP_PARTITION, "RowKey": ROW_KEY, "parts": len(parts), **extra}
    table.create_entity({**entity, **{f"d{n}": part for n, part in enumerate(parts)}})


def _pending(sid: str, value: int, timestamp: int, until: int, closed: bool = False) -> PendingEvent:
    event = MeterEvent(f"{sid}:{P0}:{value}", meter_event_name("payg"), f"cus_{sid}", value, timestamp, sid)
    return PendingEvent(event, value, until, closed)


# What LAYOUT_1 holds, as watermarks (etags aside).
EXPECTED = {
    (A, P0): (0, P0 + DAY, None),
    (B, P0): (0, P0 + DAY, _pending(B, 7, P0 + 2 * DAY - 1, P0 + 2 * DAY)),
    (C, P0 - 30 * DAY): (40, P0, None),
    (C, P0): (0, None, _pending(C, 12, P0 + 90, P0 + 2 * DAY, closed=True)),
}


def _values(marks: Watermarks) -> dict[tuple[str, int], tuple[int, int | None, PendingEvent | None]]:
    found: dict[tuple[str, int], tuple[int, int | None, PendingEvent | None]] = {}
    for sid, period_start in EXPECTED:
        mark = marks.get(sid, "payg", period_start)
        found[(sid, period_start)] = (mark.reported, mark.counted_until, mark.pending)
    return found


def test_the_literal_row_is_the_row_of_these_subscriptions() -> None:
    assert {group_key(sid, "payg") for sid in (A, B, C)} == {ROW_KEY}


@pytest.mark.parametrize("split", [None, 45, 200], ids=["one part", "two parts", "three parts"])
def test_a_row_in_layout_1_reads_as_the_watermarks_it_holds(table: TableClient, split: int | None) -> None:
    parts = [LAYOUT_1] if split is None else [LAYOUT_1[i : i + split] for i in range(0, len(LAYOUT_1), split)][:3]
    if split is not None:
        parts[-1] += LAYOUT_1[3 * split :]
    assert "".join(parts) == LAYOUT_1
    _row(table, parts)
    marks = Watermarks(table)
    assert _values(marks) == EXPECTED
    # The passes over every row read it too: cursors as they will be once the pending events are recorded.
    cursors = Watermarks(table).open_cursors(P0 + 10 * DAY)["payg"]
    assert (max(cursors), sum(cursors.values())) == (P0 + 2 * DAY, 3)
    state = Watermarks(table).states()["payg"]
    assert (state.open_periods, state.counted_until, state.oldest_cursor) == (3, P0 + 2 * DAY, P0 + DAY)
    assert (state.pending, state.oldest_pending) == (2, P0 + 90)


def test_a_write_moves_the_row_to_layout_2_and_keeps_every_other_entry(table: TableClient) -> None:
    _row(table, [LAYOUT_1])
    marks = Watermarks(table)
    a = marks.get(A, "payg", P0)
    marks.write([WatermarkWrite(a, 9, P0 + 2 * DAY)])

    row = table.get_entity(GROUP_PARTITION, ROW_KEY)
    assert (row["layout"], row["parts"]) == (LAYOUT, 1)
    stored = json.loads(row["d0"])
    assert stored[f"{A}|{P0}"] == {"reported": 9, "counted_until": P0 + 2 * DAY}  # named; defaults left out
    assert stored[f"{B}|{P0}"] == {
        "reported": 0,
        "counted_until": P0 + DAY,
        "pending": {
            "identifier": f"{B}:{P0}:7",
            "event_name": "apim_calls_payg",
            "customer_id": f"cus_{B}",
            "value": 7,
            "timestamp": P0 + 2 * DAY - 1,
            "reported": 7,
            "counted_until": P0 + 2 * DAY,
        },
    }
    assert stored[f"{C}|{P0 - 30 * DAY}"] == {"reported": 40, "counted_until": P0, "closed": True}
    assert stored[f"{C}|{P0}"]["pending"]["closed"] is True

    fresh = Watermarks(table)
    assert _values(fresh) == {**EXPECTED, (A, P0): (9, P0 + 2 * DAY, None)}
    # Written again in layout 2: read back the same.
    b = fresh.get(B, "payg", P0)
    fresh.write([WatermarkWrite(b, 7, P0 + 2 * DAY)])
    etag = table.get_entity(GROUP_PARTITION, ROW_KEY).metadata["etag"]
    assert Watermarks(table).get(B, "payg", P0) == Watermark(B, "payg", P0, 7, P0 + 2 * DAY, None, etag)


def test_a_layout_this_code_does_not_know_is_refused_and_left_alone(table: TableClient) -> None:
    _row(table, ['{"sub_a|1750000000":{"reported":1,"counted_until":1750086400,"region":"eu"}}'], layout=LAYOUT + 1)
    before = table.get_entity(GROUP_PARTITION, ROW_KEY)
    with pytest.raises(UnknownLayout, match="layout 3; this version reads layouts 1 and 2"):
        Watermarks(table).get(A, "payg", P0)
    with pytest.raises(UnknownLayout):
        Watermarks(table).open_cursors(P0 + DAY)
    assert table.get_entity(GROUP_PARTITION, ROW_KEY).metadata["etag"] == before.metadata["etag"]


def test_a_layout_2_row_with_a_wrong_value_names_it(table: TableClient) -> None:
    _row(table, ['{"sub_a|1750000000":{"reported":"1","counted_until":1750086400}}'], layout=LAYOUT)
    with pytest.raises(ValidationError, match=r"sub_a\|1750000000\.reported"):
        Watermarks(table).get(A, "payg", P0)


def _push_over(table: TableClient) -> tuple[FakeMeter, Watermarks]:
    """Three days in: A made 11 calls on day 2; B's 7 calls of day 2 are its pending event, 5 more on day 3."""
    reports, meter = FakeReports(), FakeMeter()
    reports.add(A, P0 + DAY + 60, success=11)
    reports.add(B, P0 + DAY + 30, success=7)
    reports.add(B, P0 + 2 * DAY + 60, success=5)
    links = FakeLinks([link(sid, "payg", P0, P0 + 30 * DAY) for sid in (A, B)])
    marks = Watermarks(table)
    push = UsagePush(load_models(), reports, meter, marks, links, lag_seconds=LAG, counts=meter)
    run_in_process(push, P0 + 3 * DAY)
    return meter, Watermarks(table)


def test_the_usage_push_over_a_layout_1_row_bills_what_it_would_over_layout_2(azurite: Azurite) -> None:
    old = TableClient.from_connection_string(azurite.connection_string, f"wl{uuid.uuid4().hex[:12]}")
    old.create_table()
    _row(old, [LAYOUT_1])

    new = TableClient.from_connection_string(azurite.connection_string, f"wl{uuid.uuid4().hex[:12]}")
    new.create_table()
    seeded = Watermarks(new)
    found = {(sid, start): seeded.get(sid, "payg", start) for sid, start in EXPECTED}
    seeded.write(
        [
            WatermarkWrite(found[key], reported, until, pending, closed=key == (C, P0 - 30 * DAY))
            for key, (reported, until, pending) in EXPECTED.items()
        ]
    )
    assert new.get_entity(GROUP_PARTITION, ROW_KEY)["layout"] == LAYOUT
    assert _values(Watermarks(new)) == _values(Watermarks(old)) == EXPECTED

    billed = []
    for table in (old, new):
        meter, after = _push_over(table)
        assert (meter.total(A), meter.total(B)) == (11, 12)  # B: the pending 7 resent, then the 5 of day 3
        marks = {sid: after.get(sid, "payg", P0) for sid in (A, B)}
        assert {sid: (m.reported, m.pending) for sid, m in marks.items()} == {A: (11, None), B: (12, None)}
        assert table.get_entity(GROUP_PARTITION, ROW_KEY)["layout"] == LAYOUT
        assert after.get(C, "payg", P0 - 30 * DAY).reported == 40  # not in the push: kept as it was
        billed.append(sorted((e.subscription_id, e.identifier, e.value, e.timestamp) for e in meter.kept))
    assert billed[0] == billed[1]
