"""What the gateway writes to ApiManagementGatewayLogs: one row per request it answers.

As a diagnostic setting with 100 % sampling does ("The following properties are logged for each API
request"), every request is logged, the refused ones too: an unknown key or a URL that matches no API gives
a row without a subscription. Bulk synthetic usage (`record_usage`) becomes rows with status codes of its
outcome class. Sources: README.md ("Gateway logs").
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from emulators.apim.httpbase import Request, Response
from emulators.apim.state import DEFAULT_KEY_QUERY, Api, Subscription
from emulators.apim.usage import OUTCOMES, classify
from emulators.loganalytics.store import LOOPBACK, BulkCalls, LastError

# [ERR] "Predefined errors for built-in steps" and "for policies": source, reason, message.
OPERATION_NOT_FOUND = LastError(
    "configuration", "OperationNotFound", "Unable to match incoming request to an operation."
)
KEY_NOT_FOUND = LastError(
    "authorization",
    "SubscriptionKeyNotFound",
    "Access denied due to missing subscription key. "
    "Make sure to include subscription key when making requests to this API.",
)
KEY_INVALID = LastError(
    "authorization",
    "SubscriptionKeyInvalid",
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.",
)

# Status codes of each report outcome class, cycled over bulk rows: the common one first, then the edges a
# classifier gets wrong (301, 304 and 307 are successes; 302 and 308 are "other").
OUTCOME_CODES: dict[str, tuple[int, ...]] = {
    "success": (200, 201, 204, 301, 304, 307),
    "blocked": (429, 403, 401),
    "failed": (500, 400, 502, 503, 504),
    "other": (404, 302, 409, 308),
}
assert all(classify(code) == outcome for outcome, codes in OUTCOME_CODES.items() for code in codes)
assert set(OUTCOME_CODES) == set(OUTCOMES)

# The answers the gateway gives itself in bulk rows (no backend call): an inactive subscription's key, a
# quota, a rate limit.
GATEWAY_ERRORS: dict[int, LastError] = {
    401: KEY_INVALID,
    403: LastError("quota", "QuotaExceeded", "Out of call volume quota."),
    429: LastError("rate-limit", "RateLimitExceeded", "Rate limit is exceeded"),
}


@dataclass
class GatewayError(Response):
    """An answer the gateway gives itself, without calling the backend, and what it logs as LastError."""

    last_error: LastError | None = None


@dataclass
class GatewayCall:
    """What the gateway learnt about one request while answering it."""

    api: Api | None = None
    subscription: Subscription | None = None
    product_id: str | None = None


def row(req: Request, call: GatewayCall, response: Response, started: datetime, elapsed_ms: int) -> dict[str, Any]:
    """The request's ApiManagementGatewayLogs row (the workspace adds the columns common to every row)."""
    api, sub = call.api, call.subscription
    values: dict[str, Any] = {
        "TimeGenerated": started,  # "Timestamp of when the gateway starts process the request"
        "CorrelationId": str(uuid.uuid4()),
        "IsRequestSuccess": 200 <= response.status <= 399,  # "status code within 2xx or 3xx range"
        "TotalTime": elapsed_ms,
        "ClientTime": 0,
        "CacheTime": 0,
        "CallerIpAddress": LOOPBACK,
        "Method": req.method,
        "Url": _logged_url(req, api),
        "ClientProtocol": "HTTP/1.1",
        "ResponseCode": response.status,
        "ResponseSize": len(response.body),
        "RequestSize": len(req.body),
        "Cache": "none",
        "ApiId": api.aid if api else "",
        "ApiRevision": "1" if api else "",
        "ProductId": call.product_id or "",
        "UserId": (sub.owner_uid or "") if sub else "",
        "ApimSubscriptionId": sub.sid if sub else "",
        "IsMasterTrace": False,
        "IsTraceAllowed": False,
        "IsTraceExpired": False,
        "IsTraceRequested": False,
    }
    error = response.last_error if isinstance(response, GatewayError) else None
    if error is None and api is not None:  # the backend answered
        values |= {
            "BackendMethod": req.method,
            "BackendUrl": _backend_url(req, api),
            "BackendProtocol": "HTTP/1.1",
            "BackendResponseCode": response.status,
            "BackendTime": elapsed_ms,
        }
    elif error is not None:
        values |= {
            "LastErrorSource": error.source,
            "LastErrorReason": error.reason,
            "LastErrorMessage": error.message,
            "LastErrorSection": error.section,
            "LastErrorElapsed": elapsed_ms,
            "Errors": json.dumps(
                [
                    {
                        "elapsed": elapsed_ms,
                        "source": error.source,
                        "section": error.section,
                        "reason": error.reason,
                        "message": error.message,
                    }
                ]
            ),
        }
    return values


def bulk(sub: Subscription, api: Api | None, *, gateway_url: str, at: datetime, outcome: str, calls: int) -> BulkCalls:
    """`calls` rows of one subscription at `at`, with status codes of the outcome class."""
    if outcome not in OUTCOME_CODES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    return BulkCalls(
        at=at,
        subscription_id=sub.sid,
        product_id=sub.product_id or "",
        user_id=sub.owner_uid or "",
        api_id=api.aid if api else "",
        url=f"{gateway_url}/{api.path}/" if api else f"{gateway_url}/",
        backend_url=(api.service_url or "") if api else "",
        codes=OUTCOME_CODES[outcome],
        calls=calls,
    )


def _logged_url(req: Request, api: Api | None) -> str:
    # The subscription key is a secret: it is never written to the log, whichever parameter carried it.
    secret = api.key_query if api else DEFAULT_KEY_QUERY
    kept = {name: value for name, value in req.query.items() if name.lower() != secret.lower()}
    return req.base_url + req.path + (f"?{urlencode(kept)}" if kept else "")


def _backend_url(req: Request, api: Api) -> str:
    rest = [part for part in req.path.split("/") if part][len(api.segments) :]
    return (api.service_url or "").rstrip("/") + ("/" + "/".join(rest) if rest else "")
