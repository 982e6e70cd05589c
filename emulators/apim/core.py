"""What the management API, gateway and portal share: one service's state, clock and settings."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from emulators.apim import gatewaylog
from emulators.apim.entra import TokenIssuer
from emulators.apim.faults import Faults
from emulators.apim.policy import Limiter
from emulators.apim.state import DEFAULT_TIER, V2_TIERS, Api, Store, Subscription
from emulators.apim.usage import UsageStore
from emulators.loganalytics.store import LogStore

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Emulated:
    subscription_id: str
    resource_group: str
    service_name: str
    tokens: TokenIssuer
    faults: Faults
    clock: Clock = system_clock
    report_lag_seconds: float = 0.0
    store: Store = field(default_factory=Store)
    usage: UsageStore = field(default_factory=UsageStore)
    limiter: Limiter = field(default_factory=Limiter)
    tier: str = DEFAULT_TIER  # the service's sku.name
    created: datetime | None = None  # when the service was created (emulator clock)
    gateway_url: str | None = None  # set once the servers listen, for the service resource
    portal_url: str | None = None
    logs: LogStore | None = None  # the Log Analytics workspace the gateway's diagnostic setting writes to

    @property
    def is_v2(self) -> bool:
        return self.tier in V2_TIERS

    @property
    def service_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.ApiManagement/service/{self.service_name}"
        )

    def now(self) -> datetime:
        value = self.clock()
        if value.tzinfo is None:
            raise ValueError("the emulator clock must return timezone-aware datetimes")
        return value

    def record_usage(self, sid: str, calls: int, at: datetime, outcome: str = "success") -> None:
        """Synthetic usage for an existing subscription: one event for reports, `calls` rows for the logs."""
        with self.store.lock:
            sub = self.store.subscriptions.get(sid)
            if sub is None:
                raise LookupError(f"no subscription named {sid!r}; create it first")
            product, owner = sub.product_id, sub.owner_uid
            api = self._api_of(sub)
        self.usage.record(sid, product, owner, at=at, outcome=outcome, calls=calls)
        if self.logs is not None and calls > 0:
            url = self.gateway_url or ""
            self.logs.add_bulk(gatewaylog.bulk(sub, api, gateway_url=url, at=at, outcome=outcome, calls=calls))

    def _api_of(self, sub: Subscription) -> Api | None:
        """The API a subscription's synthetic calls went to: its scope's API, or its product's first one."""
        store = self.store
        if sub.scope.startswith("/apis/"):
            return store.apis.get(sub.scope[len("/apis/") :])
        linked = store.product_apis.get(sub.product_id or "", {}) if sub.product_id else store.apis
        return next((store.apis[aid] for aid in linked if aid in store.apis), None)

    # Shared access tokens, as `POST .../users/{id}/token` returns and `signin-sso` accepts:
    # "{userId}&{yyyyMMddHHmm}&{base64 HMAC-SHA512}" like APIM's.
    def user_token(self, uid: str, expiry: datetime) -> str:
        stamp = expiry.astimezone(UTC).strftime("%Y%m%d%H%M")
        return f"{uid}&{stamp}&{self._token_sig(uid, stamp)}"

    def verify_user_token(self, token: str) -> str | None:
        """The user id if the token is genuine, unexpired and its user exists; otherwise None."""
        parts = token.split("&")
        if len(parts) != 3:
            return None
        uid, stamp, sig = parts
        if not hmac.compare_digest(sig, self._token_sig(uid, stamp)):
            return None
        try:
            expiry = datetime.strptime(stamp, "%Y%m%d%H%M").replace(tzinfo=UTC)
        except ValueError:
            return None
        if expiry <= self.now() or uid not in self.store.users:
            return None
        return uid

    def _token_sig(self, uid: str, stamp: str) -> str:
        digest = hmac.new(self.store.token_signing_key, f"{uid}\n{stamp}".encode(), hashlib.sha512).digest()
        return base64.b64encode(digest).decode()
