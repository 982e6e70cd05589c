"""Billing meters, v1 meter events, the v2 meter event session and stream, event summaries.

v1 `/v1/billing/meter_events` and v2 `/v2/billing/meter_events` validate each event synchronously
and answer an invalid one with an error ("Events are validated synchronously, but are processed
asynchronously."); the v2 stream validates asynchronously and reports invalid events later
through thin events (see meter_errors.py).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, NamedTuple

from emulators.stripe import meter_errors, thresholds, usage
from emulators.stripe.routes import Request, route
from emulators.stripe.store import blank
from emulators.stripe.wire import EXPAND, LIST, StripeError, enum, i, invalid, obj, s, validate


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@route("POST", "/v1/billing/meters")
def create_meter(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {
            "display_name": s,
            "event_name": s,
            "default_aggregation": obj({"formula": enum("sum", "count", "last")}, ("formula",)),
            "customer_mapping": obj({"event_payload_key": s, "type": enum("by_id")}, ("event_payload_key", "type")),
            "value_settings": obj({"event_payload_key": s}, ("event_payload_key",)),
            "event_time_window": enum("day", "hour"),
            **EXPAND,
        },
        ("display_name", "event_name", "default_aggregation"),
    )
    store = req.core.store
    if usage.meter_for(req.core, p["event_name"]) is not None:
        raise StripeError(f"An active meter with event_name '{p['event_name']}' already exists.", param="event_name")
    now = req.core.now()
    meter = blank("billing.meter")
    meter.update(
        id=store.new_id("mtr"),
        created=now,
        updated=now,
        display_name=p["display_name"],
        event_name=p["event_name"],
        default_aggregation=p["default_aggregation"],
        customer_mapping=p.get("customer_mapping", {"event_payload_key": "stripe_customer_id", "type": "by_id"}),
        value_settings=p.get("value_settings", {"event_payload_key": "value"}),
        event_time_window=p.get("event_time_window"),
        status="active",
        status_transitions={"deactivated_at": None},
        livemode=False,
    )
    return store.put("billing.meter", meter)


@route("GET", "/v1/billing/meters/{id}")
def get_meter(req: Request) -> dict[str, Any]:
    validate(req.params, EXPAND)
    return req.core.store.get("billing.meter", req.args[0], "billing meter")


@route("POST", "/v1/billing/meters/{id}")
def update_meter(req: Request) -> dict[str, Any]:
    p = validate(req.params, {"display_name": s, **EXPAND})
    meter = req.core.store.get("billing.meter", req.args[0], "billing meter")
    if "display_name" in p:
        meter["display_name"] = p["display_name"]
        meter["updated"] = req.core.now()
    return meter


def _set_status(req: Request, status: str) -> dict[str, Any]:
    validate(req.params, EXPAND)
    meter = req.core.store.get("billing.meter", req.args[0], "billing meter")
    if status == "active" and meter["status"] != "active" and usage.meter_for(req.core, meter["event_name"]):
        raise StripeError(f"Another active meter uses event_name '{meter['event_name']}'.")
    now = req.core.now()
    meter.update(status=status, updated=now)
    meter["status_transitions"]["deactivated_at"] = now if status == "inactive" else None
    return meter


@route("POST", "/v1/billing/meters/{id}/deactivate")
def deactivate_meter(req: Request) -> dict[str, Any]:
    return _set_status(req, "inactive")


@route("POST", "/v1/billing/meters/{id}/reactivate")
def reactivate_meter(req: Request) -> dict[str, Any]:
    return _set_status(req, "active")


@route("GET", "/v1/billing/meters")
def list_meters(req: Request) -> dict[str, Any]:
    p = validate(req.params, {**LIST, "status": enum("active", "inactive")})
    found = [m for m in req.core.store.all("billing.meter") if "status" not in p or m["status"] == p["status"]]
    return req.core.page(found, p, "/v1/billing/meters")


@route("GET", "/v1/billing/meters/{id}/event_summaries")
def event_summaries(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {**LIST, "customer": s, "start_time": i, "end_time": i, "value_grouping_window": enum("day", "hour")},
        ("customer", "start_time", "end_time"),
    )
    meter = req.core.store.get("billing.meter", req.args[0], "billing meter")
    for key in ("start_time", "end_time"):
        if p[key] % 60:
            raise invalid(key, f"{key} must be aligned with minute boundaries (a multiple of 60).")
    if p["end_time"] <= p["start_time"]:
        raise invalid("end_time", "end_time must be after start_time.")
    step = {"day": 86400, "hour": 3600}.get(p.get("value_grouping_window", ""), p["end_time"] - p["start_time"])
    windows = []
    start = p["start_time"]
    while start < p["end_time"]:
        end = min(start + step, p["end_time"])
        value = usage.aggregate(meter, p["customer"], start, end)
        windows.append(
            {
                "id": f"mtrusg_{meter['id']}_{start}",
                "object": "billing.meter_event_summary",
                "aggregated_value": float(value),
                "start_time": start,
                "end_time": end,
                "livemode": False,
                "meter": meter["id"],
            }
        )
        start = end
    return req.core.page(windows, p, f"/v1/billing/meters/{meter['id']}/event_summaries", newest_first=False)


@route("POST", "/v1/billing/meter_events")
def create_meter_event(req: Request) -> dict[str, Any]:
    p = validate(
        req.params,
        {"event_name": s, "payload": _payload, "identifier": s, "timestamp": i, **EXPAND},
        ("event_name", "payload"),
    )
    event = usage.record(req.core, p["event_name"], p["payload"], p.get("identifier"), p.get("timestamp"))
    assert event is not None  # v1 raises on duplicates instead of dropping them
    thresholds.evaluate_customer(req.core, event["_customer"])
    return event


def _payload(path: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise invalid(path, f"Invalid {path}: must be a hash of string keys and string values.")
    return value


# ---- v2: JSON bodies, ISO timestamps, session tokens -------------------------------------------------
@route("POST", "/v2/billing/meter_event_session")
def create_session(req: Request) -> dict[str, Any]:
    if req.body_json not in (None, {}):
        raise StripeError(f"Received unknown parameter: {next(iter(req.body_json))}", code="parameter_unknown")
    now = req.core.now()
    token = f"mes_tok_{secrets.token_hex(16)}"
    expires = now + req.core.config.meter_session_ttl
    req.core.meter_sessions[token] = expires
    return {
        "id": req.core.store.new_id("mes"),
        "object": "v2.billing.meter_event_session",
        "authentication_token": token,
        "created": _iso(now),
        "expires_at": _iso(expires),
        "livemode": False,
    }


class _Shaped(NamedTuple):
    event_name: str
    payload: dict[str, str]
    identifier: str | None
    timestamp: int | None


def _v2_shape(body: Any, prefix: str) -> _Shaped:
    """Check one v2 event's shape: synchronous on both v2 paths (a malformed request is not well-formed)."""
    if not isinstance(body, dict):
        raise invalid(prefix or "body", "Each event must be a JSON object.")
    allowed = {"event_name", "payload", "identifier", "timestamp"}
    for key in body:
        if key not in allowed:
            raise StripeError(
                f"Received unknown parameter: {prefix}{key}", code="parameter_unknown", param=f"{prefix}{key}"
            )
    for key in ("event_name", "payload"):
        if key not in body:
            raise StripeError(
                f"Missing required param: {prefix}{key}.", code="parameter_missing", param=f"{prefix}{key}"
            )
    payload = body["payload"]
    if not isinstance(payload, dict) or not all(isinstance(v, str) for v in payload.values()):
        raise invalid(f"{prefix}payload", "payload must be an object of string values.")
    timestamp = None
    if body.get("timestamp") is not None:
        try:
            parsed = datetime.fromisoformat(str(body["timestamp"]).replace("Z", "+00:00"))
        except ValueError:
            raise invalid(f"{prefix}timestamp", "timestamp must be an RFC 3339 date-time.") from None
        if parsed.tzinfo is None:
            raise invalid(f"{prefix}timestamp", "timestamp must carry a time zone (e.g. Z).")
        timestamp = int(parsed.timestamp())
    identifier = body.get("identifier")
    return _Shaped(str(body["event_name"]), payload, None if identifier is None else str(identifier), timestamp)


