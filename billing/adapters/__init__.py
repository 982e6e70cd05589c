"""Adapters: the one place each external service (Stripe, APIM, Storage) is reached from."""
