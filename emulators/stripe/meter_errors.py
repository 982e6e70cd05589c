"""Asynchronous validation of the v2 meter event stream: error reports as thin events.

`POST /v2/billing/meter_event_stream` "Creates meter events. Events are processed asynchronously,
including validation." So the stream answers `{}` for a well-formed request and an invalid event
surfaces later, in a thin event delivered to event destinations (not to v1 webhook endpoints):
`v1.billing.meter.error_report_triggered` (related object: the meter) or
`v1.billing.meter.no_meter_found` (no meter matched the event name).

Batching (guess, from the API reference's example event, whose `validation_start` and
`validation_end` are 10 seconds apart on 10-second boundaries and whose `created` is 2 seconds
later): errors are collected per meter (and once for "no meter") in windows of
`Config.meter_error_window_seconds` aligned on multiples of it, and each window's report is sent
when it ends, by the emulator's clock. `flush` sends every pending report at once, for tests.
Every function runs with the store lock held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from emulators.stripe.clock import REAL
from emulators.stripe.core import Core, iso

ERROR_REPORT = "v1.billing.meter.error_report_triggered"
NO_METER = "v1.billing.meter.no_meter_found"
SAMPLES = 5  # sample errors kept per error type in a report (guess; Stripe: "A list of sample errors")


@dataclass
class Window:
    """The invalid events of one meter (key = its id; "" = no meter) in one validation window."""

    key: str
    meter: dict[str, Any] | None
    start: float
    end: float
    errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # code -> [(identifier, message)]


def _pending(core: Core) -> dict[str, Window]:
    return core.meter_errors


def record(core: Core, meter: dict[str, Any] | None, code: str, identifier: str, message: str) -> None:
    """Add an invalid event to its meter's open window, opening one (and scheduling its report) if needed."""
    pending = _pending(core)
    key = meter["id"] if meter else ""
    window = pending.get(key)
    if window is None:
        now = core.wall()
        size = core.config.meter_error_window_seconds
        start = math.floor(now / size) * size if size > 0 else now
        window = Window(key, meter, start, start + max(size, 0))
        pending[key] = window
        core.schedule(
            REAL, math.ceil(window.end), f"meter error report {key or 'no meter'}", lambda: _send_at_end(core, window)
        )
    window.errors.setdefault(code, []).append((identifier, message))


def flush(core: Core) -> list[dict[str, Any]]:
    """Send every pending report now (its window ends now); the thin events sent, oldest window first."""
    now = core.wall()
    windows = sorted(_pending(core).values(), key=lambda w: w.start)
    return [event for w in windows if (event := _send(core, w, max(w.start, min(w.end, now)))) is not None]


def _send_at_end(core: Core, window: Window) -> None:
    _send(core, window, window.end)


def _send(core: Core, window: Window, end: float) -> dict[str, Any] | None:
    pending = _pending(core)
    if pending.get(window.key) is not window:
        return None  # already sent by flush()
    del pending[window.key]
    total = sum(len(errors) for errors in window.errors.values())
    data = {
        "developer_message_summary": "There is 1 invalid event" if total == 1 else f"There are {total} invalid events",
        "reason": {
            "error_count": total,
            "error_types": [
                {
                    "code": code,
                    "error_count": len(errors),
                    "sample_errors": [
                        {"error_message": message, "request": {"identifier": identifier}}
                        for identifier, message in errors[:SAMPLES]
                    ],
                }
                for code, errors in window.errors.items()
            ],
        },
        "validation_start": iso(window.start),
        "validation_end": iso(end),
    }
    if window.meter is None:
        return core.emit_thin(NO_METER, data, None)
    meter_id = window.meter["id"]
    return core.emit_thin(
        ERROR_REPORT, data, {"id": meter_id, "type": "billing.meter", "url": f"/v1/billing/meters/{meter_id}"}
    )
