"""Units of work of the usage push and their queue messages. Pure.

The fan-out (timer or CLI) reads the run's report windows once for all subscriptions and cuts the
result into batches of whole watermark groups (the rows the store keeps together, so a worker
reads and writes each group once and no two batches share one), each item with its own billing
period, its window start (its cursor as planned) and its calls from there to the window end. A
batch carries everything its worker needs, so workers never read APIM (whose request count then
grows with report pages, not with subscriptions) and a retried message recomputes the very same
events (same counts, same identifiers).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from billing.usage.plan import UsageCounts
from billing.usage.windows import Period

# A Storage queue message is at most 64 KiB; base64 adds a third. Keep the JSON well below 48 KiB.
MAX_MESSAGE_JSON_BYTES = 44 * 1024
DEFAULT_BATCH_SIZE = 300


@dataclass(frozen=True)
class PushItem:
    subscription_id: str
    customer_id: str
    product_id: str
    period: Period
    window_start: int | None  # counts are of [window_start, batch window end); None: adopt, nothing read
    counts: UsageCounts  # (the whole period's for a closing report)
    # Where the product's part of the period starts after a plan change (billing.usage.segments); 0: at the
    # period start. The part's included calls are prorated from it.
    since: int = 0
    # Where that part ends when before the period end (an upgrade's old product, closed up to the change);
    # None: at the period end. Its included calls are prorated up to it (`billing.pricing.part_product`).
    until: int | None = None


@dataclass(frozen=True)
class PushBatch:
    window_end: int  # counts include calls before this instant (unix seconds); events carry it
    as_of: int  # when the push started (for logs); the window end derives from it
    items: tuple[PushItem, ...]
    closing: bool = False  # period-end or cancellation report: the counts are the whole period's


@dataclass(frozen=True)
class ClosingRequest:
    subscription_id: str
    period: Period


@dataclass(frozen=True)
class ConfirmRequest:
    """Compare a subscription's period with Stripe's meter count and send what is missing (confirm.py)."""

    subscription_id: str
    period_start: int
    attempt: int = 0  # how many times it came back (runner.retry_delays)
    seen: int | None = None  # the shortfall's count at the previous read (a repair needs two that agree)
    # A cancel's instant (Stripe's time): its final invoice may end there, so a repair is stamped before it.
    until: int | None = None


@dataclass(frozen=True)
class FinalRequest:
    """A cancellation's final invoice, after the report lag (billing.usage.final_invoice)."""

    subscription_id: str
    period: Period  # the period the cancel fell in
    cancel_at: int  # when access ended, in Stripe's time: the usage is stamped before it


@dataclass(frozen=True)
class PlanChangeRequest:
    """An upgrade's usage up to the change, after the report lag (billing.usage.plan_change)."""

    subscription_id: str
    product_id: str  # the product the subscription left
    period: Period  # the period the change fell in
    since: int  # where the old product's part of the period began
    changed_at: int  # the change, in Stripe's time: the old product's calls are those before it
    item_id: str  # the old product's metered subscription item, removed once its usage is reported


def plan_change_message(request: PlanChangeRequest) -> bytes:
    payload = {
        "kind": "plan_change",
        "subscription_id": request.subscription_id,
        "product_id": request.product_id,
        "period_start": request.period.start,
        "period_end": request.period.end,
        "since": request.since,
        "changed_at": request.changed_at,
        "item_id": request.item_id,
    }
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def final_message(subscription_id: str, period_start: int, period_end: int, cancel_at: int) -> bytes:
    payload = {
        "kind": "final",
        "subscription_id": subscription_id,
        "period_start": period_start,
        "period_end": period_end,
        "cancel_at": cancel_at,
    }
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def confirm_message(
    subscription_id: str, period_start: int, attempt: int = 0, seen: int | None = None, until: int | None = None
) -> bytes:
    payload: dict[str, Any] = {
        "kind": "confirm",
        "subscription_id": subscription_id,
        "period_start": period_start,
        "attempt": attempt,
        "seen": seen,
    }
    if until is not None:
        payload["until"] = until
    return json.dumps(payload, separators=(",", ":")).encode()


