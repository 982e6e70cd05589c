"""Fixtures for the catalog tests: a fresh local stack per test (empty emulators), the CLI.

The stack (the project's LocalStack, on the session's Azurite) applies no catalog, sends Stripe's
webhooks nowhere and polls no queues: these tests see only what `catalog plan|apply` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import stripe
from azure.mgmt.apimanagement import ApiManagementClient

from billing.cli import main
from billing.model_loader import DEFAULT_MODELS_PATH
from devstack.azurite import Azurite
from devstack.stack import LocalStack, StackOptions
from tests.stack_view import StackView


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@dataclass
class Stack(StackView):
    stripe: stripe.StripeClient  # an independent client for checking what the app made
    apim: ApiManagementClient
    capsys: pytest.CaptureFixture[str]

    def cli(self, *args: str) -> CliResult:
        self.capsys.readouterr()
        code = main(list(args))
        captured = self.capsys.readouterr()
        return CliResult(code, captured.out, captured.err)


@pytest.fixture
def stack(azurite: Azurite, capsys: pytest.CaptureFixture[str]) -> Iterator[Stack]:
    options = StackOptions(use_func=False, azurite=azurite, stripe_webhooks=False, run_queue_workers=False)
    with LocalStack(options) as local:
        assert local.stripe is not None
        assert local.apim is not None
        apim = local.apim.management_client(retry_total=0)
        yield Stack(local, local.stripe.client(), apim, capsys)
        apim.close()


def models_variant(tmp_path: Path, name: str, edit: str, replacement: str) -> Path:
    """A copy of the real models file with one textual edit (the edit must match exactly once)."""
    text = DEFAULT_MODELS_PATH.read_text(encoding="utf-8")
    assert text.count(edit) == 1, f"{edit!r} must occur once in the models file"
    path = tmp_path / name
    path.write_text(text.replace(edit, replacement), encoding="utf-8")
    return path
