"""The Stripe client, configured from settings. The Stripe API version is pinned here, once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

import stripe

if TYPE_CHECKING:
    from stripe._base_address import BaseAddresses

from billing import config
from billing.usage.ratelimit import TokenBucket
from billing.usage.retry import Throttled, Transient, call_with_retry, parse_retry_after

T = TypeVar("T")

# Every request the app makes uses this version; the SDK release it ships with is pinned in
# requirements.txt. Upgrading is a deliberate change of both, tested against the changelog.
STRIPE_API_VERSION = "2026-10-28.endive"

# Stripe's documented guidance: retry network errors, 409, 429 and 5xx with backoff (the SDK
# does this, honouring `Stripe-Should-Retry`), using the same idempotency key on each try.
MAX_NETWORK_RETRIES = 3

# (connect, read) seconds. The SDK's default is 80 s for both: one slow answer would hold an
# instance (and a webhook's 8-second budget) far beyond any useful wait. Stripe answers in well
# under a second; a page of 100 objects or a stream request of 100 events in a few.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 30.0


def stripe_client(env: Mapping[str, str] | None = None) -> stripe.StripeClient:
    api_key = config.get("STRIPE_API_KEY", env)
    if not api_key:
        raise RuntimeError("STRIPE_API_KEY is not set")
    base = config.get("STRIPE_API_BASE", env).rstrip("/")
    addresses: BaseAddresses | None = None
    if base:
        # A local emulator (or a proxy) serves every Stripe host at one address.
        addresses = {"api": base, "files": base, "connect": base, "meter_events": base}
    return stripe.StripeClient(
        api_key,
        stripe_version=STRIPE_API_VERSION,
        base_addresses=addresses,
        max_network_retries=MAX_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)),
    )


def webhook_secrets(env: Mapping[str, str] | None = None, setting: str = "STRIPE_WEBHOOK_SECRET") -> list[str]:
    """Signing secrets of a Stripe endpoint; several during a rotation (comma-separated in `setting`)."""
    return [s.strip() for s in config.get(setting, env).split(",") if s.strip()]


def _header(error: stripe.StripeError, name: str) -> str | None:
    for key, value in (error.headers or {}).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def retryable(error: stripe.StripeError) -> Exception:
    """Throttled / Transient for what is worth another try; the error itself otherwise."""
    if isinstance(error, stripe.RateLimitError) or error.http_status == 429:
        return Throttled("Stripe rate limit", parse_retry_after(_header(error, "Retry-After")))
    if isinstance(error, stripe.APIConnectionError) or (error.http_status or 0) >= 500:
        return Transient(f"Stripe answered {error.http_status or 'no response'}")
    return error


def with_retries(call: Callable[[], T], bucket: TokenBucket) -> T:
    """The app's one retry policy for Stripe, on top of the SDK's own network retries: every call under
    the process's Stripe budget; 429 waits Retry-After (or backs off) for the whole process, 5xx and
    network errors back off (billing.usage.retry). The final failure is Throttled / Transient with the
    SDK's error as its cause, or the SDK's error itself when retrying cannot help."""

    def once() -> T:
        try:
            return call()
        except stripe.StripeError as error:
            translated = retryable(error)
            if translated is error:
                raise
            raise translated from error

    return call_with_retry(once, bucket)
