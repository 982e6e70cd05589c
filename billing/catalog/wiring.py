"""The catalog's adapters, on the composition root's clients: the operator's tools only.

`python -m billing catalog ...` and the local stack build the catalog sync here. The Functions app
never imports this module, so the APIM actions of `catalog apply` (products, policies, links) stay
out of the app's role (tests/infra/test_apim_role.py).
"""

from __future__ import annotations

from pathlib import Path

from billing.adapters.catalog_apim import ApimCatalog
from billing.adapters.catalog_stripe import StripeCatalog
from billing.bootstrap import Services
from billing.catalog.service import CatalogSync
from billing.model_loader import load_models
from billing.store.catalog_links import CatalogLinks
from billing.store.tables import CATALOG_LINKS_TABLE
from billing.usage.wiring import bucket, tuning


def catalog_sync(
    services: Services, models_file: Path | str | None = None, *, stripe_side: bool = True, apim_side: bool = True
) -> CatalogSync:
    stripe_port = StripeCatalog(services.stripe(), bucket("stripe", tuning(services.env)[0])) if stripe_side else None
    apim_port = ApimCatalog(services.apim(), CatalogLinks(services.table(CATALOG_LINKS_TABLE))) if apim_side else None
    return CatalogSync(load_models(models_file), stripe_port, apim_port)
