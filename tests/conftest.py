"""Session fixtures for the local stack. Each service starts on free loopback ports and stops after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.azurite import Azurite


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite() as running:
        yield running


@pytest.fixture(scope="session")
def storage_connection_string(azurite: Azurite) -> str:
    return azurite.connection_string
