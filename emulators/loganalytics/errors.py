"""The Query API's error bodies: `{"error": {code, message, [innererror | details]}}` (OneAPI errors).

Each function names its source in README.md ("Behaviours"); the ones marked guess there have no
published example.
"""

from __future__ import annotations

import uuid
from typing import Any

INVALID_PROPERTIES = "The request had some invalid properties"
SIZE_LIMIT_CODE = "-2133196797"  # the innererror code of E_QUERY_RESULT_SET_TOO_LARGE in a real answer


class ApiError(Exception):
    """Raised while answering a request; becomes the HTTP status, body and headers."""

    def __init__(self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status, self.body, self.headers = status, body, headers or {}


def _bad_argument(inner: dict[str, Any]) -> ApiError:
    return ApiError(
        400,
        {
            "error": {
                "message": INVALID_PROPERTIES,
                "code": "BadArgumentError",
                "correlationId": str(uuid.uuid4()),
                "innererror": inner,
            }
        },
    )


def syntax(detail: str) -> ApiError:
    return _bad_argument(
        {"code": "SyntaxError", "message": "Syntax Error", "innererror": {"code": "SYN0002", "message": detail}}
    )


def semantic(code: str, detail: str) -> ApiError:
    return _bad_argument(
        {
            "code": "SemanticError",
            "message": "A semantic error occurred.",
            "innererror": {"code": code, "message": detail},
        }
    )


def invalid_request(detail: str) -> ApiError:
    """A body or parameter the API cannot use (not JSON, no query, a bad timespan)."""
    return _bad_argument({"code": "QueryValidationError", "message": detail})


def unauthenticated() -> ApiError:
    message = "Authentication failed. The 'Authorization' header is missing."
    return ApiError(401, {"error": {"code": "AuthenticationFailed", "message": message}})


def invalid_token() -> ApiError:
    return ApiError(403, {"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}})


def wrong_audience(audience: str, allowed: list[str]) -> ApiError:
    listed = ",".join(f"'{a}'" for a in allowed)
    return ApiError(
        403,
        {
            "error": {
                "code": "InvalidAuthenticationTokenAudience",
                "message": (
                    f"The access token has been obtained from wrong audience or resource '{audience}'. "
                    "It should exactly match "
                    f"(including forward slash) with one of the allowed audiences {listed}."
                ),
            }
        },
    )


def path_not_found() -> ApiError:
    return ApiError(404, {"error": {"message": "The requested path does not exist", "code": "PathNotFoundError"}})


def unknown_workspace() -> ApiError:
    # Verbatim from Microsoft's batch-queries page, its spelling included.
    return ApiError(
        400, {"error": {"code": "FailedToResolveResource", "message": "Resource identity could not be resovled"}}
    )


def throttled(retry_after: int, limit: int, window_seconds: float) -> ApiError:
    return ApiError(
        429,
        {
            "error": {
                "code": "ThrottledError",
                "message": (
                    f"Too many requests: the limit is {limit} queries per {window_seconds:g} seconds "
                    "per user or client "
                    f"address. Retry after {retry_after} seconds."
                ),
            }
        },
        {"Retry-After": str(retry_after)},
    )


def timed_out() -> ApiError:
    inner = {"code": "GatewayTimeout", "message": "Unable to unzip response"}
    return ApiError(504, {"error": {"code": "GatewayTimeout", "message": "Gateway timeout", "innererror": inner}})


def partial(limit_text: str) -> dict[str, Any]:
    """The `error` member of a 200 answer whose rows were cut at a result limit."""
    message = (
        f"Query result set has exceeded the internal {limit_text} (E_QUERY_RESULT_SET_TOO_LARGE; "
        "see https://aka.ms/kustoquerylimits)"
    )
    inner = {"code": SIZE_LIMIT_CODE, "message": message, "severity": 2, "severityName": "Error"}
    return {
        "code": "PartialError",
        "message": "There were some errors when processing your query.",
        "details": [
            {
                "code": "EngineError",
                "message": "Something went wrong processing your query on the server.",
                "innererror": inner,
            }
        ],
    }
