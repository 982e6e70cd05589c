"""The gateway: routing to APIs, subscription keys and their scopes, product policy limits, a stub backend.

A request `/{apiPath}/...` goes to the API whose path is its longest prefix; every method and
sub-path of an API is served (the emulator has no operations). Every call that can be attributed to
a subscription is recorded with its outcome class for reports. The stub backend answers 200, or the
status asked for by `/status/{code}` or the `X-Emulator-Backend-Status` header, so tests can produce
failed calls. Every request answered is also written to ApiManagementGatewayLogs (`gatewaylog.py`).
Sources for each answer are in README.md ("Gateway", "Gateway logs").
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from emulators.apim.control import ControlApi
from emulators.apim.core import Emulated
from emulators.apim.expressions import Context, ExpressionError, evaluate_condition, evaluate_key
from emulators.apim.gatewaylog import KEY_INVALID, KEY_NOT_FOUND, OPERATION_NOT_FOUND, GatewayCall, GatewayError
from emulators.apim.gatewaylog import row as log_row
from emulators.apim.httpbase import Request, Response
from emulators.apim.policy import Blocked, Limit, QuotaPeriod
from emulators.apim.state import Api, Product, Subscription
from emulators.apim.usage import classify
from emulators.loganalytics.store import LastError

_STATUS_PATH = re.compile(r"/status/(\d{3})/?$")
MISSING_KEY = (
    "Access denied due to missing subscription key. Make sure to include subscription key when making "
    "requests to an API."
)
INVALID_KEY = (
    "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."
)
NOT_FOUND = "Resource not found"


def _apim_error(status: int, message: str, logged: LastError, headers: dict[str, str] | None = None) -> Response:
    """The gateway's own answer; `logged` is what its log row names as LastError."""
    body = json.dumps({"statusCode": status, "message": message}).encode()
    return GatewayError(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, logged)


def _policy_error(message: str) -> Response:
    # A policy that cannot be evaluated: [ERR] ExpressionValueEvaluationFailure (its source here: a guess).
    return _apim_error(500, message, LastError("policy", "ExpressionValueEvaluationFailure", message))


