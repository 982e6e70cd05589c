"""The API Management management client, configured from settings.

In Azure the credential is the app's user-assigned managed identity (`AZURE_CLIENT_ID`) through
`DefaultAzureCredential`; locally the same credential chain reads azure-identity's standard
environment variables, which the APIM emulator's settings provide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from azure.identity import DefaultAzureCredential
from azure.mgmt.apimanagement import ApiManagementClient

from billing import config

# azure-core waits 300 s to connect and 300 s for each read by default. ARM answers management calls
# in well under a second and a report page of 1,000 rows in a few.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class ApimService:
    """Which APIM instance the app manages, and the client that reaches it."""

    client: ApiManagementClient
    resource_group: str
    service_name: str


def apim_service(env: Mapping[str, str] | None = None) -> ApimService:
    endpoint = config.get("APIM_MANAGEMENT_ENDPOINT", env).rstrip("/")
    client_id = config.get("AZURE_CLIENT_ID", env) or None
    credential = DefaultAzureCredential(managed_identity_client_id=client_id)
    client = ApiManagementClient(
        credential,
        config.get("APIM_SUBSCRIPTION_ID", env),
        base_url=endpoint,
        credential_scopes=[f"{_arm_audience(endpoint)}/.default"],
        connection_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )
    return ApimService(client, config.get("APIM_RESOURCE_GROUP", env), config.get("APIM_SERVICE_NAME", env))


def _arm_audience(endpoint: str) -> str:
    # Public-cloud ARM's token audience; sovereign clouds and local emulators use their endpoint.
    return "https://management.azure.com" if endpoint == "https://management.azure.com" else endpoint
