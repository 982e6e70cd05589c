"""What Stripe and APIM should hold for a revenue model: pure derivation, no network.

Stripe, per paid product: product `apim-<id>`; a licensed monthly price for the flat fee (if
any); a meter of its own plus a metered monthly price for usage beyond the included calls (if
metered). Free products exist only in APIM. Every APIM product carries the generated policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from billing import catalog_names as names
from billing.models import MonetizationModels, Product
from billing.policy import DEFAULT_TIER, product_policy_xml

BILLING_INTERVAL = "month"
METER_AGGREGATION = "sum"


class PriceRole(StrEnum):
    FLAT = "flat"  # licensed, billed in advance
    USAGE = "usage"  # metered, billed in arrears


@dataclass(frozen=True)
class PriceTerms:
    """Everything about a Stripe price that Stripe will never let us change in place."""

    product: str  # Stripe product id
    currency: str
    interval: str
    usage_type: str  # "licensed" | "metered"
    unit_amount_decimal: Decimal  # minor units (fractions allowed for per-call prices)
    divide_by: int | None = None  # transform_quantity, always rounded up
    meter_event_name: str | None = None  # metered prices: the meter they read


@dataclass(frozen=True)
class StripeProductSpec:
    product_id: str  # the model's id
    stripe_id: str
    name: str
    description: str

    @property
    def metadata(self) -> dict[str, str]:
        return {names.PRODUCT_METADATA_KEY: self.product_id}


@dataclass(frozen=True)
class MeterSpec:
    product_id: str
    event_name: str
    display_name: str


@dataclass(frozen=True)
class PriceSpec:
    product_id: str
    role: PriceRole
    lookup_key: str
    terms: PriceTerms
    nickname: str

    @property
    def metadata(self) -> dict[str, str]:
        return {names.PRODUCT_METADATA_KEY: self.product_id, names.PRICE_ROLE_METADATA_KEY: self.role.value}


@dataclass(frozen=True)
class ApimProductSpec:
    product_id: str
    display_name: str
    description: str
    policy_xml: str
    apis: tuple[str, ...] = ()  # API ids the product's keys may call
    groups: tuple[str, ...] = ()  # group ids that see the product on the developer portal
    subscription_required: bool = True
    approval_required: bool = False
    # One subscription per product per consumer: a customer's meter events for a product then
    # belong to exactly one Stripe subscription, so usage can never be billed twice.
    subscriptions_limit: int = 1
    state: str = "published"


@dataclass(frozen=True)
class PortalConfigSpec:
    """What Stripe's customer portal offers a consumer (the billing page links to it).

    Invoices and payment methods; cancellation only at the period end, because an immediate one
    would not invoice the period's usage (Stripe's `invoice_now` defaults to false) while the
    period-end invoice does; no plan switching and no customer details, which APIM would never
    learn of (plans change through the portal's own pages, names in APIM).
    """

    headline: str = "Invoices and payment methods of your API subscriptions"
    cancel_mode: str = "at_period_end"

    def features(self) -> dict[str, object]:
        return {
            "invoice_history": {"enabled": True},
            "payment_method_update": {"enabled": True},
            "subscription_cancel": {"enabled": True, "mode": self.cancel_mode, "proration_behavior": "none"},
            "subscription_update": {"enabled": False},
            "customer_update": {"enabled": False},
        }

    @property
    def metadata(self) -> dict[str, str]:
        return {names.PORTAL_CONFIG_METADATA_KEY: "portal"}


@dataclass(frozen=True)
class DesiredCatalog:
    stripe_products: tuple[StripeProductSpec, ...]
    meters: tuple[MeterSpec, ...]
    prices: tuple[PriceSpec, ...]
    apim_products: tuple[ApimProductSpec, ...]
    portal: PortalConfigSpec = PortalConfigSpec()


def desired_catalog(models: MonetizationModels, apim_tier: str = DEFAULT_TIER) -> DesiredCatalog:
    """What both services should hold; the APIM policies depend on the instance's tier (SKU)."""
    paid = [p for p in models.products if p.is_paid]
    return DesiredCatalog(
        stripe_products=tuple(_stripe_product(p) for p in paid),
        meters=tuple(_meter(p) for p in paid if p.is_metered),
        prices=tuple(spec for p in paid for spec in _prices(p)),
        apim_products=tuple(_apim_product(p, apim_tier) for p in models.products),
    )


def _stripe_product(p: Product) -> StripeProductSpec:
    return StripeProductSpec(p.id, names.stripe_product_id(p.id), p.display_name, p.description)


def _meter(p: Product) -> MeterSpec:
    return MeterSpec(p.id, names.meter_event_name(p.id), f"{p.display_name} billable calls beyond included")


def _prices(p: Product) -> list[PriceSpec]:
    stripe_id = names.stripe_product_id(p.id)
    specs: list[PriceSpec] = []
    if p.flat_fee_minor > 0:
        terms = PriceTerms(stripe_id, p.currency, BILLING_INTERVAL, "licensed", Decimal(p.flat_fee_minor))
        specs.append(
            PriceSpec(p.id, PriceRole.FLAT, names.flat_price_lookup_key(p.id), terms, f"{p.display_name} monthly fee")
        )
    if p.usage_price is not None:
        event = names.meter_event_name(p.id)
        if p.block_size is not None:
            # Unit: each started block of overage calls costs the block price.
            block_minor = p.usage_price.amount * (Decimal(10) ** p.currency_exponent)
            terms = PriceTerms(
                stripe_id,
                p.currency,
                BILLING_INTERVAL,
                "metered",
                block_minor,
                divide_by=p.block_size,
                meter_event_name=event,
            )
        else:
            per_call = p.usage_price.minor_per_call(p.currency_exponent)
            # Exact: the models file guarantees at most 12 decimal places (Stripe's limit).
            amount = Decimal(per_call.numerator) / Decimal(per_call.denominator)
            terms = PriceTerms(stripe_id, p.currency, BILLING_INTERVAL, "metered", amount, meter_event_name=event)
        specs.append(
            PriceSpec(p.id, PriceRole.USAGE, names.usage_price_lookup_key(p.id), terms, f"{p.display_name} usage")
        )
    return specs


def _apim_product(p: Product, tier: str) -> ApimProductSpec:
    return ApimProductSpec(
        names.apim_product_id(p.id),
        p.display_name,
        p.description,
        product_policy_xml(p, tier),
        apis=p.apis,
        groups=p.groups,
    )


def decimal_text(value: Decimal) -> str:
    """Stripe's decimal-string form: no exponent, no trailing zeros ("0.15", "74995")."""
    text = format(value.normalize(), "f")
    return text
