"""Fixtures for the portal's tests: one local stack per module (the project's LocalStack).

The stack applies the catalog and runs the app on the development host. Stripe has no webhook
endpoint for the app and nothing polls the queues, so these tests see the portal's own work only:
access granted by webhooks (issue 7) is done by hand where a test needs it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.azurite import Azurite
from devstack.stack import LocalStack, StackOptions


def portal_stack_options(azurite: Azurite) -> StackOptions:
    """The app in this process, the catalog applied, no webhooks to the app, no queue workers."""
    return StackOptions(
        use_func=False, azurite=azurite, apply_catalog=True, stripe_webhooks=False, run_queue_workers=False
    )


@pytest.fixture(scope="module")
def stack(azurite: Azurite) -> Iterator[LocalStack]:
    """Attributes the tests use: app_url, apim, stripe, env, delegation_key_b64, browser(), consumer()."""
    with LocalStack(portal_stack_options(azurite)) as running:
        yield running
