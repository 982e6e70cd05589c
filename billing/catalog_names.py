"""Stable names that tie Stripe and APIM objects to the revenue model's product ids.

Pure functions: the catalog sync creates objects under these names, checkout finds prices by
them, the usage push sends meter events under them, and webhooks read the metadata keys.
"""

from __future__ import annotations

# Metadata on every Stripe object the catalog makes (product, price, meter): the model's id.
PRODUCT_METADATA_KEY = "monetization_product_id"
# Which price of a product a Stripe price is: "flat" (licensed, in advance) or "usage" (metered).
PRICE_ROLE_METADATA_KEY = "monetization_price_role"
# Marks the Stripe customer portal configuration the catalog made (value "portal").
PORTAL_CONFIG_METADATA_KEY = "monetization_catalog"

# Metadata set on the Stripe subscription at checkout (subscription_data.metadata).
SUB_META_APIM_USER = "apim_user_id"
SUB_META_PRODUCT = "apim_product_id"
SUB_META_NAME = "apim_subscription_name"
# Set by the app when the consumer cancels (unix time, Stripe's present): access ended then, while the
# Stripe subscription lives on until its final invoice is made (billing.usage.final_invoice).
SUB_META_ACCESS_ENDED = "apim_access_ended_at"
# On a subscription that starts a free trial: the portal account's address as the trial ledger keys it
# (billing.store.trials), so the trial is claimed under the identity the offer was checked under.
SUB_META_TRIAL_MAIL = "apim_trial_mail_key"
# On the Stripe customer: the APIM user it belongs to (one customer per APIM user).
CUSTOMER_META_APIM_USER = "apim_user_id"
# Meter event payload keys (Stripe's defaults for a meter).
METER_CUSTOMER_KEY = "stripe_customer_id"
METER_VALUE_KEY = "value"


def stripe_product_id(product_id: str) -> str:
    """Stripe accepts a caller-chosen product id, which makes creation idempotent."""
    return f"apim-{product_id}"


def flat_price_lookup_key(product_id: str) -> str:
    return f"{product_id}-flat"


def usage_price_lookup_key(product_id: str) -> str:
    return f"{product_id}-usage"


def meter_event_name(product_id: str) -> str:
    """One meter per metered product, so usage of one product can never be billed on another's price.

    The meter receives the product's billable calls beyond its included calls (see billing.pricing).
    """
    return "apim_calls_" + product_id.replace("-", "_")


def apim_product_id(product_id: str) -> str:
    """APIM product ids are the model's ids as they are."""
    return product_id
