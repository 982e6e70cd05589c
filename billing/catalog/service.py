"""The catalog sync use case: read both services, plan, apply. Adapters come in as parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from billing.catalog.apply import ApimCatalogWriter, Progress, StripeCatalogWriter, apply_plan, idempotency_key
from billing.catalog.desired import DesiredCatalog, desired_catalog
from billing.catalog.migrate import PriceMove, outdated_prices, plan_moves
from billing.catalog.plan import Plan, make_plan
from billing.catalog.state import ApimState, StripeState
from billing.catalog_names import apim_product_id
from billing.models import MonetizationModels


class StripeCatalogPort(StripeCatalogWriter, Protocol):
    def read_state(self) -> StripeState: ...
    def subscriptions_on(self, price_ids: list[str]) -> list[dict[str, Any]]: ...
    def swap_item_price(self, item_id: str, price_id: str, idempotency_key: str) -> None: ...


class ApimCatalogPort(ApimCatalogWriter, Protocol):
    def read_state(self, wanted_ids: frozenset[str]) -> ApimState: ...


@dataclass
class CatalogSync:
    models: MonetizationModels
    stripe: StripeCatalogPort | None  # None: leave Stripe alone (--apim-only)
    apim: ApimCatalogPort | None  # None: leave APIM alone (--stripe-only)
    # The usage area's closing report up to a price move (migrate-prices); None: no usage to report.
    report_usage: Callable[[PriceMove], object] | None = None

    @property
    def desired(self) -> DesiredCatalog:
        return desired_catalog(self.models)

    def plan(self) -> Plan:
        stripe_state = self.stripe.read_state() if self.stripe else None
        wanted = frozenset(apim_product_id(p.id) for p in self.models.products)
        apim_state = self.apim.read_state(wanted) if self.apim else None
        # The policies depend on the instance's tier, known once APIM was read.
        desired = desired_catalog(self.models, apim_state.tier) if apim_state else self.desired
        return make_plan(desired, stripe_state, apim_state)

    def apply(self, plan: Plan, progress: Progress | None = None) -> int:
        return apply_plan(plan, self.stripe, self.apim, progress)

    def plan_price_moves(self) -> list[PriceMove]:
        assert self.stripe is not None
        outdated = outdated_prices(self.desired, self.stripe.read_state())
        if not outdated:
            return []
        return plan_moves(outdated, self.stripe.subscriptions_on(sorted(outdated)))

    def move(self, move: PriceMove) -> None:
        """Report a metered item's usage so far (at the old price), then swap (see billing.catalog.migrate)."""
        assert self.stripe is not None
        if move.metered and self.report_usage is not None:
            self.report_usage(move)
        self.stripe.swap_item_price(move.item_id, move.to_price, idempotency_key(move))
