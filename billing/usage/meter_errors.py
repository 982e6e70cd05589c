"""Stripe's thin meter error events: which subscriptions' periods to confirm again. Pure code.

`v1.billing.meter.error_report_triggered` comes some seconds after the stream accepted a batch
whose events failed validation; its full event (fetched from Stripe) names a sample of the failed
events by identifier under `data.reason.error_types[].sample_errors[].request.identifier`. The
identifiers the app makes carry the subscription and the period start, so each names a period to
confirm (billing.usage.confirm), which compares everything, not only the samples.
`v1.billing.meter.no_meter_found` means events named a meter that does not exist: a catalog problem,
logged for the operator (there is nothing to resend until the meter exists).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billing.usage.confirm import parse_identifier

ERROR_REPORT = "v1.billing.meter.error_report_triggered"
NO_METER = "v1.billing.meter.no_meter_found"
THIN_EVENT_TYPES = frozenset({ERROR_REPORT, NO_METER})


def periods_to_confirm(event: Mapping[str, Any]) -> set[tuple[str, int]]:
    """(subscription id, period start) of every sample error the full event names."""
    reason = (event.get("data") or {}).get("reason") or {}
    found: set[tuple[str, int]] = set()
    for error_type in reason.get("error_types") or []:
        for sample in (error_type or {}).get("sample_errors") or []:
            identifier = ((sample or {}).get("request") or {}).get("identifier")
            parsed = parse_identifier(identifier) if isinstance(identifier, str) else None
            if parsed is not None:
                found.add(parsed)
    return found


def error_codes(event: Mapping[str, Any]) -> list[str]:
    reason = (event.get("data") or {}).get("reason") or {}
    return [str((t or {}).get("code")) for t in reason.get("error_types") or []]
