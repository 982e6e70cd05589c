"""The link between an APIM subscription and its Stripe customer and subscription.

Paid products: the APIM subscription id IS the Stripe subscription id (`sub_...`), so creating
it on `checkout.session.completed` is idempotent and either side finds the other without an index.
One row per APIM subscription: PartitionKey = APIM subscription id, RowKey = "link".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

ROW_KEY = "link"


@dataclass(frozen=True)
class SubscriptionLink:
    apim_subscription_id: str
    apim_user_id: str
    product_id: str
    subscription_name: str
    stripe_customer_id: str
    stripe_subscription_id: str
    stripe_usage_item_id: str  # the metered subscription item ("" for products without usage)
    stripe_status: str  # the Stripe status last applied (active, past_due, ...)
    apim_state: str  # the APIM state last applied (submitted, active, suspended, cancelled)
    current_period_start: int  # unix seconds, Stripe's current period of the subscription
    current_period_end: int
    stripe_state_at: int  # `created` of the newest Stripe event whose state was applied
    canceled_at: int = 0  # unix seconds when the Stripe subscription ended; 0 while it lives

    def with_changes(self, **changes: Any) -> SubscriptionLink:
        return replace(self, **changes)


_FIELDS = {f.name for f in fields(SubscriptionLink)}


def _to_entity(link: SubscriptionLink) -> dict[str, Any]:
    return {"PartitionKey": link.apim_subscription_id, "RowKey": ROW_KEY, **asdict(link)}


def _from_entity(entity: dict[str, Any]) -> SubscriptionLink:
    return SubscriptionLink(**{k: v for k, v in entity.items() if k in _FIELDS})


class SubscriptionLinks:
    """Repository over the subscriptions table. Writes are optimistic (ETag) where it matters."""

    def __init__(self, table: TableClient) -> None:
        self._table = table

    def get(self, apim_subscription_id: str) -> tuple[SubscriptionLink, str] | None:
        """The link and its ETag, or None."""
        try:
            entity = self._table.get_entity(apim_subscription_id, ROW_KEY)
        except ResourceNotFoundError:
            return None
        return _from_entity(dict(entity)), str(entity.metadata["etag"])

    def create_or_replace(self, link: SubscriptionLink) -> None:
        self._table.upsert_entity(_to_entity(link), mode=UpdateMode.REPLACE)

    def create_if_absent(self, link: SubscriptionLink) -> bool:
        """Insert the link; False if a row for the subscription exists already (someone else won)."""
        try:
            self._table.create_entity(_to_entity(link))
        except ResourceExistsError:
            return False
        return True

    def replace_if_unchanged(self, link: SubscriptionLink, etag: str) -> bool:
        """Replace only if nobody wrote since `etag` was read; False if someone did (or deleted it)."""
        try:
            self._table.update_entity(
                _to_entity(link), mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True

    def all(self) -> Iterator[SubscriptionLink]:
        for entity in self._table.query_entities(f"RowKey eq '{ROW_KEY}'"):
            yield _from_entity(dict(entity))
