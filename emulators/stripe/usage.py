"""Meter events: validation, storage, identifier de-duplication, and aggregation for a billing period."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from emulators.stripe.core import Core
from emulators.stripe.wire import StripeError

MAX_PAST = 35 * 86400  # Stripe: timestamp within the past 35 calendar days
MAX_FUTURE = 300  # ... or up to 5 minutes in the future
# "We'll enforce uniqueness within a rolling 24 hour period" (v2 meter event `identifier`); v1:
# "unique identifier ... for at least 24 hours". Measured on the clock the timestamps are checked
# against (the customer's test clock, if any).
DEDUP_WINDOW = 24 * 3600


class MeterEventError(StripeError):
    """An invalid meter event: v1 and v2 `meter_events` answer it at once; the v2 stream reports it later.

    `report_code` is the error type of Stripe's `v1.billing.meter.error_report_triggered` /
    `no_meter_found` thin events; `meter` the meter the report is about (None: no meter found).
    """

    def __init__(self, report_code: str, meter: dict[str, Any] | None, param: str, message: str) -> None:
        super().__init__(message, code="parameter_invalid", param=param)
        self.report_code = report_code
        self.meter = meter


def meter_for(core: Core, event_name: str) -> dict[str, Any] | None:
    for meter in core.store.all("billing.meter"):
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    return None


def _archived_meter(core: Core, event_name: str) -> dict[str, Any] | None:
    return next((m for m in core.store.all("billing.meter") if m["event_name"] == event_name), None)


def record(  # noqa: PLR0917 - one call site per API version
    core: Core,
    event_name: str,
    payload: dict[str, str],
    identifier: str | None,
    timestamp: int | None,
    prefix: str = "",
    duplicates_raise: bool = True,
) -> dict[str, Any] | None:
    """Validate and store one meter event. Returns None for a silently dropped duplicate (v2 stream).

    Raises MeterEventError for an invalid event, StripeError for a duplicate when `duplicates_raise`.
    """
    meter = meter_for(core, event_name)
    if meter is None:
        archived = _archived_meter(core, event_name)
        raise MeterEventError(
            "archived_meter" if archived else "no_meter",
            archived,
            f"{prefix}event_name",
            f"No active meter was found with event_name '{event_name}'.",
        )
    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    customer_id = payload.get(customer_key)
    if not customer_id:
        # The wording of the API reference's example error report.
        raise MeterEventError(
            "meter_event_no_customer_defined",
            meter,
            f"{prefix}payload[{customer_key}]",
            f"Customer mapping key {customer_key} not found in payload.",
        )
    customer = core.store.maybe("customer", customer_id)
    if customer is None:
        raise MeterEventError(
            "meter_event_customer_not_found",
            meter,
            f"{prefix}payload[{customer_key}]",
            f"No such customer: '{customer_id}'",
        )
    raw_value = payload.get(value_key, "1" if meter["default_aggregation"]["formula"] == "count" else None)
    if raw_value is None:
        raise MeterEventError(
            "meter_event_invalid_value",
            meter,
            f"{prefix}payload[{value_key}]",
            f"Missing the value key '{value_key}' in the payload.",
        )
    try:
        value = Decimal(raw_value)
    except ArithmeticError:
        value = Decimal("NaN")
    if not value.is_finite():
        raise MeterEventError(
            "meter_event_invalid_value",
            meter,
            f"{prefix}payload[{value_key}]",
            f"Invalid meter value '{raw_value}': not a number.",
        )
    now = core.now(core.clock_of(customer_id))
    when = now if timestamp is None else timestamp
    if when < now - MAX_PAST or when > now + MAX_FUTURE:
        raise MeterEventError(
            "timestamp_too_far_in_past" if when < now else "timestamp_in_future",
            meter,
            f"{prefix}timestamp",
            f"Timestamp {when} must be within the past 35 calendar days or up to 5 minutes in the future "
            f"(the customer's current time is {now}).",
        )
    seen: dict[str, int] = meter.setdefault("_identifiers", {})
    ident = identifier or core.store.new_id("mev")
    if ident in seen and seen[ident] > now - DEDUP_WINDOW:
        if duplicates_raise:
            raise StripeError(f"An event already exists with identifier {ident}.", should_retry=False)
        return None
    seen[ident] = now  # the window restarts only with an event that counts
    event = {
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": ident,
        "livemode": False,
        "payload": dict(payload),
        "timestamp": when,
        "_customer": customer_id,
        "_value": value,
        "_seq": core.next_meter_event_seq(),  # report order: finer than `created` on a frozen test clock
    }
    meter.setdefault("_events", []).append(event)
    return event


def aggregate(  # noqa: PLR0917 - the report-order bounds are optional filters
    meter: dict[str, Any],
    customer_id: str,
    start: int,
    end: int,
    reported_after: int | None = None,
    reported_upto: int | None = None,
) -> Decimal:
    """The meter's aggregation of a customer's events with timestamp in [start, end).

    `reported_after` / `reported_upto` also bound when the events were reported (their `_seq`,
    the order of reporting): flexible billing mode "bills for usage based on the price at the time
    you report it".
    """
    events = [
        e
        for e in meter.get("_events", [])
        if e["_customer"] == customer_id
        and start <= e["timestamp"] < end
        and (reported_after is None or e["_seq"] > reported_after)
        and (reported_upto is None or e["_seq"] <= reported_upto)
    ]
    formula = meter["default_aggregation"]["formula"]
    if formula == "count":
        return Decimal(len(events))
    if formula == "last":
        if not events:
            return Decimal(0)
        last: Decimal = max(events, key=lambda e: (e["timestamp"], e["_seq"]))["_value"]
        return last
    return sum((e["_value"] for e in events), Decimal(0))