class BadMessage(ValueError):
    """A queue message that is not a usage batch or closing request (it can never succeed)."""


def batch_message(batch: PushBatch) -> bytes:
    items = [
        [
            i.subscription_id,
            i.customer_id,
            i.product_id,
            i.period.start,
            i.period.end,
            i.window_start,
            i.counts.success,
            i.counts.blocked,
            i.counts.failed,
            i.counts.other,
        ]
        + ([i.since, i.until] if i.until is not None else [i.since] if i.since > i.period.start else [])
        for i in batch.items
    ]
    payload = {
        "kind": "batch",
        "window_end": batch.window_end,
        "as_of": batch.as_of,
        "closing": batch.closing,
        "items": items,
    }
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def closing_message(subscription_id: str, period_start: int, period_end: int) -> bytes:
    payload = {
        "kind": "closing",
        "subscription_id": subscription_id,
        "period_start": period_start,
        "period_end": period_end,
    }
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _int(payload: dict[str, Any], key: str) -> int:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadMessage(f"'{key}' must be a whole number of unix seconds >= 0, got {value!r}")
    return value


def _str(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise BadMessage(f"'{key}' must be a non-empty string, got {value!r}")
    return value


def _period(payload: dict[str, Any]) -> Period:
    try:
        return Period(_int(payload, "period_start"), _int(payload, "period_end"))
    except BadMessage:
        raise
    except ValueError as exc:
        raise BadMessage(str(exc)) from None


ITEM_FIELDS = (
    "[sid, customer, product, period_start, period_end, window_start or null, success, blocked, "
    "failed, other] (and the part's start after a plan change, and its end if before the period's)"
)


def _item(raw: Any, n: int) -> PushItem:
    if isinstance(raw, list) and len(raw) == 12:  # a part that ends before the period end: its end last
        until = raw[11]
        if type(until) is not int or until < 0:
            raise BadMessage(f"items[{n}]: the part's end must be a whole number of unix seconds")
        return replace(_item(raw[:11], n), until=until)
    if isinstance(raw, list) and len(raw) == 11:  # a product's part after a plan change: its start last
        since = raw[10]
        if type(since) is not int or since < 0:
            raise BadMessage(f"items[{n}]: the part's start must be a whole number of unix seconds")
        return replace(_item(raw[:10], n), since=since)
    if not (isinstance(raw, list) and len(raw) == 10 and all(isinstance(x, str) and x for x in raw[:3])):
        raise BadMessage(f"items[{n}] must be {ITEM_FIELDS}")
    start, end, window = raw[3], raw[4], raw[5]
    usual_window = window is None or (type(window) is int and window >= 0)
    if type(start) is int and type(end) is int and 0 <= start < end and usual_window:
        # The usual item, checked at once (a batch holds hundreds); anything else is named below.
        try:
            return PushItem(raw[0], raw[1], raw[2], Period(start, end), window, UsageCounts(*raw[6:]))
        except (TypeError, ValueError) as exc:
            raise BadMessage(f"items[{n}]: {exc}") from None
    try:
        period = _period({"period_start": raw[3], "period_end": raw[4]})
        window_start = None if raw[5] is None else _int({"window_start": raw[5]}, "window_start")
        counts = UsageCounts(*raw[6:])
    except BadMessage as exc:
        raise BadMessage(f"items[{n}]: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"items[{n}]: {exc}") from None
    return PushItem(raw[0], raw[1], raw[2], period, window_start, counts)


def parse_message(body: bytes | str) -> PushBatch | ClosingRequest | ConfirmRequest | FinalRequest | PlanChangeRequest:
    """A queue message as a batch, a closing, a confirm or a final invoice request; BadMessage says what is wrong."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadMessage("the message is not JSON") from None
    if not isinstance(payload, dict):
        raise BadMessage('the message must be a JSON object with "kind": "batch", "closing", "confirm" or "final"')
    kind = payload.get("kind")
    if kind == "closing":
        return ClosingRequest(_str(payload, "subscription_id"), _period(payload))
    if kind == "final":
        return FinalRequest(_str(payload, "subscription_id"), _period(payload), _int(payload, "cancel_at"))
    if kind == "plan_change":
        return PlanChangeRequest(
            _str(payload, "subscription_id"),
            _str(payload, "product_id"),
            _period(payload),
            _int(payload, "since"),
            _int(payload, "changed_at"),
            _str(payload, "item_id"),
        )
    if kind == "confirm":
        attempt = payload.get("attempt", 0)
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
            raise BadMessage(f"'attempt' must be a whole number >= 0, got {attempt!r}")
        seen = payload.get("seen")
        if seen is not None and (isinstance(seen, bool) or not isinstance(seen, int) or seen < 0):
            raise BadMessage(f"'seen' must be a whole number >= 0 or null, got {seen!r}")
        until = payload.get("until")
        if until is not None:
            until = _int(payload, "until")
        return ConfirmRequest(_str(payload, "subscription_id"), _int(payload, "period_start"), attempt, seen, until)
    if kind == "batch":
        items = payload.get("items")
        if not isinstance(items, list):
            raise BadMessage("'items' must be a list")
        window_end = _int(payload, "window_end")
        closing = payload.get("closing", False)
        if not isinstance(closing, bool):
            raise BadMessage("'closing' must be true or false")
        return PushBatch(
            window_end, _int(payload, "as_of"), tuple(_item(raw, n) for n, raw in enumerate(items)), closing
        )
    raise BadMessage(f'\'kind\' must be "batch", "closing", "confirm" or "final", got {kind!r}')


def split(
    window_end: int,
    as_of: int,
    items: Iterable[PushItem],
    *,
    group_of: Callable[[str, str], str],
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[PushBatch]:
    """Batches of whole groups (`group_of` a subscription and product id), at most `batch_size` items each
    but for a group larger than that, which is a batch of its own.

    A batch never shares a group with another (two would conflict on its row when run at once, and a
    conflict after sending costs a read and a write), unless the group outgrows a queue message (about
    400 subscriptions; a million spread over 1,024 groups and three products make 326): it is cut there.
    """
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    groups: dict[str, list[PushItem]] = {}
    for item in items:
        groups.setdefault(group_of(item.subscription_id, item.product_id), []).append(item)
    limit = MAX_MESSAGE_JSON_BYTES - 512
    current: list[PushItem] = []
    size = 0
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda i: i.subscription_id)
        sizes = [_item_size(i) for i in group]
        if current and (len(current) + len(group) > batch_size or size + sum(sizes) > limit):
            yield PushBatch(window_end, as_of, tuple(current))
            current, size = [], 0
        for item, item_size in zip(group, sizes, strict=True):
            if current and size + item_size > limit:  # a group bigger than a queue message
                yield PushBatch(window_end, as_of, tuple(current))
                current, size = [], 0
            current.append(item)
            size += item_size
    if current:
        yield PushBatch(window_end, as_of, tuple(current))


def _item_size(item: PushItem) -> int:
    """The item's JSON in a batch message, to a few characters (ids, seven numbers, null or a number).

    Exact rather than a wide bound, so that a batch reaches `batch_size` items: a batch of 300
    fills three meter event stream requests, where one cut at 263 would take the same three.
    """
    c, sid, customer, product = item.counts, item.subscription_id, item.customer_id, item.product_id
    numbers = f"{item.period.start}{item.period.end}{item.window_start or 0}{c.success}{c.blocked}{c.failed}{c.other}"
    if sid.isascii() and customer.isascii() and product.isascii():
        ids = len(sid) + len(customer) + len(product)
    else:  # JSON writes other characters as \uXXXX
        ids = len(json.dumps(sid)) + len(json.dumps(customer)) + len(json.dumps(product))
    return ids + len(numbers) + 24  # quotes, commas, brackets, and "null" for no start


def remainder(batch: PushBatch, done: Sequence[PushItem]) -> PushBatch | None:
    """The batch without the items already processed (to re-enqueue near a time limit)."""
    seen = {i.subscription_id for i in done}
    rest = tuple(i for i in batch.items if i.subscription_id not in seen)
    if not rest:
        return None
    return PushBatch(batch.window_end, batch.as_of, rest, batch.closing)
