"""GET /api/health: the app's version and whether its configuration is complete.

`?ready=1` adds readiness: whether each dependency answers within a few seconds (billing.ops.readiness;
names and outcomes only, cached per instance so anonymous callers cannot multiply the calls).
"""

from __future__ import annotations

import math
from typing import Any

import azure.functions as func

from billing import __version__, config
from billing.functions.http import json_response
from billing.ops.readers import readiness_probes
from billing.ops.readiness import ReadinessCheck
from billing.usage.timing import CONFIRM_SETTING, LAG_SETTING, closing_takes_seconds, confirm_delay_of, lag_seconds_of

bp = func.Blueprint()
READINESS = ReadinessCheck(readiness_probes)

# Stripe's invoice finalization grace period is a Dashboard setting that no API reads: the app
# checks each invoice's `automatically_finalizes_at` instead (billing.access.draft_window).
DRAFT_WINDOW_CHECK = (
    "not readable at start: Stripe's API does not expose the invoice finalization grace period; "
    "each invoice.created is checked against its automatically_finalizes_at and a window "
    "shorter than needsDraftWindowMinutes is logged as an error"
)


def closing_report() -> tuple[dict[str, Any], list[str]]:
    """What the closing report needs of Stripe's draft window, and the timing settings that are invalid."""
    invalid = []
    try:
        lag = lag_seconds_of(config.get(LAG_SETTING))
    except ValueError:
        invalid.append(LAG_SETTING)
    try:
        confirm = confirm_delay_of(config.get(CONFIRM_SETTING))
    except ValueError:
        invalid.append(CONFIRM_SETTING)
    if invalid:
        return {"draftWindow": DRAFT_WINDOW_CHECK}, invalid
    needs = math.ceil(closing_takes_seconds(lag, confirm) / 60)
    return {"waitsForUsageDataSeconds": lag, "needsDraftWindowMinutes": needs, "draftWindow": DRAFT_WINDOW_CHECK}, []


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    # Names of missing or invalid settings only: values, even of non-secret settings, are never echoed.
    missing = config.missing_settings()
    closing, invalid = closing_report()
    ok = not missing and not invalid
    body: dict[str, Any] = {
        "status": "ok" if ok else "misconfigured",
        "version": __version__,
        "missingSettings": missing,
        "invalidSettings": invalid,
        "closingReport": closing,
    }
    if req.params.get("ready") in ("1", "true") and ok:
        readiness = READINESS.current()
        body["ready"] = readiness.ready
        body["dependencies"] = readiness.outcomes
        if not readiness.ready:
            body["status"] = "not ready"
        ok = readiness.ready
    return json_response(body, status=200 if ok else 503)
