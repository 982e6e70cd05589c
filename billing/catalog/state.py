"""What Stripe and APIM hold now, as read by the adapters: plain data the planner compares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from billing.catalog.desired import PriceTerms


class CatalogServiceError(Exception):
    """A service refused or could not be reached; the message is safe to show (no secrets)."""


@dataclass(frozen=True)
class StripeProductState:
    id: str
    name: str
    description: str | None
    active: bool
    metadata: Mapping[str, str]


@dataclass(frozen=True)
class MeterState:
    id: str
    event_name: str
    display_name: str
    active: bool
    aggregation: str
    customer_key: str
    value_key: str


@dataclass(frozen=True)
class PriceState:
    id: str
    lookup_key: str | None
    active: bool
    metadata: Mapping[str, str]
    terms: PriceTerms | None  # None: a shape this catalog never makes (e.g. tiered)
    created: int = 0


@dataclass(frozen=True)
class StripeState:
    products: Mapping[str, StripeProductState] = field(default_factory=dict)  # by Stripe product id
    meters: tuple[MeterState, ...] = ()
    prices: tuple[PriceState, ...] = ()  # prices of the products above


@dataclass(frozen=True)
class ApimProductState:
    id: str
    display_name: str
    description: str | None
    subscription_required: bool | None
    approval_required: bool | None
    subscriptions_limit: int | None
    state: str | None
    policy_xml: str | None  # None: the product has no policy
    subscription_count: int | None = None  # only read for products not in the models file


@dataclass(frozen=True)
class ApimState:
    products: Mapping[str, ApimProductState] = field(default_factory=dict)
