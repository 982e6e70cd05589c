"""Pytest fixture `apim_emulator`: a running ApimEmulator on free loopback ports, stopped after.

Use it with `pytest_plugins = ["emulators.apim.pytest_plugin"]` in a conftest.py. Tests that want
a controllable clock call `apim_emulator.set_clock(...)` (or use `advance_clock`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulators.apim.server import ApimEmulator


@pytest.fixture
def apim_emulator() -> Iterator[ApimEmulator]:
    with ApimEmulator() as emulator:
        yield emulator
