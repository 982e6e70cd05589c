"""The local stack for the browser journey (the same one the portal tests use)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.azurite import Azurite
from devstack.stack import LocalStack
from tests.portal.conftest import portal_stack_options


@pytest.fixture(scope="module")
def stack(azurite: Azurite) -> Iterator[LocalStack]:
    with LocalStack(portal_stack_options(azurite)) as running:
        yield running
