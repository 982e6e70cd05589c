"""The usage push's own adapters against the emulators, through the real SDKs: parallel report paging
(`$top`/`$skip`, every row exactly once, a report that changes while read is read again) and the
meter event stream for small sends (a 7-event batch is one stream request, not seven v1 requests).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from azure.mgmt.apimanagement.models import ProductContract

from billing.adapters.apim_client import ApimService
from billing.adapters.usage_meter import StripeMeterCounts, StripeMeterSender
from billing.adapters.usage_reports import ApimUsageReports
from billing.catalog_names import meter_event_name
from billing.usage.plan import MeterEvent, UsageCounts
from billing.usage.ratelimit import TokenBucket
from billing.usage.windows import ReportWindow
from emulators.apim.server import ApimEmulator
from emulators.stripe.server import StripeEmulator

HOUR = 3600


@pytest.fixture
def apim(apim_emulator: ApimEmulator) -> Iterator[ApimService]:
    client = apim_emulator.management_client(retry_total=0)
    client.product.create_or_update(
        apim_emulator.resource_group,
        apim_emulator.service_name,
        "payg",
        ProductContract(display_name="payg", subscription_required=True, approval_required=False, state="published"),
    )
    yield ApimService(client, apim_emulator.resource_group, apim_emulator.service_name)
    client.close()


def _seed(emu: ApimEmulator, count: int, at: int) -> dict[str, UsageCounts]:
    """`count` subscriptions, each with its own numbers of successful and blocked calls."""
    sids = [f"sub_page{n:04d}" for n in range(count)]
    emu.bulk_create_subscriptions(sids, product_id="payg")
    expected = {}
    for n, sid in enumerate(sids):
        emu.record_usage(sid, 10 + n, at=datetime.fromtimestamp(at, UTC))
        emu.record_usage(sid, n % 4 + 1, at=datetime.fromtimestamp(at, UTC), outcome="blocked")
        expected[sid] = UsageCounts(success=10 + n, blocked=n % 4 + 1)
    return expected


def test_parallel_pages_return_every_row_exactly_once(apim_emulator: ApimEmulator, apim: ApimService) -> None:
    at = int(time.time()) - HOUR
    expected = _seed(apim_emulator, 61, at)
    reports = ApimUsageReports(apim, TokenBucket(1000), page_size=7, parallel_pages=4)
    counts = reports.read(ReportWindow(at - HOUR, at + 60))
    assert counts == expected  # any page read twice would double a subscription's counts
    assert reports.requests == math.ceil(61 / 7)  # 9 pages: the first, then 8 by $skip


def test_the_servers_page_size_is_used_when_none_is_asked(apim_emulator: ApimEmulator, apim: ApimService) -> None:
    at = int(time.time()) - HOUR
    expected = _seed(apim_emulator, 230, at)  # the emulator, like APIM, pages by 100 without $top
    reports = ApimUsageReports(apim, TokenBucket(1000))
    assert reports.read(ReportWindow(at - HOUR, at + 60)) == expected
    assert reports.requests == 3


class _ChangingBucket(TokenBucket):
    """The shared budget, recording a new subscription's calls once the first page has been read."""

    def __init__(self, emu: ApimEmulator, at: int) -> None:
        super().__init__(1000)
        self._emu, self._at = emu, at
        self._once = threading.Lock()
        self._changed = False

    def acquire(self) -> None:
        with self._once:  # page threads ask side by side: change the report exactly once
            if self.taken >= 1 and not self._changed:
                self._changed = True
                self._emu.bulk_create_subscriptions(["sub_page0000a"], product_id="payg")  # sorts among the first rows
                self._emu.record_usage("sub_page0000a", 5, at=datetime.fromtimestamp(self._at, UTC))
        super().acquire()


def test_a_report_that_changes_while_read_is_read_again(apim_emulator: ApimEmulator, apim: ApimService) -> None:
    at = int(time.time()) - HOUR
    expected = _seed(apim_emulator, 30, at)
    reports = ApimUsageReports(apim, _ChangingBucket(apim_emulator, at), page_size=10, parallel_pages=2)
    counts = reports.read(ReportWindow(at - HOUR, at + 60))
    assert counts == {**expected, "sub_page0000a": UsageCounts(success=5)}
    assert reports.requests == 3 + 4  # 30 rows stated by the first page, 31 by the others; then 4 pages


def _events(customer: str, count: int, now: int, tag: str) -> list[MeterEvent]:
    name = meter_event_name("payg")
    return [
        MeterEvent(
            identifier=f"{tag}-{n}",
            event_name=name,
            customer_id=customer,
            value=n + 1,
            timestamp=now - 120,
            subscription_id=f"sub_{tag}{n}",
        )
        for n in range(count)
    ]


def test_seven_events_go_through_one_stream_request_and_two_through_v1(stripe_emulator: StripeEmulator) -> None:
    client = stripe_emulator.client()
    meter = client.v1.billing.meters.create(
        params={
            "display_name": "payg calls",
            "event_name": meter_event_name("payg"),
            "default_aggregation": {"formula": "sum"},
        }
    )
    customer = client.v1.customers.create(params={"email": "meter@example.com"}).id
    sender = StripeMeterSender(client, TokenBucket(1000))
    now = int(time.time())
    result = sender.send(_events(customer, 7, now, "seven"))
    assert (len(result.accepted), result.failed) == (7, [])
    assert sender.requests == {"v1": 0, "stream": 1, "session": 1}
    result = sender.send(_events(customer, 7, now, "again"))  # the session is still valid: reused
    assert sender.requests == {"v1": 0, "stream": 2, "session": 1}
    result = sender.send(_events(customer, 2, now, "tiny"))  # two v1 requests beat a stream request
    assert (len(result.accepted), result.failed) == (2, [])
    assert sender.requests == {"v1": 2, "stream": 2, "session": 1}
    start = (now - 3 * HOUR) // 60 * 60
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id, params={"customer": customer, "start_time": start, "end_time": start + 6 * HOUR}
    ).data
    assert sum(s.aggregated_value for s in summaries) == 2 * sum(range(1, 8)) + 1 + 2


def test_meter_counts_read_the_summaries_through_rate_limits(stripe_emulator: StripeEmulator) -> None:
    client = stripe_emulator.client()
    client.v1.billing.meters.create(
        params={
            "display_name": "payg calls",
            "event_name": meter_event_name("payg"),
            "default_aggregation": {"formula": "sum"},
        }
    )
    customer = client.v1.customers.create(params={"email": "counts@example.com"}).id
    now = int(time.time())
    StripeMeterSender(client, TokenBucket(1000)).send(_events(customer, 5, now, "counted"))  # 1+2+3+4+5, 2 minutes ago
    counts = StripeMeterCounts(client, TokenBucket(1000))
    start = (now - HOUR) // 60 * 60
    stripe_emulator.core.faults.settings.update({"error_rate_429": 0.25, "seed": 3})  # Stripe busy: retried
    try:
        assert counts.counted(customer, meter_event_name("payg"), start, start + 2 * HOUR) == 15
        assert counts.counted(customer, meter_event_name("payg"), start, (now - 180) // 60 * 60) == 0  # before them
    finally:
        stripe_emulator.core.faults.settings.update({"error_rate_429": 0.0})
    with pytest.raises(LookupError, match="catalog apply"):
        counts.counted(customer, meter_event_name("pro"), start, start + 2 * HOUR)
