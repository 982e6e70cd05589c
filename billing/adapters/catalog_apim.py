"""The catalog's APIM adapter: reads products and policies; writes products and policies.

Retries are azure-core's `RetryPolicy` in the management client's pipeline (429, 5xx and
connection errors, exponential backoff, honouring `Retry-After`); nothing is re-implemented here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.mgmt.apimanagement import models as m

from billing.adapters.apim_client import ApimService
from billing.catalog.desired import ApimProductSpec
from billing.catalog.state import ApimProductState, ApimState, CatalogServiceError

T = TypeVar("T")
POLICY_ID = "policy"
# Subscriptions that still give or may give access; cancelled/expired/rejected ones do not count.
LIVE_SUBSCRIPTION_STATES = frozenset({"active", "submitted", "suspended"})


class ApimCatalog:
    """Implements billing.catalog.apply.ApimCatalogWriter and reads the current state."""

    def __init__(self, service: ApimService) -> None:
        self.svc = service
        self.client = service.client
        self.where = (service.resource_group, service.service_name)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except HttpResponseError as exc:
            code = f" (HTTP {exc.status_code})" if exc.status_code else ""
            raise CatalogServiceError(f"apim: {what}: {_first_line(exc.message)}{code}") from None
        except AzureError as exc:
            raise CatalogServiceError(f"apim: {what}: {_first_line(str(exc))}") from None

    def read_state(self, wanted_ids: frozenset[str]) -> ApimState:
        """All products; policies of the wanted ones; live subscription counts of the others."""
        rg, svc = self.where
        contracts = self._call("listing products", lambda: list(self.client.product.list_by_service(rg, svc)))
        products: dict[str, ApimProductState] = {}
        for c in contracts:
            pid = str(c.name)
            policy = self._policy(pid) if pid in wanted_ids else None
            count = None if pid in wanted_ids else self._live_subscriptions(pid)
            products[pid] = ApimProductState(
                id=pid, display_name=c.display_name or "", description=c.description,
                subscription_required=c.subscription_required, approval_required=c.approval_required,
                subscriptions_limit=c.subscriptions_limit, state=c.state, policy_xml=policy,
                subscription_count=count,
            )  # fmt: skip
        return ApimState(products)

    def _policy(self, pid: str) -> str | None:
        rg, svc = self.where

        def get() -> str | None:
            try:
                return self.client.product_policy.get(rg, svc, pid, POLICY_ID, format="rawxml").value
            except ResourceNotFoundError:
                return None

        return self._call(f"reading the policy of product {pid}", get)

    def _live_subscriptions(self, pid: str) -> int:
        rg, svc = self.where
        subs = self._call(
            f"listing subscriptions of product {pid}",
            lambda: list(self.client.product_subscriptions.list(rg, svc, pid)),
        )
        return sum(1 for s in subs if s.state in LIVE_SUBSCRIPTION_STATES)

    def put_product(self, spec: ApimProductSpec, exists: bool) -> None:
        rg, svc = self.where
        contract = m.ProductContract(
            display_name=spec.display_name, description=spec.description,
            subscription_required=spec.subscription_required, approval_required=spec.approval_required,
            subscriptions_limit=spec.subscriptions_limit, state=spec.state,
        )  # fmt: skip
        self._call(
            f"{'updating' if exists else 'creating'} product {spec.product_id}",
            lambda: self.client.product.create_or_update(
                rg, svc, spec.product_id, contract, if_match="*" if exists else None
            ),
        )

    def put_policy(self, product_id: str, policy_xml: str, exists: bool) -> None:
        rg, svc = self.where
        policy = m.PolicyContract(value=policy_xml, format="rawxml")
        self._call(
            f"setting the policy of product {product_id}",
            lambda: self.client.product_policy.create_or_update(
                rg, svc, product_id, POLICY_ID, policy, if_match="*" if exists else None
            ),
        )

    def unpublish_product(self, product_id: str) -> None:
        rg, svc = self.where
        self._call(
            f"unpublishing product {product_id}",
            lambda: self.client.product.update(
                rg, svc, product_id, if_match="*", parameters=m.ProductUpdateParameters(state="notPublished")
            ),
        )


def _first_line(text: str | None) -> str:
    return (text or "unknown error").strip().splitlines()[0] if (text or "").strip() else "unknown error"
