"""The interfaces the usage push needs from the outside, and the watermark values they exchange.

The push service takes these as parameters: the real adapters (APIM reports, Stripe meter,
Table Storage) in the app, small in-memory fakes of these interfaces in unit tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from billing.usage.plan import MeterEvent, PendingEvent, UsageCounts
from billing.usage.windows import ReportWindow

if TYPE_CHECKING:
    from billing.records import SubscriptionLink


@dataclass(frozen=True)
class Watermark:
    subscription_id: str
    product_id: str  # the subscription's product: watermarks of one product are stored apart
    period_start: int
    reported: int = 0  # cumulative billable calls Stripe has for this period
    counted_until: int | None = None  # the report window end `reported` has reached; None: no row yet
    pending: PendingEvent | None = None  # written before sending, cleared once recorded
    etag: str | None = None  # the store's version of what was read (None: nothing stored)


@dataclass(frozen=True)
class WatermarkWrite:
    """Move `previous` to `reported` and `counted_until`, with `pending` (None clears it)."""

    previous: Watermark
    reported: int
    counted_until: int | None
    pending: PendingEvent | None = None
    closed: bool = False  # the closing report: the period is settled


@dataclass(frozen=True)
class ProductUsageState:
    """Where the push stands for one product, from its watermarks (what `python -m billing status` shows)."""

    product_id: str
    open_periods: int = 0  # watermarks of periods not settled by their closing report
    counted_until: int | None = None  # the newest cursor: the push has counted calls up to here
    oldest_cursor: int | None = None  # the cursor furthest behind
    pending: int = 0  # events written down before sending, not yet recorded as delivered
    oldest_pending: int | None = None  # the timestamp of the oldest of them


class WatermarkConflict(Exception):
    """Someone else wrote one of the rows since it was read; rerun the batch."""


@dataclass
class SendResult:
    accepted: list[MeterEvent] = field(default_factory=list)  # Stripe has them (including duplicates)
    failed: list[tuple[MeterEvent, str]] = field(default_factory=list)  # refused, with the reason

    def extend(self, other: SendResult) -> None:
        self.accepted.extend(other.accepted)
        self.failed.extend(other.failed)


class UsageReports(Protocol):
    def read(
        self, window: ReportWindow, subscription_id: str | None = None, product_id: str | None = None
    ) -> Mapping[str, UsageCounts]:
        """Calls per subscription in the window, of one subscription or one product if given."""
        ...


# A watermark's key: (subscription id, product id, billing period start).
WatermarkKey = tuple[str, str, int]


class MeterSink(Protocol):
    def send(self, events: Sequence[MeterEvent]) -> SendResult: ...


class MeterCounts(Protocol):
    def counted(self, customer_id: str, event_name: str, start: int, end: int) -> int:
        """What Stripe's meter aggregated for the customer over [start, end) (its event summaries)."""
        ...


class WatermarkStore(Protocol):
    def group_of(self, subscription_id: str, product_id: str) -> str:
        """Watermarks of one group are stored together: a batch holds whole groups where it can.

        A group holds subscriptions of one product, so batches of different products never share one.
        """
        ...

    def read(self, keys: Sequence[WatermarkKey], *, planning: bool = False) -> dict[str, Watermark]:
        """Watermarks of (subscription id, product id, period start) keys, by subscription id.

        `planning`: nothing written follows from this read, so the store need not keep what it read
        (a plan reads every watermark once, and must not hold them all).
        """
        ...

    def write(self, writes: Iterable[WatermarkWrite]) -> dict[str, Watermark]:
        """Apply the writes if nothing changed since they were read (else WatermarkConflict)."""
        ...

    def open_cursors(self, before: int) -> dict[str, dict[int, int]]:
        """Per product: how many of its open watermarks have each cursor below `before` (a pending event's,
        if it has one), the product with most open watermarks first.

        After a normal run every cursor is that run's end: the start of the next run's one window.
        """
        ...


class LinkSource(Protocol):
    def get(self, apim_subscription_id: str) -> tuple[SubscriptionLink, str] | None: ...

    def all(self) -> Iterator[SubscriptionLink]:
        """Every link, a group's links together (the store lists them by partition), as they are read."""
        ...