class Gateway:
    def __init__(self, emu: Emulated, control: ControlApi) -> None:
        self.emu = emu
        self.control = control

    def handle(self, req: Request) -> Response:
        if req.path.startswith("/_emulator/"):
            return self.control.handle(req)
        started, clock, call = self.emu.now(), time.perf_counter(), GatewayCall()
        response = self._answer(req, call)
        if self.emu.logs is not None:
            elapsed_ms = round((time.perf_counter() - clock) * 1000)
            self.emu.logs.append(log_row(req, call, response, started, elapsed_ms))
        return response

    def _answer(self, req: Request, call: GatewayCall) -> Response:
        store = self.emu.store
        api = call.api = store.match_api(req.path)
        if api is None:
            # No API matches the URL: APIM's configuration error OperationNotFound, answered 404.
            return _apim_error(404, NOT_FOUND, OPERATION_NOT_FOUND)
        # "The query parameter is checked only if the header isn't present."
        key = req.header(api.key_header) or req.query.get(api.key_query)
        if not key:
            return self._without_key(req, api, call)
        sub = store.subscription_for_key(key)
        if sub is None:
            return _apim_error(401, INVALID_KEY, KEY_INVALID)  # not attributable to a subscription: not in reports
        call.subscription, call.product_id = sub, sub.product_id
        response = self._serve(req, api, sub, key)
        self.emu.usage.record(
            sub.sid, sub.product_id, sub.owner_uid, at=self.emu.now(), outcome=classify(response.status)
        )
        return response

    def _without_key(self, req: Request, api: Api, call: GatewayCall) -> Response:
        """A call without a key reaches the API through an open product that contains it, or when the API
        itself needs no subscription; otherwise 401. Such calls are not attributable: no report rows."""
        store = self.emu.store
        with store.lock:
            open_product = next(
                (
                    p
                    for p in store.products.values()
                    if not p.subscription_required and api.aid in store.product_apis.get(p.pid, {})
                ),
                None,
            )
        if open_product is None and api.subscription_required:
            return _apim_error(401, MISSING_KEY, KEY_NOT_FOUND)
        call.product_id = open_product.pid if open_product else None
        return self._backend(req, api, None, open_product)

    @staticmethod
    def _in_scope(sub: Subscription, api: Api, linked: dict[str, None]) -> bool:
        if sub.scope == "/apis":
            return True
        if sub.scope.startswith("/apis/"):
            return sub.scope[len("/apis/") :] == api.aid
        return api.aid in linked  # a product's key reaches the product's APIs only

    def _serve(self, req: Request, api: Api, sub: Subscription, key: str) -> Response:
        store = self.emu.store
        with store.lock:
            linked = dict(store.product_apis.get(sub.product_id or "", {}))
            product = store.products.get(sub.product_id or "")
            owner = store.users.get(sub.owner_uid or "")
        # "Check if it's a valid key associated with an active subscription [at an appropriate scope] ...
        # Otherwise, access is denied (401 Access denied error)."
        if sub.state != "active" or not self._in_scope(sub, api, linked):
            return _apim_error(401, INVALID_KEY, KEY_INVALID)
        context = Context(
            subscription_id=sub.sid,
            subscription_key=key,
            subscription_name=sub.display_name,
            user_id=sub.owner_uid,
            user_email=owner.email if owner else None,
            product_id=product.pid if product else None,
            product_name=product.display_name if product else None,
            api_id=api.aid,
            api_name=api.display_name,
            api_path=api.path,
            method=req.method,
            url_path=req.path,
        )
        pending: list[tuple[Limit, QuotaPeriod]] = []
        counted: set[int] = set()  # "If multiple policies would increment the same key value, it is incremented
        # only once per request."
        # Product policies apply to product-scoped keys only: "If you're using an API-scoped subscription
        # or the all-access subscription, any policies configured at the product scope aren't applied".
        refused = self._apply_limits(sub, context, pending, counted) if product is not None else None
        response = refused or self._backend(req, api, sub, product)
        return self._count_on_response(response, context, pending, counted)

    def _apply_limits(
        self, sub: Subscription, context: Context, pending: list[tuple[Limit, QuotaPeriod]], counted: set[int]
    ) -> Response | None:
        policy = self.emu.store.policies.get(sub.product_id or "")
        if policy is None:
            return None  # a product without a policy has no limits
        now, limiter = self.emu.now(), self.emu.limiter
        limit: Limit
        for limit in policy.limits:
            if limit.unresolved is not None:
                return _policy_error(
                    f"The policy of product '{sub.product_id}' uses the named value "
                    f"{{{{{limit.unresolved}}}}}, which this emulator does not define."
                )
            outcome: Blocked | QuotaPeriod | None
            try:
                if limit.is_rate:
                    counter = (
                        (limit.kind, "key", evaluate_key(limit.counter_key, context))
                        if limit.counter_key
                        else (limit.kind, "product", sub.product_id or "", sub.sid)
                    )
                    outcome = limiter.check_rate(limit, counter, now)
                elif limit.kind == "quota":
                    # "The start of each period is calculated relative to the start time of the subscription."
                    start = sub.start_date or sub.created_date
                    outcome = limiter.check_quota(limit, ("quota", sub.product_id or "", sub.sid), now, start)
                else:
                    assert limit.counter_key is not None  # parse_policy requires it for quota-by-key
                    key = evaluate_key(limit.counter_key, context)
                    outcome = limiter.check_quota_by_key(limit, key, now, frozenset(counted))
            except ExpressionError as exc:
                return _policy_error(str(exc))
            if isinstance(outcome, Blocked):
                headers = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else {}
                # [ERR]: rate-limit RateLimitExceeded, quota QuotaExceeded; the policy's name is the source.
                reason = "RateLimitExceeded" if outcome.status == 429 else "QuotaExceeded"
                return _apim_error(
                    outcome.status, outcome.message, LastError(limit.kind, reason, outcome.message), headers
                )
            if isinstance(outcome, QuotaPeriod):
                if limit.increment_condition is not None:
                    pending.append((limit, outcome))  # counted once the response is known
                elif id(outcome) not in counted:
                    counted.add(id(outcome))
                    limiter.count(outcome, limit.increment_count)
        return None

    def _count_on_response(
        self, response: Response, context: Context, pending: list[tuple[Limit, QuotaPeriod]], counted: set[int]
    ) -> Response:
        """quota-by-key's increment-condition is evaluated on the response: calls it rejects are not counted."""
        context.status_code = response.status
        for limit, period in pending:
            assert limit.increment_condition is not None
            try:
                counts = evaluate_condition(limit.increment_condition, context)
            except ExpressionError as exc:
                return _policy_error(str(exc))
            if counts and id(period) not in counted:
                counted.add(id(period))
                self.emu.limiter.count(period, limit.increment_count)
        return response

    @staticmethod
    def _backend(req: Request, api: Api, sub: Subscription | None, product: Product | None) -> Response:
        asked = req.header("x-emulator-backend-status")
        match = _STATUS_PATH.search(req.path)
        status = int(asked) if asked and asked.isdigit() else int(match.group(1)) if match else 200
        if not 100 <= status <= 599:
            status = 400
        payload: dict[str, Any] = {
            "method": req.method,
            "path": req.path,
            "api": api.aid,
            "subscription": sub.sid if sub else None,
            "product": product.pid if product else None,
            "status": status,
        }
        return Response(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})
