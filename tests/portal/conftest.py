"""Fixtures for the portal's tests: one local stack per module, and consumers that use it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.azurite import Azurite
from tests.portal.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(azurite: Azurite) -> Iterator[Stack]:
    with running_stack(azurite) as running:
        yield running
