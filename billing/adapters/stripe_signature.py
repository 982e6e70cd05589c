"""Stripe's webhook signature check, through the SDK (the one place the webhook area touches it)."""

from __future__ import annotations

import stripe


def signature_problem(payload: str, header: str, secret: str, tolerance: int) -> str | None:
    """None if `header` signs `payload` with `secret` within `tolerance` seconds, else the SDK's reason
    (which names the header's shape or the timestamp, never the secret)."""
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        return str(exc)
    return None
