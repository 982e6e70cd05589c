"""The local stack starts, wires every setting the app needs, and stops without leftovers."""

from __future__ import annotations

import os
import socket

import requests

from billing.adapters.apim_client import apim_service
from billing.adapters.stripe_client import stripe_client
from devstack.stack import LocalStack, StackOptions


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_stack_wires_a_complete_configuration_and_stops_cleanly() -> None:
    before = dict(os.environ)
    with LocalStack(StackOptions(use_func=False)) as stack:
        health = requests.get(f"{stack.app_url}/api/health", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["missingSettings"] == []
        assert stack.azurite is not None
        ports = [stack.dev_host.port, stack.azurite.table_port, int(stack.stripe_emulator.base_url.rsplit(":", 1)[1])]
        assert all(_listening(port) for port in ports)
        # The app reaches both emulators with its own clients and settings.
        assert stripe_client().v1.customers.list().data == []
        service = apim_service()
        assert list(service.client.product.list_by_service(service.resource_group, service.service_name)) == []
    assert not any(_listening(port) for port in ports)
    assert dict(os.environ) == before
