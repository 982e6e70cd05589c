"""Small helpers for HTTP-triggered functions: JSON answers and errors in one shape."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func

JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(payload, separators=(",", ":")),
        status_code=status,
        headers={**JSON_HEADERS, **(headers or {})},
    )


def error_response(status: int, code: str, message: str) -> func.HttpResponse:
    """A short JSON error: `{"error": {"code": ..., "message": ...}}` (never a traceback or a secret)."""
    return json_response({"error": {"code": code, "message": message}}, status=status)
