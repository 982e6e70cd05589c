"""The part of a test folder's stack wrapper that every folder shares: the running emulators and settings."""

from __future__ import annotations

from dataclasses import dataclass

from devstack.stack import LocalStack
from emulators.apim.server import ApimEmulator
from emulators.stripe.server import StripeEmulator


@dataclass
class StackView:
    local: LocalStack

    @property
    def stripe_emu(self) -> StripeEmulator:
        return self.local.stripe_emulator

    @property
    def apim_emu(self) -> ApimEmulator:
        return self.local.apim_emulator

    @property
    def env(self) -> dict[str, str]:
        """The app's settings (applied to os.environ while the stack runs)."""
        return self.local.env

    @property
    def where(self) -> tuple[str, str]:
        """(resource group, service name) of the emulated APIM instance."""
        return self.apim_emu.resource_group, self.apim_emu.service_name
