"""The revenue model: the products of payment/monetizationModels.json, validated.

One file defines every product: its price (flat fee, included calls, usage price, blocks) and
its quality of service (quota, rate limit). Everything else (pricing, Stripe catalog, APIM
policies) is derived from these models. Pure code: no network, no SDK imports.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# ISO 4217 currencies the catalog accepts, with the number of digits of their minor unit.
# Stripe's zero-decimal currencies have exponent 0.
CURRENCY_EXPONENTS: dict[str, int] = {
    "usd": 2,
    "eur": 2,
    "gbp": 2,
    "chf": 2,
    "cad": 2,
    "aud": 2,
    "nzd": 2,
    "sek": 2,
    "nok": 2,
    "dkk": 2,
    "pln": 2,
    "czk": 2,
    "sgd": 2,
    "hkd": 2,
    "inr": 2,
    "brl": 2,
    "mxn": 2,
    "zar": 2,
    "jpy": 0,
    "krw": 0,
}

# Seconds in each named period. APIM quotas renew after a fixed number of seconds counted from
# the subscription's start, so a "month" is 30 days: the closest period APIM can express.
PERIOD_SECONDS: dict[str, int] = {
    "hour": 3_600,
    "day": 86_400,
    "week": 604_800,
    "month": 2_592_000,
}

MAX_TRIAL_DAYS = 730
NonNegativeMoney = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]
# APIM resource names (API and group ids): letters, digits, "-", "_" and ".", up to 80 characters.
_APIM_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$"


class PricingModel(StrEnum):
    FREE = "Free"  # nothing to pay, ever; no payment method asked for
    FREEMIUM = "Freemium"  # some calls free each period, the rest metered
    METERED = "Metered"  # every call metered
    TIER = "Tier"  # flat fee per period, hard quota, no usage charge
    TIER_WITH_OVERAGE = "TierWithOverage"  # flat fee with included calls, the rest metered
    UNIT = "Unit"  # a price per started block of calls, one block always billed


class CallOutcome(StrEnum):
    """Outcome classes of APIM's reports that a product may bill. Blocked calls never are."""

    SUCCESS = "success"
    FAILED = "failed"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class UsagePrice(_Model):
    """`amount` (in the currency's major unit, e.g. dollars) for every `per_calls` calls."""

    amount: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)]
    per_calls: Annotated[int, Field(gt=0)]

    def minor_per_call(self, exponent: int) -> Fraction:
        """Exact price of one call in minor units (e.g. 3/20 of a cent for $0.15 per 100 calls)."""
        return Fraction(self.amount) * Fraction(10**exponent, self.per_calls)


class Quota(_Model):
    """Hard cap on calls per renewal period, enforced by APIM (calls beyond it are blocked)."""

    calls: Annotated[int, Field(gt=0)]
    period: Literal["hour", "day", "week", "month"] = "month"

    @property
    def renewal_period_seconds(self) -> int:
        return PERIOD_SECONDS[self.period]


class RateLimit(_Model):
    calls_per_minute: Annotated[int, Field(gt=0)]


