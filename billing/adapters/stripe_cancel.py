"""Cancelling a Stripe subscription with a final invoice of its unbilled usage, idempotently."""

from __future__ import annotations

import stripe

from billing.catalog_names import SUB_META_PRODUCT_SINCE, SUB_META_RETIRING_ITEM

_ENDED = ("canceled", "incomplete_expired")


def cancel_with_final_invoice(client: stripe.StripeClient, subscription_id: str) -> None:
    """`invoice_now`: "a final invoice that invoices for any un-invoiced metered usage"; `prorate=False`:
    the flat fee paid in advance for the period is not credited. An ended subscription is left as it is."""
    try:
        client.v1.subscriptions.cancel(subscription_id, params={"invoice_now": True, "prorate": False})
    except stripe.InvalidRequestError as exc:
        # Stripe answers 400 for a subscription that has ended (cancelled twice, or ended at its period end).
        current = client.v1.subscriptions.retrieve(subscription_id)
        if current.status not in _ENDED:
            raise exc from None


class StripeSubscriptionEnder:
    """`billing.usage.final_invoice.SubscriptionEnder` over the Stripe SDK."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self._stripe = client

    def cancel_with_final_invoice(self, subscription_id: str) -> None:
        cancel_with_final_invoice(self._stripe, subscription_id)

    def retiring_item(self, subscription_id: str) -> tuple[str, int] | None:
        """`billing.usage.plan_change.UsageItemRetirer`: the item an upgrade left to retire, and the upgrade's
        instant (`apim_product_since`), from the subscription's metadata."""
        try:
            current = self._stripe.v1.subscriptions.retrieve(subscription_id)
        except stripe.InvalidRequestError:
            return None
        metadata = current.metadata.to_dict() if current.metadata is not None else {}
        item, since = str(metadata.get(SUB_META_RETIRING_ITEM) or ""), str(metadata.get(SUB_META_PRODUCT_SINCE) or "")
        return (item, int(since)) if item and since.isdigit() else None

    def retire_usage_item(self, subscription_id: str, item_id: str) -> None:
        """`billing.usage.plan_change.UsageItemRetirer`: remove an upgrade's old metered item; flexible billing
        mode bills its reported usage on the next invoice (`create_prorations`)."""
        current = self._stripe.v1.subscriptions.retrieve(subscription_id)
        if current.status in _ENDED:
            return
        items = [item.id for item in current["items"].data]
        params: stripe.params.SubscriptionUpdateParams = {
            "proration_behavior": "create_prorations",
            "metadata": {SUB_META_RETIRING_ITEM: ""},
        }
        if item_id in items:
            params["items"] = [{"id": item_id, "deleted": True}]
        self._stripe.v1.subscriptions.update(
            subscription_id, params=params, options={"idempotency_key": f"retire-{subscription_id}-{item_id}"}
        )
