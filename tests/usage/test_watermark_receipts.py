"""The watermark table against Azurite: a chunk's acceptance is ONE receipt row, not a rewrite of
every subscription's row, and a row only reads as moved once a receipt lists its pending event.
"""

from __future__ import annotations

import uuid

import pytest
from azure.data.tables import TableClient

from billing.store.watermarks import Watermarks
from billing.usage.plan import MeterEvent, PendingEvent
from billing.usage.ports import Watermark, WatermarkConflict, WatermarkWrite
from devstack.azurite import Azurite

pytestmark = pytest.mark.storage
P0 = 1_750_000_000


@pytest.fixture
def marks(azurite: Azurite) -> Watermarks:
    table = TableClient.from_connection_string(azurite.connection_string, f"wm{uuid.uuid4().hex[:12]}")
    table.create_table()
    return Watermarks(table)


def _pending(sid: str, before: int, after: int) -> PendingEvent:
    event = MeterEvent(identifier=f"{sid}:{P0}:{after}", event_name="apim_payg_calls", customer_id="cus_1",
                       value=after - before, timestamp=P0 + 60, subscription_id=sid)  # fmt: skip
    return PendingEvent(event, after)


def test_accepted_chunk_is_one_receipt_and_reads_as_recorded(marks: Watermarks) -> None:
    sids = [f"sub_{n:03d}" for n in range(120)]  # two transactions of pending rows
    found = marks.read_range(P0, sids)
    written = marks.write(P0, [WatermarkWrite(found[s], 0, _pending(s, 0, 10 + n)) for n, s in enumerate(sids)])
    assert len({m.receipt for m in written.values()}) == 1  # one receipt key for the whole call
    accepted = [written[s] for s in sids[:100]]  # Stripe refused the last 20
    before = marks.requests
    marks.record(P0, accepted)
    assert marks.requests - before == 1  # one transaction holding one receipt row
    again = marks.read_range(P0, sids)
    for n, sid in enumerate(sids[:100]):
        assert (again[sid].reported, again[sid].pending) == (10 + n, None)
        assert again[sid].etag == written[sid].etag  # the row itself was not rewritten
    for sid in sids[100:]:
        assert again[sid].reported == 0
        assert again[sid].pending == written[sid].pending  # not listed: still to resend
    assert marks.get(P0, sids[0]).reported == 10


def test_without_a_receipt_the_pending_event_stays_and_the_next_write_folds_the_receipt_in(
    marks: Watermarks,
) -> None:
    first = marks.write(P0, [WatermarkWrite(Watermark("sub_a", P0), 0, _pending("sub_a", 0, 7))])["sub_a"]
    assert marks.get(P0, "sub_a").pending == first.pending  # a crash before `record`: resend next run
    recorded = marks.record(P0, [first])["sub_a"]
    assert (recorded.reported, recorded.pending) == (7, None)
    # The next run's pending write is conditional on the row as read, which the receipt left alone.
    second = marks.write(P0, [WatermarkWrite(marks.get(P0, "sub_a"), 7, _pending("sub_a", 7, 9))])["sub_a"]
    assert marks.get(P0, "sub_a").pending == second.pending
    assert marks.get(P0, "sub_a").reported == 7
    with pytest.raises(WatermarkConflict):  # a run still holding the old row cannot move it again
        marks.write(P0, [WatermarkWrite(recorded, 7, _pending("sub_a", 7, 8))])
    marks.record(P0, [second])
    assert (marks.get(P0, "sub_a").reported, marks.get(P0, "sub_a").pending) == (9, None)