class Product(_Model):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,79}$")]
    display_name: Annotated[str, Field(min_length=1, max_length=300)]
    description: Annotated[str, Field(min_length=1, max_length=1000)]
    pricing_model: PricingModel
    currency: Annotated[str, Field(pattern=r"^[a-z]{3}$")] = "usd"
    flat_fee: NonNegativeMoney = Decimal(0)
    included_calls: Annotated[int, Field(ge=0)] = 0
    usage_price: UsagePrice | None = None
    block_size: Annotated[int, Field(gt=0)] | None = None
    billable_outcomes: Annotated[tuple[CallOutcome, ...], Field(min_length=1)] = (CallOutcome.SUCCESS,)
    quota: Quota | None = None
    rate_limit: RateLimit | None = None
    # What the product sells and who sees it in APIM: the ids of the APIs a key of the product may
    # call, and of the groups to whom the developer portal shows it (Microsoft: new products are
    # visible only to Administrators, and a key reaches only its product's APIs).
    apis: Annotated[tuple[Annotated[str, Field(pattern=_APIM_NAME)], ...], Field(min_length=1)]
    groups: tuple[Annotated[str, Field(pattern=_APIM_NAME)], ...] = ("developers", "guests")
    # Metered products: once a period's accrued usage reaches this amount, Stripe invoices it at once
    # (a billing threshold), so a card that never pays cannot run up unbounded usage.
    spending_limit: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None
    # Paid products: days of free trial before the first charge, one trial per consumer and product.
    # Stripe: "The trial period must be 730 days (2 years) or less" (docs.stripe.com/billing/subscriptions/trials).
    trial_days: Annotated[int, Field(strict=True, gt=0, le=MAX_TRIAL_DAYS)] | None = None

    @property
    def currency_exponent(self) -> int:
        return CURRENCY_EXPONENTS[self.currency]

    @property
    def flat_fee_minor(self) -> int:
        return int(self.flat_fee * (Decimal(10) ** self.currency_exponent))

    @property
    def is_paid(self) -> bool:
        """Whether the product is sold through Stripe (Free products exist only in APIM)."""
        return self.pricing_model is not PricingModel.FREE

    @property
    def is_metered(self) -> bool:
        return self.usage_price is not None

    @property
    def spending_limit_minor(self) -> int | None:
        if self.spending_limit is None:
            return None
        return int(self.spending_limit * (Decimal(10) ** self.currency_exponent))

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        problems = _consistency_problems(self) + _visibility_problems(self)
        if problems:
            # One line per problem; the loader reports each with the product and field it names.
            raise ValueError("\n".join(problems))
        return self


def _consistency_problems(p: Product) -> list[str]:
    """Rules that tie the fields to the pricing model; each message names the field and the fix."""
    if p.currency not in CURRENCY_EXPONENTS:
        supported = ", ".join(sorted(CURRENCY_EXPONENTS))
        return [f"currency: '{p.currency}' is not supported; use one of {supported}"]
    rules = (
        _flat_fee_problems,
        _usage_price_problems,
        _included_calls_problems,
        _quota_problems,
        _block_problems,
        _spending_limit_problems,
        _trial_problems,
    )
    return [problem for rule in rules for problem in rule(p)]


_FLAT_FEE_MODELS = frozenset({PricingModel.TIER, PricingModel.TIER_WITH_OVERAGE, PricingModel.UNIT})
_USAGE_MODELS = frozenset(
    {PricingModel.FREEMIUM, PricingModel.METERED, PricingModel.TIER_WITH_OVERAGE, PricingModel.UNIT}
)
_INCLUDED_CALLS_MODELS = frozenset({PricingModel.FREEMIUM, PricingModel.TIER_WITH_OVERAGE, PricingModel.UNIT})
_QUOTA_MODELS = frozenset({PricingModel.FREE, PricingModel.TIER})


def _flat_fee_problems(p: Product) -> list[str]:
    exponent = CURRENCY_EXPONENTS[p.currency]
    if p.flat_fee != p.flat_fee.quantize(Decimal(1).scaleb(-exponent)):
        return [f"flatFee: {p.flat_fee} has more decimals than {p.currency.upper()} allows ({exponent})"]
    if p.pricing_model in _FLAT_FEE_MODELS and p.flat_fee <= 0:
        return [f'flatFee: a {p.pricing_model} product needs a flat fee above 0, e.g. "14.95"']
    if p.pricing_model not in _FLAT_FEE_MODELS and p.flat_fee != 0:
        return [f"flatFee: a {p.pricing_model} product has no flat fee; use 0 or choose Tier/TierWithOverage"]
    return []


def _usage_price_problems(p: Product) -> list[str]:
    if p.pricing_model in _USAGE_MODELS and p.usage_price is None:
        example = '{"amount": "0.15", "perCalls": 100}'
        return [f"usagePrice: a {p.pricing_model} product needs a usage price, e.g. {example}"]
    if p.pricing_model not in _USAGE_MODELS and p.usage_price is not None:
        return [f"usagePrice: a {p.pricing_model} product bills no usage; remove usagePrice"]
    if p.usage_price is not None and p.pricing_model is not PricingModel.UNIT:
        per_call = p.usage_price.minor_per_call(CURRENCY_EXPONENTS[p.currency])
        # Stripe's unit_amount_decimal holds at most 12 decimal places of a minor unit.
        if (per_call * 10**12).denominator != 1:
            return [
                f"usagePrice: {p.usage_price.amount} per {p.usage_price.per_calls:,} calls is not a whole number "
                "of 10^-12 minor units per call, which Stripe needs; choose perCalls such as 100 or 1000"
            ]
    return []


