"""Table Storage and Queue clients from the `AzureWebJobsStorage` connection.

Locally (and where shared keys are allowed) it is a connection string; in Azure it is
identity-based, as the Functions host itself uses it: `AzureWebJobsStorage__accountName` (or
`__tableServiceUri` / `__queueServiceUri`) with the managed identity in `AzureWebJobsStorage__clientId`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from azure.data.tables import TableClient, TableServiceClient
from azure.identity import DefaultAzureCredential
from azure.storage.queue import (
    BinaryBase64DecodePolicy,
    BinaryBase64EncodePolicy,
    QueueClient,
    QueueServiceClient,
)

CONNECTION = "AzureWebJobsStorage"


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


# The Functions shorthand for Azurite on its default ports, spelled out (public development key).
_DEVELOPMENT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


def _connection_string(env: Mapping[str, str]) -> str | None:
    value = env.get(CONNECTION, "").strip()
    if value == "UseDevelopmentStorage=true":
        return _DEVELOPMENT_STORAGE
    return value or None


def _service_uri(env: Mapping[str, str], kind: str) -> str:
    explicit = env.get(f"{CONNECTION}__{kind}ServiceUri", "").strip()
    if explicit:
        return explicit
    account = env.get(f"{CONNECTION}__accountName", "").strip()
    if not account:
        raise RuntimeError(f"set {CONNECTION} (connection string) or {CONNECTION}__accountName (identity-based)")
    return f"https://{account}.{kind}.core.windows.net"


def _credential(env: Mapping[str, str]) -> DefaultAzureCredential:
    client_id = env.get(f"{CONNECTION}__clientId", "").strip() or env.get("AZURE_CLIENT_ID", "").strip() or None
    return DefaultAzureCredential(managed_identity_client_id=client_id)


# azure-core reads a streamed answer in blocks of this size (its default, 4 KiB, makes a 1 MiB page of
# watermark rows cost hundreds of reads and joins).
READ_BLOCK_BYTES = 256 * 1024

# azure-core's defaults are 300 s to connect and 300 s per read. Table Storage answers a page of
# 1,000 rows (up to a few MiB) or an entity-group transaction in well under that.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30


def table_service(env: Mapping[str, str] | None = None) -> TableServiceClient:
    source = _env(env)
    conn = _connection_string(source)
    if conn:
        return TableServiceClient.from_connection_string(
            conn,
            connection_data_block_size=READ_BLOCK_BYTES,
            connection_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
        )
    return TableServiceClient(
        endpoint=_service_uri(source, "table"),
        credential=_credential(source),
        connection_data_block_size=READ_BLOCK_BYTES,
        connection_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )


def table(name: str, env: Mapping[str, str] | None = None) -> TableClient:
    """A client for one table; create it once at start-up with `ensure_table`."""
    return table_service(env).get_table_client(name)


def ensure_table(name: str, env: Mapping[str, str] | None = None) -> TableClient:
    service = table_service(env)
    service.create_table_if_not_exists(name)
    return service.get_table_client(name)


def queue_service(env: Mapping[str, str] | None = None) -> QueueServiceClient:
    source = _env(env)
    conn = _connection_string(source)
    if conn:
        return QueueServiceClient.from_connection_string(
            conn, connection_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS
        )
    return QueueServiceClient(
        account_url=_service_uri(source, "queue"),
        credential=_credential(source),
        connection_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
    )


def queue(name: str, env: Mapping[str, str] | None = None) -> QueueClient:
    """A queue client whose messages are base64, as the Functions queue trigger expects by default.

    Send bytes (e.g. UTF-8 JSON); received messages' `content` is bytes.
    """
    return queue_service(env).get_queue_client(
        name,
        message_encode_policy=BinaryBase64EncodePolicy(),
        message_decode_policy=BinaryBase64DecodePolicy(),
    )
