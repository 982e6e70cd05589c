"""The whole local stack for the portal's journeys: Azurite, both emulators, the catalog, the app.

One stack per test module (starting the emulators per test would cost seconds each). The APIM
emulator's developer portal signs its delegation links itself, so the journeys start where a
real consumer starts: a link on the portal.
"""

from __future__ import annotations

import base64
import html
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from devstack.azurite import Azurite
from devstack.ports import free_port
from emulators.apim.server import ApimEmulator
from emulators.stripe.server import StripeEmulator

PASSWORD = "correct horse battery staple"


@dataclass
class Stack:
    app_url: str
    apim: ApimEmulator
    stripe: StripeEmulator
    key_b64: str
    env: dict[str, str]

    @property
    def stripe_client(self) -> Any:
        return self.stripe.client()

    def apim_client(self) -> Any:
        return self.apim.management_client()

    def browser(self) -> requests.Session:
        """A cookie-keeping client that asks for HTML, as a browser does."""
        session = requests.Session()
        session.headers["Accept"] = "text/html,application/xhtml+xml"
        return session


@contextmanager
def running_stack(azurite: Azurite) -> Iterator[Stack]:
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    key_b64 = base64.b64encode(secrets.token_bytes(64)).decode()
    with ApimEmulator(delegation_url=f"{app_url}/api/delegation", delegation_key_b64=key_b64) as apim, \
            StripeEmulator(port=0) as stripe, pytest.MonkeyPatch.context() as mp:  # fmt: skip
        env = {
            "AzureWebJobsStorage": azurite.connection_string,
            **stripe.app_settings(),
            **apim.app_settings(),
            "APIM_DELEGATION_VALIDATION_KEY": key_b64,
            "APP_BASE_URL": app_url,
            "DELEGATION_MODE": "full",
        }
        for name, value in env.items():
            mp.setenv(name, value)
        _create_storage()
        _sync_catalog()
        import function_app  # noqa: PLC0415 - after the settings, as the Functions host would
        from devhost.server import DevHost  # noqa: PLC0415

        with DevHost(function_app.app, port=port):
            yield Stack(app_url, apim, stripe, key_b64, env)


def _create_storage() -> None:
    """The app's tables and queues, as the deployment creates them in Azure (infra/app-storage.json)."""
    from billing.adapters.storage import ensure_table, queue  # noqa: PLC0415
    from billing.store.tables import ALL_QUEUES, ALL_TABLES  # noqa: PLC0415

    for name in ALL_TABLES:
        ensure_table(name)
    for name in ALL_QUEUES:
        client = queue(name)
        if not _queue_exists(client):
            client.create_queue()


def _queue_exists(client: Any) -> bool:
    from azure.core.exceptions import ResourceNotFoundError  # noqa: PLC0415

    try:
        client.get_queue_properties()
    except ResourceNotFoundError:
        return False
    return True


def _sync_catalog() -> None:
    """Stripe products/prices/meters and APIM products, made by the app's own catalog sync (issue 5)."""
    from billing.adapters.apim_client import apim_service  # noqa: PLC0415
    from billing.adapters.catalog_apim import ApimCatalog  # noqa: PLC0415
    from billing.adapters.catalog_stripe import StripeCatalog  # noqa: PLC0415
    from billing.adapters.stripe_client import stripe_client  # noqa: PLC0415
    from billing.catalog.service import CatalogSync  # noqa: PLC0415
    from billing.model_loader import load_models  # noqa: PLC0415

    sync = CatalogSync(load_models(), StripeCatalog(stripe_client()), ApimCatalog(apim_service()))
    sync.apply(sync.plan())


# ---- reading pages ------------------------------------------------------------------------------
def links(page: str, css_class: str) -> list[str]:
    """hrefs of <a class="..."> elements on the emulator's portal page."""
    return [html.unescape(m[1]) for m in re.finditer(rf'<a class="{css_class}" href="([^"]*)"', page)]


def product_link(page: str, product_id: str) -> str:
    match = re.search(rf'data-product-id="{re.escape(product_id)}">.*?<a class="subscribe" href="([^"]*)"', page, re.S)
    assert match, f"no Subscribe link for {product_id} on the portal page"
    return html.unescape(match[1])


def form_fields(page: str) -> dict[str, str]:
    """name -> value of the hidden inputs of the (first) form."""
    hidden = re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    return {m[1]: html.unescape(m[2]) for m in hidden}


def absolute(base: str, location: str) -> str:
    return urljoin(base, location)
