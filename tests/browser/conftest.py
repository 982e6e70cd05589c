"""The local stack for the browser journey (the same one the portal tests use)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.azurite import Azurite
from tests.portal.stack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(azurite: Azurite) -> Iterator[Stack]:
    with running_stack(azurite) as running:
        yield running
