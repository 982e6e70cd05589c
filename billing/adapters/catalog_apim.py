"""The catalog's APIM adapter: reads the tier, products, policies and links; writes them.

Retries are azure-core's `RetryPolicy` in the management client's pipeline (429, 5xx and
connection errors, exponential backoff, honouring `Retry-After`); nothing is re-implemented here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, TypeVar

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.mgmt.apimanagement import models as m

from billing.adapters.apim_client import ApimService
from billing.catalog.desired import ApimProductSpec
from billing.catalog.plan import SetApimLink
from billing.catalog.state import ApimProductState, ApimState, CatalogServiceError
from billing.store.catalog_links import CatalogLinks

T = TypeVar("T")
POLICY_ID = "policy"
# Subscriptions that still give or may give access; cancelled/expired/rejected ones do not count.
LIVE_SUBSCRIPTION_STATES = frozenset({"active", "submitted", "suspended"})


class ApimCatalog:
    """Implements billing.catalog.apply.ApimCatalogWriter and reads the current state."""

    def __init__(self, service: ApimService, links: CatalogLinks) -> None:
        self.svc = service
        self.client = service.client
        self.where = (service.resource_group, service.service_name)
        self.links = links

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except HttpResponseError as exc:
            code = f" (HTTP {exc.status_code})" if exc.status_code else ""
            raise CatalogServiceError(f"apim: {what}: {_first_line(exc.message)}{code}") from None
        except AzureError as exc:
            raise CatalogServiceError(f"apim: {what}: {_first_line(str(exc))}") from None

    def read_state(self, wanted_ids: frozenset[str]) -> ApimState:
        """The tier; all products; policies and links of the wanted ones; subscription counts of the others."""
        rg, svc = self.where
        service = self._call("reading the service", lambda: self.client.api_management_service.get(rg, svc))
        contracts = self._call("listing products", lambda: list(self.client.product.list_by_service(rg, svc)))
        api_ids = self._names("listing APIs", lambda: self.client.api.list_by_service(rg, svc))
        group_ids = self._names("listing groups", lambda: self.client.group.list_by_service(rg, svc))
        products: dict[str, ApimProductState] = {}
        for c in contracts:
            pid = str(c.name)
            wanted = pid in wanted_ids
            made = self.links.made(pid) if wanted else set()
            products[pid] = ApimProductState(
                id=pid,
                display_name=c.display_name or "",
                description=c.description,
                subscription_required=c.subscription_required,
                approval_required=c.approval_required,
                subscriptions_limit=c.subscriptions_limit,
                state=c.state,
                policy_xml=self._policy(pid) if wanted else None,
                subscription_count=None if wanted else self._live_subscriptions(pid),
                apis=self._names(
                    f"listing the APIs of product {pid}", partial(self.client.product_api.list_by_product, rg, svc, pid)
                )
                if wanted
                else frozenset(),
                groups=self._names(
                    f"listing the groups of product {pid}",
                    partial(self.client.product_group.list_by_product, rg, svc, pid),
                )
                if wanted
                else frozenset(),
                catalog_apis=frozenset(t for k, t in made if k == "api"),
                catalog_groups=frozenset(t for k, t in made if k == "group"),
            )
        return ApimState(products, tier=str(service.sku.name), api_ids=api_ids, group_ids=group_ids)

    def _names(self, what: str, listing: Callable[[], Iterable[Any]]) -> frozenset[str]:
        return self._call(what, lambda: frozenset(str(item.name) for item in listing()))

    def set_link(self, op: SetApimLink) -> None:
        rg, svc = self.where
        pid, target = op.product_id, op.target_id
        operations = self.client.product_api if op.kind == "api" else self.client.product_group
        verb = "linking" if op.linked else "unlinking"
        if op.linked:
            self._call(
                f"{verb} {op.kind} {target} to product {pid}", lambda: operations.create_or_update(rg, svc, pid, target)
            )
        else:

            def unlink() -> None:
                try:
                    operations.delete(rg, svc, pid, target)
                except ResourceNotFoundError:
                    return  # gone already: a retried apply

            self._call(f"{verb} {op.kind} {target} from product {pid}", unlink)
        # After APIM: a failure between the two leaves a link the next plan reports, never a lost one.
        self.links.record(pid, op.kind, target, op.linked)

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
            display_name=spec.display_name,
            description=spec.description,
            subscription_required=spec.subscription_required,
            approval_required=spec.approval_required,
            subscriptions_limit=spec.subscriptions_limit,
            state=spec.state,
        )
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
