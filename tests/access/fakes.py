"""In-memory fakes of the access services' own ports (billing.access.ports), for unit tests of the sync.

Each is checked against its Protocol at the end of the module, so a port that gains a method fails the
type check here rather than in a test run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from billing.access.decisions import AccessTarget, ApimState, ApimView
from billing.access.ports import ApimSubscriptions, StripeSubscriptions, UsageReports


class FakeStripe:
    """One subscription (replaced per step by the tests) and what the sync asked Stripe to do."""

    def __init__(self, sub: dict[str, Any]) -> None:
        self.sub = sub
        self.thresholds: list[tuple[str, int]] = []
        self.owed_by_others = 0
        self.ending_others: list[str] = []
        self.cancelled: list[str] = []

    def set_billing_threshold(self, subscription_id: str, amount_minor: int) -> None:
        self.thresholds.append((subscription_id, amount_minor))

    def owed(self, customer_id: str, except_subscription: str) -> int:
        return self.owed_by_others

    def ending(self, customer_id: str, except_subscription: str) -> list[str]:
        return self.ending_others

    def cancel_refused(self, subscription_id: str) -> None:
        self.cancelled.append(subscription_id)

    def retrieve(self, subscription_id: str) -> Mapping[str, Any] | None:
        return self.sub if self.sub["id"] == subscription_id else None

    def list_with_metadata(self) -> Iterator[Mapping[str, Any]]:
        yield self.sub


class FakeApim:
    """APIM subscriptions by id, and the writes made to them in order."""

    def __init__(self) -> None:
        self.subs: dict[str, ApimView] = {}
        self.writes: list[str] = []

    def get(self, sid: str, timeout: float) -> ApimView | None:
        return self.subs.get(sid)

    def create(self, sid: str, target: AccessTarget, state: ApimState, timeout: float) -> None:
        self.writes.append(f"create {state}")
        self.subs[sid] = ApimView(state.value, target.user_id, target.product_id)

    def set_state(self, sid: str, state: ApimState, timeout: float) -> None:
        self.writes.append(f"set {state}")
        old = self.subs[sid]
        self.subs[sid] = ApimView(state.value, old.user_id, old.product_id)

    def reset_quota(self, sid: str, timeout: float) -> None:
        self.writes.append(f"reset quota {sid}")

    def set_scope(self, sid: str, product_id: str, timeout: float) -> None:
        self.writes.append(f"scope {sid} {product_id}")
        old = self.subs[sid]
        self.subs[sid] = ApimView(old.state, old.user_id, product_id)

    def holders(self, user_id: str, product_id: str, timeout: float) -> list[str]:
        return [
            sid
            for sid, v in self.subs.items()
            if (v.user_id, v.product_id) == (user_id, product_id) and v.state in ("submitted", "active", "suspended")
        ]


class FakeUsage:
    """The usage area as the access services see it: closing reports asked for, and how long they take."""

    def __init__(self, takes_seconds: int = 0) -> None:
        self.requests: list[tuple[str, int, int]] = []
        self.takes_seconds = takes_seconds

    def request_closing(self, subscription_id: str, period_start: int, period_end: int) -> None:
        self.requests.append((subscription_id, period_start, period_end))

    def closing_takes_seconds(self) -> int:
        return self.takes_seconds


# mypy proves each fake has every method of its port, with the port's signatures.
_stripe: StripeSubscriptions = FakeStripe({"id": "sub_0"})
_apim: ApimSubscriptions = FakeApim()
_usage: UsageReports = FakeUsage()
