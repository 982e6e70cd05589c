"""API monetization for Azure API Management with Stripe."""

__version__ = "0.1.0"
