"""Fixtures for the catalog tests: both emulators, the app's settings pointed at them, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import stripe
from azure.mgmt.apimanagement import ApiManagementClient

from billing.cli import main
from billing.model_loader import DEFAULT_MODELS_PATH
from emulators.apim.pytest_plugin import apim_emulator  # noqa: F401 - re-exported fixture
from emulators.apim.server import ApimEmulator
from emulators.stripe.pytest_plugin import stripe_emulator  # noqa: F401 - re-exported fixture
from emulators.stripe.server import StripeEmulator


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@dataclass
class Stack:
    stripe_emu: StripeEmulator
    apim_emu: ApimEmulator
    stripe: stripe.StripeClient  # an independent client for checking what the app made
    apim: ApiManagementClient
    capsys: pytest.CaptureFixture[str]

    @property
    def where(self) -> tuple[str, str]:
        return self.apim_emu.resource_group, self.apim_emu.service_name

    def cli(self, *args: str) -> CliResult:
        self.capsys.readouterr()
        code = main(list(args))
        captured = self.capsys.readouterr()
        return CliResult(code, captured.out, captured.err)


@pytest.fixture
def stack(
    stripe_emulator: StripeEmulator,  # noqa: F811 - the fixture imported above
    apim_emulator: ApimEmulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Stack]:
    for name, value in {**stripe_emulator.app_settings(), **apim_emulator.app_settings()}.items():
        monkeypatch.setenv(name, value)
    apim = apim_emulator.management_client(retry_total=0)
    yield Stack(stripe_emulator, apim_emulator, stripe_emulator.client(), apim, capsys)
    apim.close()


def models_variant(tmp_path: Path, name: str, edit: str, replacement: str) -> Path:
    """A copy of the real models file with one textual edit (the edit must match exactly once)."""
    text = DEFAULT_MODELS_PATH.read_text(encoding="utf-8")
    assert text.count(edit) == 1, f"{edit!r} must occur once in the models file"
    path = tmp_path / name
    path.write_text(text.replace(edit, replacement), encoding="utf-8")
    return path
