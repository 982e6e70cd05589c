"""The gateway: subscription keys, the product policy's quota and rate limits, a stub backend.

Every call that can be attributed to a subscription is recorded with its outcome class for reports.
The stub backend answers 200, or the status asked for by `/status/{code}` or the
`X-Emulator-Backend-Status` header, so tests can produce failed calls.
"""

from __future__ import annotations

import json
import re
from typing import Any

from emulators.apim.control import ControlApi
from emulators.apim.core import Emulated
from emulators.apim.httpbase import Request, Response
from emulators.apim.policy import Blocked, ExpressionError, Limit, evaluate_key
from emulators.apim.state import Subscription
from emulators.apim.usage import classify

_STATUS_PATH = re.compile(r"/status/(\d{3})/?$")
KEY_HEADER = "ocp-apim-subscription-key"
KEY_QUERY = "subscription-key"


def _apim_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response.json({"statusCode": status, "message": message}, status, headers)


class Gateway:
    def __init__(self, emu: Emulated, control: ControlApi) -> None:
        self.emu = emu
        self.control = control

    def handle(self, req: Request) -> Response:
        if req.path.startswith("/_emulator/"):
            return self.control.handle(req)
        key = req.header(KEY_HEADER) or req.query.get(KEY_QUERY)
        if not key:
            return _apim_error(401, "Access denied due to missing subscription key. Make sure to include "
                               "subscription key when making requests to an API.")  # fmt: skip
        sub = self.emu.store.subscription_for_key(key)
        if sub is None:
            return _apim_error(401, "Access denied due to invalid subscription key. Make sure to provide a "
                               "valid key for an active subscription.")  # fmt: skip
        response = self._serve(req, sub, key)
        self.emu.usage.record(
            sub.sid, sub.product_id, sub.owner_uid, at=self.emu.now(), outcome=classify(response.status)
        )
        return response

    def _serve(self, req: Request, sub: Subscription, key: str) -> Response:
        if sub.state != "active":
            return _apim_error(403, f"Access denied: the subscription is {sub.state}, not active.")
        blocked = self._apply_limits(req, sub, key)
        if isinstance(blocked, Response):
            return blocked
        return self._backend(req, sub)

    def _apply_limits(self, req: Request, sub: Subscription, key: str) -> Response | None:
        policy = self.emu.store.policies.get(sub.product_id or "")
        if policy is None:
            return None  # a product without a policy has no limits
        context = {
            "subscription_id": sub.sid, "subscription_key": key, "user_id": sub.owner_uid or "",
            "product_id": sub.product_id or "", "ip": "127.0.0.1",
        }  # fmt: skip
        now = self.emu.now()
        limit: Limit
        counter: tuple[str, ...]
        for limit in policy.limits:
            if limit.unresolved is not None:
                return _apim_error(500, f"The policy of product '{sub.product_id}' uses the named value "
                                   f"{{{{{limit.unresolved}}}}}, which this emulator does not define.")  # fmt: skip
            try:
                if limit.counter_key is not None:
                    counter = (limit.kind, "key", evaluate_key(limit.counter_key, context))
                else:
                    counter = (limit.kind, "product", sub.product_id or "", sub.sid)
            except ExpressionError as exc:
                return _apim_error(500, str(exc))
            outcome: Blocked | None = self.emu.limiter.check(limit, counter, now)
            if outcome is not None:
                headers = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else {}
                return _apim_error(outcome.status, outcome.message, headers)
        return None

    @staticmethod
    def _backend(req: Request, sub: Subscription) -> Response:
        asked = req.header("x-emulator-backend-status")
        match = _STATUS_PATH.search(req.path)
        status = int(asked) if asked and asked.isdigit() else int(match.group(1)) if match else 200
        if not 100 <= status <= 599:
            status = 400
        payload: dict[str, Any] = {"method": req.method, "path": req.path, "subscription": sub.sid,
                                   "product": sub.product_id, "status": status}  # fmt: skip
        return Response(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})
