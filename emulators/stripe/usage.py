"""Meter events: storage, identifier de-duplication, and aggregation for a billing period."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from emulators.stripe.core import Core
from emulators.stripe.wire import StripeError, invalid

MAX_PAST = 35 * 86400  # Stripe: timestamp within the past 35 calendar days
MAX_FUTURE = 300  # ... or up to 5 minutes in the future
DEDUP_WINDOW = 24 * 3600  # identifiers are unique within a rolling 24 hours (at least)


def meter_for(core: Core, event_name: str) -> dict[str, Any] | None:
    for meter in core.store.all("billing.meter"):
        if meter["event_name"] == event_name and meter["status"] == "active":
            return meter
    return None


def record(  # noqa: PLR0917 - one call site per API version
    core: Core,
    event_name: str,
    payload: dict[str, str],
    identifier: str | None,
    timestamp: int | None,
    prefix: str = "",
    duplicates_raise: bool = True,
) -> dict[str, Any] | None:
    """Validate and store one meter event. Returns None for a silently dropped duplicate (v2 stream)."""
    meter = meter_for(core, event_name)
    if meter is None:
        raise invalid(f"{prefix}event_name", f"No active meter was found with event_name '{event_name}'.")
    customer_key = meter["customer_mapping"]["event_payload_key"]
    value_key = meter["value_settings"]["event_payload_key"]
    customer_id = payload.get(customer_key)
    if not customer_id:
        raise invalid(
            f"{prefix}payload[{customer_key}]",
            f"Missing the customer mapping key '{customer_key}' in the meter event payload.",
        )
    customer = core.store.maybe("customer", customer_id)
    if customer is None:
        raise invalid(f"{prefix}payload[{customer_key}]", f"No such customer: '{customer_id}'")
    raw_value = payload.get(value_key, "1" if meter["default_aggregation"]["formula"] == "count" else None)
    if raw_value is None:
        raise invalid(f"{prefix}payload[{value_key}]", f"Missing the value key '{value_key}' in the payload.")
    try:
        value = Decimal(raw_value)
    except ArithmeticError:
        raise invalid(f"{prefix}payload[{value_key}]", f"Invalid meter value '{raw_value}': not a number.") from None
    if not value.is_finite():
        raise invalid(f"{prefix}payload[{value_key}]", f"Invalid meter value '{raw_value}': not a number.")
    now = core.now(core.clock_of(customer_id))
    when = now if timestamp is None else timestamp
    if when < now - MAX_PAST or when > now + MAX_FUTURE:
        raise invalid(
            f"{prefix}timestamp",
            f"Timestamp {when} must be within the past 35 calendar days or up to 5 minutes in the future "
            f"(the customer's current time is {now}).",
        )
    seen: dict[str, int] = meter.setdefault("_identifiers", {})
    ident = identifier or core.store.new_id("mev")
    if ident in seen and seen[ident] >= now - DEDUP_WINDOW:
        if duplicates_raise:
            raise StripeError(f"An event already exists with identifier {ident}.", should_retry=False)
        return None
    seen[ident] = now
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
    }
    meter.setdefault("_events", []).append(event)
    return event


def aggregate(meter: dict[str, Any], customer_id: str, start: int, end: int) -> Decimal:
    """The meter's aggregation of a customer's events with timestamp in [start, end)."""
    events = [e for e in meter.get("_events", []) if e["_customer"] == customer_id and start <= e["timestamp"] < end]
    formula = meter["default_aggregation"]["formula"]
    if formula == "count":
        return Decimal(len(events))
    if formula == "last":
        if not events:
            return Decimal(0)
        return max(events, key=lambda e: (e["timestamp"], e["created"]))["_value"]
    return sum((e["_value"] for e in events), Decimal(0))
