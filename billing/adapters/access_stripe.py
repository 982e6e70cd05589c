"""Stripe subscriptions for the access area, as plain dicts (the access logic is SDK-free)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import stripe

from billing.access.stripe_objects import invoice_subscription_id
from billing.catalog_names import SUB_META_ACCESS_ENDED, SUB_META_PRODUCT

PAGE_SIZE = 100  # Stripe's maximum page size


class StripeSubscriptionsAdapter:
    def __init__(self, client: stripe.StripeClient) -> None:
        self._stripe = client

    def retrieve(self, subscription_id: str) -> Mapping[str, Any] | None:
        try:
            sub = self._stripe.v1.subscriptions.retrieve(subscription_id, params={"expand": ["latest_invoice"]})
        except stripe.InvalidRequestError as exc:
            if exc.code == "resource_missing":
                return None
            raise
        return self._with_invoice(sub.to_dict())

    def list_with_metadata(self) -> Iterator[Mapping[str, Any]]:
        pages = self._stripe.v1.subscriptions.list(
            params={"status": "all", "limit": PAGE_SIZE, "expand": ["data.latest_invoice"]}
        )
        for sub in pages.auto_paging_iter():
            data = sub.to_dict()
            if (data.get("metadata") or {}).get(SUB_META_PRODUCT):
                yield self._with_invoice(data)

    def set_billing_threshold(self, subscription_id: str, amount_minor: int) -> None:
        # Stripe's billing thresholds: "issue an invoice when a customer's accrued usage in a
        # subscription cycle reaches a specific monetary threshold"; the anchor stays, so the
        # period (and the usage push's windows) are unchanged.
        self._stripe.v1.subscriptions.update(
            subscription_id,
            params={"billing_thresholds": {"amount_gte": amount_minor, "reset_billing_cycle_anchor": False}},
        )

    def owed(self, customer_id: str, except_subscription: str) -> int:
        total = 0
        for status in ("open", "uncollectible", "draft"):
            found = self._stripe.v1.invoices.list(params={"customer": customer_id, "status": status, "limit": 100})
            for invoice in found.auto_paging_iter():
                data = invoice.to_dict()
                if invoice_subscription_id(data) != except_subscription:
                    total += int(data.get("amount_remaining") or 0)
        return total

    def ending(self, customer_id: str, except_subscription: str) -> list[str]:
        found = self._stripe.v1.subscriptions.list(params={"customer": customer_id, "limit": PAGE_SIZE})
        # The default list leaves out canceled subscriptions: those have their final invoice already.
        return [
            sub.id
            for sub in found.auto_paging_iter()
            if sub.id != except_subscription
            and (sub.to_dict().get("metadata") or {}).get(SUB_META_ACCESS_ENDED)
            and sub.status != "incomplete_expired"
        ]

    def cancel_refused(self, subscription_id: str) -> None:
        # prorate: the unused part of what its first invoice charged goes back to the customer's
        # balance; invoice_now: that credit is put on a final invoice at once.
        try:
            self._stripe.v1.subscriptions.cancel(subscription_id, params={"invoice_now": True, "prorate": True})
        except stripe.InvalidRequestError as exc:
            if exc.code != "resource_missing" and "canceled" not in str(exc.user_message or ""):
                raise

    def _with_invoice(self, sub: dict[str, Any]) -> dict[str, Any]:
        # Expansion is what Stripe does; fetch the invoice when a server left it as an id.
        latest = sub.get("latest_invoice")
        if isinstance(latest, str) and latest:
            sub["latest_invoice"] = self._stripe.v1.invoices.retrieve(latest).to_dict()
        return sub
