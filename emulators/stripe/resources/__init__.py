"""Handlers for each Stripe resource, registered in the route table on import."""
