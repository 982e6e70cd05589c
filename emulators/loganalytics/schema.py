"""The ApiManagementGatewayLogs table (resource-specific mode) and Log Analytics' type names.

Columns and types are those of Microsoft's table reference (README.md, [TBL]); their order follows the
gateway log schema reference ([GLS]): workspace columns first, then the request, the backend, the
entities, the last error, and the standard columns last.
"""

from __future__ import annotations

from typing import Final

from duckdb_kql.types import kusto_type

TABLE: Final = "ApiManagementGatewayLogs"

# Log Analytics type -> DuckDB storage type. Kusto strings are never null (an absent value is ""), so
# string columns are stored NOT NULL with '' as the default; other types may be null.
_DUCKDB: Final = {
    "string": "VARCHAR",
    "int": "INTEGER",
    "long": "BIGINT",
    "real": "DOUBLE",
    "bool": "BOOLEAN",
    "datetime": "TIMESTAMP",
    "dynamic": "JSON",
}

COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("TenantId", "string"),
    ("TimeGenerated", "datetime"),
    ("OperationName", "string"),
    ("CorrelationId", "string"),
    ("Region", "string"),
    ("IsRequestSuccess", "bool"),
    ("Category", "string"),
    ("TotalTime", "long"),
    ("CallerIpAddress", "string"),
    ("Method", "string"),
    ("Url", "string"),
    ("ClientProtocol", "string"),
    ("ResponseCode", "int"),
    ("ResponseSize", "int"),
    ("RequestSize", "int"),
    ("Cache", "string"),
    ("CacheTime", "long"),
    ("ClientTime", "long"),
    ("ClientTlsVersion", "string"),
    ("BackendMethod", "string"),
    ("BackendUrl", "string"),
    ("BackendResponseCode", "int"),
    ("BackendProtocol", "string"),
    ("BackendTime", "long"),
    ("BackendId", "string"),
    ("BackendRequestBody", "string"),
    ("BackendRequestHeaders", "dynamic"),
    ("BackendResponseBody", "string"),
    ("BackendResponseHeaders", "dynamic"),
    ("ApiId", "string"),
    ("ApiRevision", "string"),
    ("OperationId", "string"),
    ("ProductId", "string"),
    ("UserId", "string"),
    ("ApimSubscriptionId", "string"),
    ("RequestBody", "string"),
    ("RequestHeaders", "dynamic"),
    ("ResponseBody", "string"),
    ("ResponseHeaders", "dynamic"),
    ("Errors", "dynamic"),
    ("LastErrorElapsed", "long"),
    ("LastErrorSource", "string"),
    ("LastErrorScope", "string"),
    ("LastErrorSection", "string"),
    ("LastErrorReason", "string"),
    ("LastErrorMessage", "string"),
    ("IsMasterTrace", "bool"),
    ("IsTraceAllowed", "bool"),
    ("IsTraceExpired", "bool"),
    ("IsTraceRequested", "bool"),
    ("TraceRecords", "dynamic"),
    ("SourceSystem", "string"),
    ("_SubscriptionId", "string"),
    ("_BilledSize", "real"),
    ("_IsBillable", "string"),
    ("Type", "string"),
    ("_ResourceId", "string"),
)

NAMES: Final = tuple(name for name, _ in COLUMNS)
LA_TYPES: Final = dict(COLUMNS)


def duckdb_type(la_type: str) -> str:
    return _DUCKDB[la_type]


def column_ddl() -> str:
    """`"Name" TYPE [NOT NULL DEFAULT '']`, comma-separated, for CREATE TABLE."""
    parts = []
    for name, la_type in COLUMNS:
        string = la_type == "string"
        parts.append(f'"{name}" {_DUCKDB[la_type]}' + (" NOT NULL DEFAULT ''" if string else ""))
    return ", ".join(parts)


def answer_type(duckdb_result_type: object) -> str:
    """The Log Analytics type name of a result column (datetime, string, int, long, bool, real, dynamic, ...)."""
    return kusto_type(duckdb_result_type)