def _included_calls_problems(p: Product) -> list[str]:
    if p.pricing_model in _INCLUDED_CALLS_MODELS and p.included_calls <= 0:
        return [f"includedCalls: a {p.pricing_model} product needs includedCalls above 0"]
    if p.pricing_model not in _INCLUDED_CALLS_MODELS and p.included_calls != 0:
        return [f"includedCalls: a {p.pricing_model} product has no included calls; use 0"]
    return []


def _quota_problems(p: Product) -> list[str]:
    if p.pricing_model in _QUOTA_MODELS and p.quota is None:
        example = '{"calls": 50000, "period": "month"}'
        return [f"quota: a {p.pricing_model} product must have a hard quota, e.g. {example}"]
    return []


def _block_problems(p: Product) -> list[str]:
    if p.pricing_model is not PricingModel.UNIT:
        if p.block_size is not None:
            return [
                f"blockSize: only Unit products are billed in blocks; remove it from this {p.pricing_model} product"
            ]
        return []
    if p.block_size is None:
        return ["blockSize: a Unit product needs blockSize (calls per billed block)"]
    if p.usage_price is not None and p.usage_price.per_calls != p.block_size:
        return [f"usagePrice.perCalls: a Unit product is priced per block; set it to blockSize ({p.block_size})"]
    if p.included_calls != p.block_size:
        return [f"includedCalls: a Unit product bills one block in advance; set it to blockSize ({p.block_size})"]
    return []


def _visibility_problems(p: Product) -> list[str]:
    problems = []
    if len(set(p.apis)) != len(p.apis):
        problems.append("apis: an API is named more than once")
    if len(set(p.groups)) != len(p.groups):
        problems.append("groups: a group is named more than once")
    if "administrators" in p.groups:
        # APIM manages that group's membership and what it sees; the catalog leaves it alone.
        problems.append(
            'groups: "administrators" is APIM\'s own; name the groups consumers are in, such as '
            '"developers" and "guests"'
        )
    return problems


def _spending_limit_problems(p: Product) -> list[str]:
    if p.spending_limit is None:
        return []
    exponent = CURRENCY_EXPONENTS[p.currency]
    if p.usage_price is None:
        return [f"spendingLimit: a {p.pricing_model} product bills no usage, so nothing can run up; remove it"]
    if p.spending_limit != p.spending_limit.quantize(Decimal(1).scaleb(-exponent)):
        return [f"spendingLimit: {p.spending_limit} has more decimals than {p.currency.upper()} allows ({exponent})"]
    # Stripe: "Monetary thresholds must be greater than the sum of all licensed plan costs", and at
    # least 50 minor units.
    floor = max(p.flat_fee, Decimal(50).scaleb(-exponent))
    if p.spending_limit <= floor:
        return [
            f"spendingLimit: {p.spending_limit} must be above {floor} (the flat fee, and Stripe's minimum "
            "billing threshold), or the first invoice alone would reach it"
        ]
    return []


def _trial_problems(p: Product) -> list[str]:
    if p.trial_days is not None and not p.is_paid:
        return [
            f"trialDays: a {p.pricing_model} product costs nothing, so there is nothing to try for free; "
            "remove trialDays"
        ]
    return []


class MonetizationModels(_Model):
    """The whole file: a list of products with unique ids."""

    schema_: str | None = Field(default=None, alias="$schema")
    products: Annotated[tuple[Product, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        seen: set[str] = set()
        for product in self.products:
            if product.id in seen:
                raise ValueError(f"id: product id '{product.id}' appears more than once; ids must be unique")
            seen.add(product.id)
        return self

    def product(self, product_id: str) -> Product:
        for product in self.products:
            if product.id == product_id:
                return product
        known = ", ".join(p.id for p in self.products)
        raise UnknownProductError(f"unknown product '{product_id}'; known products: {known}")

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.products)


class UnknownProductError(LookupError):
    """A product id that the models file does not define."""
