"""`LogAnalyticsServer`: the Log Analytics Query API (`/v1/workspaces/{id}/query`, `/v1/$batch`) on loopback.

It answers what `azure.monitor.query.LogsQueryClient` asks: a bearer token from the emulator's issuer,
one workspace, KQL over ApiManagementGatewayLogs. Served over HTTPS with the APIM emulator's certificate,
because azure-core refuses to send a bearer token to an http:// URL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from emulators.apim.httpbase import LoopbackServer, Request, Response
from emulators.loganalytics import errors, timespan
from emulators.loganalytics.errors import ApiError
from emulators.loganalytics.limits import Limits, Throttle
from emulators.loganalytics.query import QueryRequest, execute
from emulators.loganalytics.store import LOOPBACK, LogStore

# The audiences the real API takes ("Use resource=https://api.loganalytics.io"; LogsQueryClient's default is
# its endpoint, so https://api.loganalytics.azure.com too); the emulator also takes its own base URL.
PUBLIC_AUDIENCES = ("https://api.loganalytics.io", "https://api.loganalytics.azure.com")
DEFAULT_WORKSPACE_ID = "33333333-3333-3333-3333-333333333333"
_QUERY_PATH = re.compile(r"^/v1/workspaces/(?P<workspace>[^/]+)/query/?$")


class Tokens(Protocol):
    def audience(self, authorization: str | None) -> str | None:
        """The audience of a bearer token this issuer gave and that has not expired; else None."""


class LogAnalyticsServer:
    def __init__(
        self,
        store: LogStore,
        *,
        clock: Callable[[], datetime],
        tokens: Tokens,
        workspace_id: str = DEFAULT_WORKSPACE_ID,
        limits: Limits | None = None,
        port: int = 0,
    ) -> None:
        self.store, self.workspace_id = store, workspace_id
        self.limits = limits or Limits()
        self._clock, self._tokens, self._port = clock, tokens, port
        self._throttle = Throttle(self.limits.requests_per_window, self.limits.window_seconds)
        self._server: LoopbackServer | None = None

    # Lifecycle ----------------------------------------------------------------------------------
    def start(self, tls: tuple[str, str]) -> LogAnalyticsServer:
        if self._server is None:
            server = LoopbackServer(self.handle, self._port, tls=tls)
            server.start()
            self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        """https://127.0.0.1:{port}, without the API version."""
        if self._server is None:
            raise RuntimeError("the Log Analytics emulator is not running; start the APIM emulator first")
        return self._server.url

    @property
    def endpoint(self) -> str:
        """What LogsQueryClient takes as `endpoint` (and LOG_ANALYTICS_ENDPOINT holds): the base URL + /v1."""
        return f"{self.url}/v1"

    def set_limits(self, limits: Limits) -> None:
        """New limits from now on (and a fresh throttle window)."""
        self.limits = limits
        self._throttle = Throttle(limits.requests_per_window, limits.window_seconds)

    # Requests -----------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        try:
            match = _QUERY_PATH.match(req.path)
            batch = req.path.rstrip("/") == "/v1/$batch"
            if not (batch and req.method == "POST") and not (match and req.method in ("GET", "POST")):
                raise errors.path_not_found()
            caller = self._authenticate(req)
            if batch:
                return Response(200, self._batch(req, caller), _JSON)
            assert match is not None
            if req.method == "POST" and (not req.body or "application/json" not in (req.header("content-type") or "")):
                return Response(200)  # "missing either the JSON body or the Content-Type ... an empty 200 response"
            params = req.json() if req.method == "POST" else req.query
            status, body = self._query(match.group("workspace"), params, req.header("prefer"), caller)
            return Response(status, body or b"", _JSON if body else {})
        except json.JSONDecodeError as exc:
            return _error(errors.invalid_request(f"the body is not valid JSON: {exc.msg}"))
        except UnicodeDecodeError:
            return _error(errors.invalid_request("the body is not UTF-8 text"))
        except ApiError as exc:
            return _error(exc)

    def _authenticate(self, req: Request) -> str:
        """The caller's throttling key; raises the documented 401 / 403 answers."""
        authorization = req.header("authorization")
        if not authorization:
            raise errors.unauthenticated()
        audience = self._tokens.audience(authorization)
        if audience is None:
            raise errors.invalid_token()
        allowed = [*PUBLIC_AUDIENCES, self.url]
        if audience.rstrip("/") not in allowed:
            raise errors.wrong_audience(audience, allowed)
        # Every token of the emulator's issuer is the same identity, and every caller is on loopback.
        return f"identity@{LOOPBACK}"

    def _query(self, workspace: str, params: Any, prefer: str | None, caller: str) -> tuple[int, bytes | None]:
        """(status, body) of one query; 204 without a body while the workspace has no data."""
        if workspace.lower() != self.workspace_id.lower():
            raise errors.unknown_workspace()
        if not isinstance(params, dict):
            raise errors.invalid_request("the body must be a JSON object with 'query' (and optionally 'timespan')")
        query, span, extra = params.get("query"), params.get("timespan"), params.get("workspaces")
        if not isinstance(query, str) or not query.strip():
            raise errors.invalid_request("'query' is required: the KQL text to run")
        if span is not None and not isinstance(span, str):
            raise errors.invalid_request("'timespan' must be an ISO 8601 duration or interval string")
        if extra and any(str(w).lower() != self.workspace_id.lower() for w in _listed(extra)):
            raise errors.unknown_workspace()
        now = self._clock()
        try:
            window = timespan.parse(span, now) if span else None
        except timespan.TimespanError as exc:
            raise errors.invalid_request(str(exc)) from None
        wait, statistics = _preferences(prefer)
        retry_after = self._throttle.admit(caller, now.timestamp())
        if retry_after is not None:
            raise errors.throttled(retry_after, self.limits.requests_per_window, self.limits.window_seconds)
        if not self.store.has_data(now):
            return 204, None  # "If a workspace has no data in it, the API returns 204 No Content."
        request = QueryRequest(query, window, wait, statistics)
        return 200, execute(self.store, request, now=now, limits=self.limits)

    def _batch(self, req: Request, caller: str) -> bytes:
        try:
            payload = req.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise errors.invalid_request("the batch body is not valid JSON") from None
        requests = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(requests, list) or not all(isinstance(r, dict) for r in requests):
            raise errors.invalid_request('the batch body must be {"requests": [{id, workspace, path, body}, ...]}')
        ids = [r.get("id") for r in requests]
        if any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
            raise errors.invalid_request("every batch request needs an id, and the ids must differ")
        answers = []
        for item in requests:
            status, body = self._batch_item(item, caller)
            answers.append(b'{"id":%s,"status":%d,"body":%s}' % (json.dumps(item["id"]).encode(), status, body))
        return b'{"responses":[' + b",".join(answers) + b"]}"

    def _batch_item(self, item: dict[str, Any], caller: str) -> tuple[int, bytes]:
        method = str(item.get("method") or "GET").upper()  # "If no method is included, batching defaults to GET"
        split = urlsplit(str(item.get("path") or ""))
        headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
        try:
            if split.path.rstrip("/") != "/query" or method not in ("GET", "POST"):
                raise errors.path_not_found()
            # "On GET requests, the API ignores the body parameter of the request object."
            params = item.get("body") if method == "POST" else {k: v[0] for k, v in parse_qs(split.query).items()}
            status, body = self._query(str(item.get("workspace") or ""), params, headers.get("prefer"), caller)
        except ApiError as exc:
            return exc.status, json.dumps(exc.body).encode()
        if body is None:  # batch-queries page: a 204 item carries {"error": {"code": "WorkspaceNotPlacedError"}}
            return status, b'{"error":{"code":"WorkspaceNotPlacedError"}}'
        return status, body


_JSON = {"Content-Type": "application/json; charset=utf-8"}


def _error(exc: ApiError) -> Response:
    return Response.json(exc.body, exc.status, exc.headers) if exc.body else Response(exc.status, b"", exc.headers)


def _listed(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [v.strip() for v in str(value).split(",") if v]


def _preferences(prefer: str | None) -> tuple[float | None, bool]:
    """(wait seconds, include-statistics) from `Prefer: wait=30, include-statistics=true, include-render=true`."""
    wait, statistics = None, False
    for part in (prefer or "").split(","):
        name, _, value = part.strip().partition("=")
        name, value = name.strip().lower(), value.strip().lower()
        if name == "wait" and value:
            try:
                wait = float(value)
            except ValueError:
                raise errors.invalid_request(f"Prefer: wait={value!r} is not a number of seconds") from None
            if wait <= 0:
                raise errors.invalid_request("Prefer: wait must be a number of seconds above 0")
        elif name == "include-statistics":
            statistics = value == "true"
    return wait, statistics
