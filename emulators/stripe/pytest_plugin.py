"""Pytest fixtures: register with `pytest_plugins = ["emulators.stripe.pytest_plugin"]`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulators.stripe.server import StripeEmulator


@pytest.fixture
def stripe_emulator() -> Iterator[StripeEmulator]:
    """A fresh emulator on a free loopback port, stopped after the test."""
    with StripeEmulator(port=0) as emulator:
        yield emulator
