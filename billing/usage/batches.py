"""Units of work of the usage push and their queue messages. Pure.

The fan-out (timer or CLI) reads the reports once per distinct period start and cuts the result
into batches: subscriptions of ONE billing period, in sid order, each with its period-to-date counts.
A batch carries everything its worker needs, so workers never read APIM (whose request count then
grows with report pages, not with subscriptions) and a retried message recomputes the very same
events (same counts, same identifiers).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
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
    counts: UsageCounts  # period-to-date, up to the batch's window end


@dataclass(frozen=True)
class PushBatch:
    period: Period
    window_end: int  # counts include calls before this instant (unix seconds)
    as_of: int  # when the push started (for logs); the window end derives from it
    items: tuple[PushItem, ...]
    closing: bool = False  # period-end or cancellation report: the window is the whole period


@dataclass(frozen=True)
class ClosingRequest:
    subscription_id: str
    period: Period


class BadMessage(ValueError):
    """A queue message that is not a usage batch or closing request (it can never succeed)."""


def batch_message(batch: PushBatch) -> bytes:
    items = [[i.subscription_id, i.customer_id, i.product_id, i.counts.success, i.counts.blocked,
              i.counts.failed, i.counts.other] for i in batch.items]  # fmt: skip
    payload = {"kind": "batch", "period_start": batch.period.start, "period_end": batch.period.end,
               "window_end": batch.window_end, "as_of": batch.as_of, "closing": batch.closing,
               "items": items}  # fmt: skip
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def closing_message(subscription_id: str, period_start: int, period_end: int) -> bytes:
    payload = {"kind": "closing", "subscription_id": subscription_id, "period_start": period_start,
               "period_end": period_end}  # fmt: skip
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


def _item(raw: Any, n: int) -> PushItem:
    if not (isinstance(raw, list) and len(raw) == 7 and all(isinstance(x, str) and x for x in raw[:3])):
        raise BadMessage(f"items[{n}] must be [sid, customer, product, success, blocked, failed, other]")
    try:
        counts = UsageCounts(*raw[3:])
    except (TypeError, ValueError) as exc:
        raise BadMessage(f"items[{n}]: {exc}") from None
    return PushItem(raw[0], raw[1], raw[2], counts)


def parse_message(body: bytes | str) -> PushBatch | ClosingRequest:
    """A queue message as a batch or a closing request; BadMessage says what is wrong."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadMessage("the message is not JSON") from None
    if not isinstance(payload, dict):
        raise BadMessage('the message must be a JSON object with "kind": "batch" or "closing"')
    kind = payload.get("kind")
    if kind == "closing":
        return ClosingRequest(_str(payload, "subscription_id"), _period(payload))
    if kind == "batch":
        items = payload.get("items")
        if not isinstance(items, list):
            raise BadMessage("'items' must be a list")
        window_end = _int(payload, "window_end")
        closing = payload.get("closing", False)
        if not isinstance(closing, bool):
            raise BadMessage("'closing' must be true or false")
        return PushBatch(_period(payload), window_end, _int(payload, "as_of"),
                         tuple(_item(raw, n) for n, raw in enumerate(items)), closing)  # fmt: skip
    raise BadMessage(f"'kind' must be \"batch\" or \"closing\", got {kind!r}")


def split(
    period: Period, window_end: int, as_of: int, items: Iterable[PushItem], batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[PushBatch]:
    """Batches of at most `batch_size` items in sid order, each small enough for one queue message."""
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    ordered = sorted(items, key=lambda i: i.subscription_id)
    current: list[PushItem] = []
    size = 0
    for item in ordered:
        item_size = len(item.subscription_id) + len(item.customer_id) + len(item.product_id) + 80
        if current and (len(current) >= batch_size or size + item_size > MAX_MESSAGE_JSON_BYTES - 512):
            yield PushBatch(period, window_end, as_of, tuple(current))
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        yield PushBatch(period, window_end, as_of, tuple(current))


def remainder(batch: PushBatch, done: Sequence[PushItem]) -> PushBatch | None:
    """The batch without the items already processed (to re-enqueue near a time limit)."""
    seen = {i.subscription_id for i in done}
    rest = tuple(i for i in batch.items if i.subscription_id not in seen)
    if not rest:
        return None
    return PushBatch(batch.period, batch.window_end, batch.as_of, rest, batch.closing)
