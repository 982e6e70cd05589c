"""APIM subscriptions for the access area: read, create and change state, each call time-bounded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from azure.core.exceptions import ResourceNotFoundError, ServiceRequestTimeoutError, ServiceResponseTimeoutError
from azure.mgmt.apimanagement.models import (
    QuotaCounterValueUpdateContract,
    SubscriptionCreateParameters,
    SubscriptionUpdateParameters,
)

from billing.access.decisions import AccessTarget, ApimState, ApimView
from billing.access.ports import DependencyTimeout
from billing.adapters.apim_client import ApimService
from billing.policy import has_quota_by_key
from billing.portal.ports import HOLDING_STATES

T = TypeVar("T")
# One retry at most inside a call: the webhook's budget, not the SDK's patience, bounds the wait.
RETRIES = 1
CONNECT_TIMEOUT = 3.0


def _last_segment(resource_id: str | None, collection: str) -> str | None:
    """`.../users/u1` -> "u1" (APIM answers with full resource ids or `/users/u1`)."""
    if not resource_id:
        return None
    parts = resource_id.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    if collection in lowered:
        index = len(lowered) - 1 - lowered[::-1].index(collection)
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


class ApimSubscriptionsAdapter:
    def __init__(self, service: ApimService) -> None:
        self._service = service
        self._tier: str | None = None  # the instance's SKU, read once

    def _call(self, timeout: float, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return operation(
                self._service.resource_group,
                self._service.service_name,
                *args,
                connection_timeout=min(CONNECT_TIMEOUT, timeout),
                read_timeout=timeout,
                retry_total=RETRIES,
                timeout=timeout,
                **kwargs,
            )
        except (ServiceRequestTimeoutError, ServiceResponseTimeoutError) as exc:
            raise DependencyTimeout(f"APIM did not answer within {timeout:.1f} s") from exc

    def get(self, sid: str, timeout: float) -> ApimView | None:
        try:
            contract = self._call(timeout, self._service.client.subscription.get, sid)
        except ResourceNotFoundError:
            return None
        return ApimView(
            state=str(contract.state or ""),
            user_id=_last_segment(contract.owner_id, "users"),
            product_id=_last_segment(contract.scope, "products"),
        )

    def create(self, sid: str, target: AccessTarget, state: ApimState, timeout: float) -> None:
        parameters = SubscriptionCreateParameters(
            owner_id=f"/users/{target.user_id}",
            scope=f"/products/{target.product_id}",
            display_name=target.subscription_name,
            state=state.value,
        )
        # No APIM e-mail: the app tells the consumer about access itself (the portal shows the state).
        self._call(timeout, self._service.client.subscription.create_or_update, sid, parameters, notify=False)

    def set_state(self, sid: str, state: ApimState, timeout: float) -> None:
        self._call(
            timeout, self._service.client.subscription.update, sid, "*", SubscriptionUpdateParameters(state=state.value)
        )

    def set_scope(self, sid: str, product_id: str, timeout: float) -> None:
        # SubscriptionUpdateParameters.scope (REST 2024-05-01): "Scope like /products/{productId} or /apis
        # or /apis/{apiId}". The keys stay; the gateway applies the new product's policy to the next call.
        parameters = SubscriptionUpdateParameters(scope=f"/products/{product_id}")
        self._call(timeout, self._service.client.subscription.update, sid, "*", parameters)

    def primary_key(self, sid: str, timeout: float = 5.0) -> str | None:
        """The subscription's primary key while it is active; None otherwise (no key for unpaid access)."""
        view = self.get(sid, timeout)
        if view is None or view.state != ApimState.ACTIVE.value:
            return None
        keys = self._call(timeout, self._service.client.subscription.list_secrets, sid)
        return str(keys.primary_key) if keys.primary_key else None

    def reset_quota(self, sid: str, timeout: float) -> None:
        """Zero the subscription's quota counter (all its periods), on the tiers that have one."""
        if self._tier is None:
            self._tier = str(self._call(timeout, self._service.client.api_management_service.get).sku.name)
        if not has_quota_by_key(self._tier):
            return  # v2 tiers: the product's `quota` renews on its own 30-day window
        parameters = QuotaCounterValueUpdateContract(calls_count=0, kb_transferred=0)
        try:
            self._call(timeout, self._service.client.quota_by_counter_keys.update, sid, parameters)
        except ResourceNotFoundError:
            return  # no call counted yet: nothing to reset

    def holders(self, user_id: str, product_id: str, timeout: float) -> list[str]:
        found = self._call(timeout, self._service.client.user_subscription.list, user_id)
        return [
            str(sub.name)
            for sub in found
            if _last_segment(sub.scope, "products") == product_id and sub.state in HOLDING_STATES
        ]
