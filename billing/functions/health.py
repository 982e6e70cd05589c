"""GET /api/health: the app's version and whether its configuration is complete."""

from __future__ import annotations

import azure.functions as func

from billing import __version__, config
from billing.functions.http import json_response

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    # Names of missing settings only: values, even of non-secret settings, are never echoed.
    missing = config.missing_settings()
    body = {"status": "ok" if not missing else "misconfigured", "version": __version__, "missingSettings": missing}
    return json_response(body, status=200 if not missing else 503)