def _store(req: Request, shaped: _Shaped, prefix: str, stream: bool) -> dict[str, Any] | None:
    """Validate and store a well-formed event; on the stream an invalid one goes to its error report."""
    identifier = shaped.identifier
    if stream and not identifier:
        identifier = req.core.store.new_id("mev")  # "If not provided, one will be generated"; reports name it
    try:
        event = usage.record(
            req.core,
            shaped.event_name,
            shaped.payload,
            identifier,
            shaped.timestamp,
            prefix=prefix,
            duplicates_raise=not stream,
        )
    except usage.MeterEventError as exc:
        if not stream:
            raise
        meter_errors.record(req.core, exc.meter, exc.report_code, str(identifier), exc.message)
        return None
    if event is not None:  # a dropped duplicate adds no usage
        thresholds.evaluate_customer(req.core, event["_customer"])
    return event


@route("POST", "/v2/billing/meter_event_stream")
def create_stream(req: Request) -> dict[str, Any]:
    body = req.body_json
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise StripeError("Missing required param: events.", code="parameter_missing", param="events")
    extra = set(body) - {"events"}
    if extra:
        raise StripeError(f"Received unknown parameter: {extra.pop()}", code="parameter_unknown")
    if len(body["events"]) > 100:
        raise invalid("events", "A meter event stream request carries at most 100 events.")
    shaped = [_v2_shape(event, f"events[{n}].") for n, event in enumerate(body["events"])]  # all, before any
    for n, one in enumerate(shaped):
        _store(req, one, f"events[{n}].", stream=True)
    return {}  # invalid events are reported later, to event destinations


@route("POST", "/v2/billing/meter_events")
def create_v2_event(req: Request) -> dict[str, Any]:
    event = _store(req, _v2_shape(req.body_json, ""), "", stream=False)
    assert event is not None
    return {
        "object": "v2.billing.meter_event",
        "created": _iso(event["created"]),
        "event_name": event["event_name"],
        "identifier": event["identifier"],
        "livemode": False,
        "payload": event["payload"],
        "timestamp": _iso(event["timestamp"]),
    }
