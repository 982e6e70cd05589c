"""Usage metering from the gateway logs: API Management (a new instance or an existing one) sends
GatewayLogs to a workspace of their own in resource-specific mode and logs every request unsampled;
the app's identity reads that workspace only; the app gets the workspace id from Bicep.

Each check takes the file(s) it reads, so that the tests below also run it on copies with one
piece taken out and see it fail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.infra.bicep_tree import (
    GUID,
    INFRA,
    ROOT,
    Declaration,
    Node,
    declarations,
    get_path,
    line_of,
    params,
    properties,
    resolve_string,
    string_value,
    text,
    top_level,
)
from tests.infra.test_roles import role_assignments
from tests.infra.test_settings import bicep_app_settings

MAIN = INFRA / "main.bicep"
USAGE_LOGS = INFRA / "modules" / "usage-logs.bicep"
APIM_LOGGING = INFRA / "modules" / "apim-logging.bicep"
APP_ROLES = INFRA / "modules" / "app-roles.bicep"
# Built-in "Log Analytics Reader" (Azure built-in roles, Monitor).
LOG_ANALYTICS_READER = "73c42c96-874c-492b-b04d-ab87d138a893"
WORKSPACE = "Microsoft.OperationalInsights/workspaces"


def resources(path: Path) -> dict[str, Declaration]:
    return {d.symbol: d for d in declarations(path) if d.kind == "resource"}


def module(main: Path, module_type: str) -> Declaration | None:
    found = [d for d in declarations(main) if d.kind == "module" and d.type == module_type]
    return found[0] if len(found) == 1 else None


def module_params(decl: Declaration) -> dict[str, str]:
    return {name: text(node) for name, node in properties(get_path(decl.body, "params")).items()}


def outputs(path: Path) -> dict[str, str]:
    return {text(o.named_children[0]): text(o.named_children[-1]) for o in top_level(path, "output_declaration")}


def value(decl: Declaration, *path: str) -> str | None:
    return value_of(get_path(decl.body, *path))


def loc(decl: Declaration) -> str:
    """`file:line` that works for the broken copies in a temporary folder too."""
    return f"{decl.file.name}:{line_of(decl.node)}"


def value_of(node: Node | None) -> str | None:
    return text(node) if node is not None else None


def is_conditional(decl: Declaration) -> bool:
    return any(child.type == "if_statement" for child in decl.node.named_children)


def objects(array: Node | None) -> list[Node]:
    return [] if array is None else [c for c in array.named_children if c.type == "object"]


def default_int(path: Path, name: str) -> int | None:
    param = params(path).get(name)
    return int(text(param.default)) if param is not None and param.default is not None else None


# --- the checks -------------------------------------------------------------------------------


def gateway_log_problems(path: Path = APIM_LOGGING) -> list[str]:
    """The diagnostic setting on the instance and APIM's own Azure Monitor logging settings."""
    by_symbol = resources(path)
    apims = [d for d in by_symbol.values() if d.resource_type == "Microsoft.ApiManagement/service"]
    if len(apims) != 1 or value(apims[0], "name") != "apimName":
        return [f"{path.name}: expected one API Management instance named by the apimName parameter"]
    return diagnostic_setting_problems(path, apims[0]) + azure_monitor_logging_problems(path, apims[0])


def diagnostic_setting_problems(path: Path, apim: Declaration) -> list[str]:
    settings = [d for d in resources(path).values() if d.resource_type == "Microsoft.Insights/diagnosticSettings"]
    if not settings:
        return [f"{path.name}: no diagnostic setting on the instance"]
    problems = []
    for setting in settings:
        where = f"{path.name}:{setting.symbol}"
        if value(setting, "scope") != apim.symbol:
            problems.append(f"{where}: scope must be the API Management instance {apim.symbol!r}")
        if value(setting, "properties", "workspaceId") != "workspaceId":
            problems.append(f"{where}: workspaceId must be the workspaceId parameter (the usage workspace)")
        if string_value(get_path(setting.body, "properties", "logAnalyticsDestinationType")) != "Dedicated":
            problems.append(f"{where}: logAnalyticsDestinationType must be 'Dedicated' (ApiManagementGatewayLogs)")
        logs = objects(get_path(setting.body, "properties", "logs"))
        enabled = [
            string_value(get_path(log, "category")) for log in logs if value_of(get_path(log, "enabled")) == "true"
        ]
        if "GatewayLogs" not in enabled:
            problems.append(f"{where}: the category GatewayLogs must be enabled")
        if "workspaceId" not in (value(setting, "name") or ""):
            problems.append(f"{where}: name the setting after the workspace, so each azd environment keeps its own")
    return problems


def azure_monitor_logging_problems(path: Path, apim: Declaration) -> list[str]:
    by_symbol = resources(path)
    diagnostics = [
        d
        for d in by_symbol.values()
        if d.resource_type == "Microsoft.ApiManagement/service/diagnostics"
        and string_value(get_path(d.body, "name")) == "azuremonitor"
    ]
    if len(diagnostics) != 1:
        return [f"{path.name}: no 'azuremonitor' diagnostic (APIM's Azure Monitor logging settings)"]
    (diagnostic,) = diagnostics
    where = f"{path.name}:{diagnostic.symbol}"
    problems = []
    if value(diagnostic, "parent") != apim.symbol:
        problems.append(f"{where}: parent must be the instance {apim.symbol!r}")
    if string_value(get_path(diagnostic.body, "properties", "sampling", "samplingType")) != "fixed":
        problems.append(f"{where}: sampling.samplingType must be 'fixed'")
    if value(diagnostic, "properties", "sampling", "percentage") != "100":
        problems.append(f"{where}: sampling.percentage must be 100: a call that is not logged is never billed")
    logger = by_symbol.get((value(diagnostic, "properties", "loggerId") or "").removesuffix(".id"))
    if not (
        logger is not None
        and logger.resource_type == "Microsoft.ApiManagement/service/loggers"
        and string_value(get_path(logger.body, "properties", "loggerType")) == "azureMonitor"
    ):
        problems.append(f"{where}: loggerId must be the id of the instance's azureMonitor logger")
    for side in ("frontend", "backend"):
        for message in ("request", "response"):
            size = value(diagnostic, "properties", side, message, "body", "bytes")
            if size not in (None, "0"):
                problems.append(f"{where}: {side}.{message} logs {size} body bytes; the app needs none")
    return problems


def apim_path_problems(main: Path = MAIN) -> list[str]:
    """The logging module reaches the instance on both paths: new (after it exists) and existing."""
    logging = module(main, "modules/apim-logging.bicep")
    usage = module(main, "modules/usage-logs.bicep")
    new_apim = module(main, "modules/apim.bicep")
    if logging is None or usage is None or new_apim is None:
        return [f"{main.name}: needs one module each of apim-logging.bicep, usage-logs.bicep and apim.bicep"]
    problems = []
    given = module_params(logging)
    if is_conditional(logging):
        problems.append(f"{loc(logging)}: the gateway logs must be set up for a new and an existing instance alike")
    if value(logging, "scope") != "apimRg":
        problems.append(f"{loc(logging)}: deploy into the instance's resource group (apimRg)")
    if given.get("apimName") != "apimServiceName":
        problems.append(f"{loc(logging)}: apimName must be apimServiceName, the instance of either mode")
    if given.get("workspaceId") != f"{usage.symbol}.outputs.id":
        problems.append(f"{loc(logging)}: workspaceId must be {usage.symbol}.outputs.id")
    depends = get_path(logging.body, "dependsOn")
    if depends is None or new_apim.symbol not in {text(n) for n in depends.named_children}:
        problems.append(f"{loc(logging)}: must wait for the new instance ({new_apim.symbol}) in dependsOn")
    return problems


def workspace_problems(usage_logs: Path = USAGE_LOGS, main: Path = MAIN) -> list[str]:
    """A workspace of its own, pay-as-you-go, retention long enough to bill a month, no cap by default."""
    problems = []
    workspaces = [d for d in resources(usage_logs).values() if d.resource_type == WORKSPACE and not d.existing]
    if len(workspaces) != 1:
        return [f"{usage_logs.name}: expected one Log Analytics workspace"]
    (ws,) = workspaces
    if string_value(get_path(ws.body, "properties", "sku", "name")) != "PerGB2018":
        problems.append(f"{loc(ws)}: sku must be PerGB2018 (pay-as-you-go)")
    if value(ws, "properties", "retentionInDays") != "retentionInDays":
        problems.append(f"{loc(ws)}: retentionInDays must be the retentionInDays parameter")
    if value(ws, "properties", "workspaceCapping", "dailyQuotaGb") != "dailyQuotaGb":
        problems.append(f"{loc(ws)}: workspaceCapping.dailyQuotaGb must be the dailyQuotaGb parameter")
    if string_value(get_path(ws.body, "properties", "publicNetworkAccessForQuery")) != "Enabled":
        problems.append(f"{loc(ws)}: the app queries over the public endpoint: publicNetworkAccessForQuery 'Enabled'")
    if outputs(usage_logs).get("customerId") != f"{ws.symbol}.properties.customerId":
        problems.append(f"{usage_logs.name}: output customerId must be {ws.symbol}.properties.customerId")
    for path, retention, cap in (
        (usage_logs, "retentionInDays", "dailyQuotaGb"),
        (main, "usageLogsRetentionInDays", "usageLogsDailyQuotaGb"),
    ):
        days = default_int(path, retention)
        if days is None or days < 35:
            problems.append(f"{path.name}: {retention} must default to 35 days or more (a month and its closing read)")
        if default_int(path, cap) != -1:
            problems.append(f"{path.name}: {cap} must default to -1: calls past a cap are never billed")

    usage = module(main, "modules/usage-logs.bicep")
    monitoring = module(main, "modules/monitoring.bicep")
    if usage is None or monitoring is None:
        return [*problems, f"{main.name}: needs the usage-logs and monitoring modules"]
    given = module_params(usage)
    if given.get("name") == module_params(monitoring).get("logAnalyticsName"):
        problems.append(f"{loc(usage)}: the gateway logs need a workspace of their own, not Application Insights'")
    passed = (given.get("retentionInDays"), given.get("dailyQuotaGb"))
    if passed != ("usageLogsRetentionInDays", "usageLogsDailyQuotaGb"):
        problems.append(f"{loc(usage)}: pass usageLogsRetentionInDays and usageLogsDailyQuotaGb")
    return problems


def role_problems(app_roles: Path = APP_ROLES, main: Path = MAIN) -> list[str]:
    """Log Analytics Reader for the app's identity, on the usage workspace and nowhere else."""
    problems = []
    by_symbol = resources(app_roles)
    readers = []
    for assignment in role_assignments(declarations(app_roles)):
        role = resolve_string(get_path(assignment.body, "properties", "roleDefinitionId"), app_roles) or ""
        if GUID.findall(role)[-1:] == [LOG_ANALYTICS_READER]:
            readers.append(assignment)
    if len(readers) != 1:
        return [f"{app_roles.name}: expected one Log Analytics Reader assignment, found {len(readers)}"]
    (reader,) = readers
    scope = by_symbol.get(value(reader, "scope") or "")
    if scope is None or scope.resource_type != WORKSPACE:
        problems.append(f"{loc(reader)}: scope must be the Log Analytics workspace itself")
    elif value(scope, "name") != "usageLogsWorkspaceName":
        problems.append(f"{loc(reader)}: scope must be the workspace named by usageLogsWorkspaceName")
    if value(reader, "properties", "principalId") != "principalId":
        problems.append(f"{loc(reader)}: principalId must be the app's identity (principalId)")
    if string_value(get_path(reader.body, "properties", "principalType")) != "ServicePrincipal":
        problems.append(f"{loc(reader)}: principalType must be 'ServicePrincipal'")

    roles, usage = module(main, "modules/app-roles.bicep"), module(main, "modules/usage-logs.bicep")
    if roles is None or usage is None:
        return [*problems, f"{main.name}: needs the app-roles and usage-logs modules"]
    given = module_params(roles)
    if given.get("usageLogsWorkspaceName") != f"{usage.symbol}.outputs.name":
        problems.append(f"{loc(roles)}: usageLogsWorkspaceName must be {usage.symbol}.outputs.name")
    if given.get("principalId") != "identity.outputs.principalId":
        problems.append(f"{loc(roles)}: principalId must be the app's identity")
    return problems


def setting_problems(main: Path = MAIN) -> list[str]:
    """LOG_ANALYTICS_WORKSPACE_ID is the usage workspace's customer id, in the app and in azd's env."""
    problems = []
    if bicep_app_settings().get("LOG_ANALYTICS_WORKSPACE_ID") != "logAnalyticsWorkspaceId":
        problems.append("functionapp.bicep: LOG_ANALYTICS_WORKSPACE_ID must be the logAnalyticsWorkspaceId parameter")
    app, usage = module(main, "modules/functionapp.bicep"), module(main, "modules/usage-logs.bicep")
    if app is None or usage is None:
        return [*problems, f"{main.name}: needs the functionapp and usage-logs modules"]
    customer_id = f"{usage.symbol}.outputs.customerId"
    if module_params(app).get("logAnalyticsWorkspaceId") != customer_id:
        problems.append(f"{loc(app)}: logAnalyticsWorkspaceId must be {customer_id}")
    if outputs(main).get("LOG_ANALYTICS_WORKSPACE_ID") != customer_id:
        problems.append(f"{main.name}: output LOG_ANALYTICS_WORKSPACE_ID must be {customer_id}")
    return problems


# --- the repository passes them ---------------------------------------------------------------


def test_gateway_logs_go_to_the_workspace_resource_specific_and_unsampled() -> None:
    assert gateway_log_problems() == []


def test_both_apim_paths_get_the_gateway_logs() -> None:
    assert apim_path_problems() == []


def test_the_usage_workspace_is_its_own() -> None:
    assert workspace_problems() == []


def test_the_app_reads_the_usage_workspace_only() -> None:
    assert role_problems() == []


def test_the_app_gets_the_workspace_customer_id() -> None:
    assert setting_problems() == []


def test_the_deploy_guide_explains_usage_metering() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    heading = re.search(r"^## (?:\d+\. )?Usage metering.*$", docs, re.MULTILINE)
    assert heading, "docs/deploy.md needs a section 'Usage metering ...'"
    body = docs[heading.end() :].split("\n## ", 1)[0]
    for needed in (
        "ApiManagementGatewayLogs",
        "Log Analytics Reader",
        "USAGE_REPORT_LAG_MINUTES",
        "15 March 2027",
        "USAGE_SOURCE=reports",
        "per million calls",
        "Basic",
    ):
        assert needed in body, f"the usage metering section must mention {needed!r}"
    assert "log-usage-<token>" in docs.split("\n## ", 2)[1], "the table of created resources must list the workspace"


# --- and each check fails when its piece is missing -------------------------------------------


def all_problems(replaced: dict[Path, Path]) -> list[str]:
    """Every check, with some files replaced by (broken) copies."""

    def f(path: Path) -> Path:
        return replaced.get(path, path)

    return [
        *gateway_log_problems(f(APIM_LOGGING)),
        *apim_path_problems(f(MAIN)),
        *workspace_problems(f(USAGE_LOGS), f(MAIN)),
        *role_problems(f(APP_ROLES), f(MAIN)),
        *setting_problems(f(MAIN)),
    ]


# (file, text replaced once, replacement, words expected in a problem)
MUTATIONS = [
    (
        APIM_LOGGING,
        "logAnalyticsDestinationType: 'Dedicated'",
        "logAnalyticsDestinationType: 'AzureDiagnostics'",
        "'Dedicated'",
    ),
    (APIM_LOGGING, "category: 'GatewayLogs'", "category: 'WebSocketConnectionLogs'", "GatewayLogs must be enabled"),
    (APIM_LOGGING, "        enabled: true\n", "        enabled: false\n", "GatewayLogs must be enabled"),
    (APIM_LOGGING, "    workspaceId: workspaceId\n", "    workspaceId: 'elsewhere'\n", "workspaceId must be"),
    (APIM_LOGGING, "  scope: apim\n", "", "scope must be the API Management instance"),
    (
        APIM_LOGGING,
        "'Microsoft.Insights/diagnosticSettings@2021-05-01-preview'",
        "'Microsoft.Insights/somethingElse@2021-05-01-preview'",
        "no diagnostic setting",
    ),
    (APIM_LOGGING, "percentage: 100", "percentage: 50", "sampling.percentage must be 100"),
    (APIM_LOGGING, "samplingType: 'fixed'", "samplingType: 'adaptive'", "samplingType"),
    (
        APIM_LOGGING,
        "name: 'azuremonitor'\n  properties: {\n    loggerId",
        "name: 'applicationinsights'\n  properties: {\n    loggerId",
        "no 'azuremonitor' diagnostic",
    ),
    (APIM_LOGGING, "loggerType: 'azureMonitor'", "loggerType: 'applicationInsights'", "azureMonitor logger"),
    (
        MAIN,
        "module apimLogging 'modules/apim-logging.bicep' = {",
        "module apimLogging 'modules/apim-logging.bicep' = if (!useExistingApim) {",
        "new and an existing instance",
    ),
    (
        MAIN,
        "  scope: apimRg\n  params: {\n    apimName: apimServiceName\n    workspaceId",
        "  scope: rg\n  params: {\n    apimName: apimServiceName\n    workspaceId",
        "(apimRg)",
    ),
    (
        MAIN,
        "    apimName: apimServiceName\n    workspaceId",
        "    apimName: 'apim-other'\n    workspaceId",
        "apimName must be apimServiceName",
    ),
    (
        MAIN,
        "    workspaceId: usageLogs.outputs.id\n  }\n  dependsOn: [\n    newApim\n  ]",
        "    workspaceId: usageLogs.outputs.id\n  }",
        "dependsOn",
    ),
    (MAIN, "    workspaceId: usageLogs.outputs.id\n", "    workspaceId: 'x'\n", "workspaceId must be usageLogs"),
    (MAIN, "    name: 'log-usage-${resourceToken}'", "    name: 'log-${resourceToken}'", "a workspace of their own"),
    (MAIN, "param usageLogsDailyQuotaGb int = -1", "param usageLogsDailyQuotaGb int = 10", "never billed"),
    (USAGE_LOGS, "param retentionInDays int = 90", "param retentionInDays int = 30", "35 days or more"),
    (USAGE_LOGS, "    retentionInDays: retentionInDays\n", "    retentionInDays: 30\n", "retentionInDays parameter"),
    (
        USAGE_LOGS,
        "publicNetworkAccessForQuery: 'Enabled'",
        "publicNetworkAccessForQuery: 'Disabled'",
        "public endpoint",
    ),
    (
        USAGE_LOGS,
        "output customerId string = workspace.properties.customerId",
        "output customerId string = workspace.id",
        "output customerId",
    ),
    (
        APP_ROLES,
        "  logAnalyticsReader: '73c42c96-874c-492b-b04d-ab87d138a893'",
        "  logAnalyticsReader: 'acdd72a7-3385-48ef-bd42-f606fba81ae7'",
        "one Log Analytics Reader assignment",
    ),
    (APP_ROLES, "  scope: usageLogs\n", "  scope: appInsights\n", "the Log Analytics workspace itself"),
    (APP_ROLES, "  scope: usageLogs\n", "", "the Log Analytics workspace itself"),
    (
        APP_ROLES,
        "    principalId: principalId\n    principalType: 'ServicePrincipal'\n  }\n}\n\n// The operator",
        "    principalId: operatorPrincipalId\n    principalType: 'ServicePrincipal'\n  }\n}\n\n// The operator",
        "the app's identity",
    ),
    (
        MAIN,
        "    usageLogsWorkspaceName: usageLogs.outputs.name\n",
        "    usageLogsWorkspaceName: 'other'\n",
        "usageLogsWorkspaceName must be",
    ),
    (MAIN, "    logAnalyticsWorkspaceId: usageLogs.outputs.customerId\n", "", "logAnalyticsWorkspaceId must be"),
    (
        MAIN,
        "output LOG_ANALYTICS_WORKSPACE_ID string = usageLogs.outputs.customerId",
        "output LOG_ANALYTICS_WORKSPACE_ID string = usageLogs.outputs.id",
        "output LOG_ANALYTICS_WORKSPACE_ID",
    ),
]


@pytest.mark.parametrize(
    ("path", "old", "new", "expected"), MUTATIONS, ids=[f"{m[0].stem}-{i}" for i, m in enumerate(MUTATIONS)]
)
def test_a_missing_piece_is_reported(tmp_path: Path, path: Path, old: str, new: str, expected: str) -> None:
    source = path.read_text(encoding="utf-8")
    assert source.count(old) == 1, f"{path.name}: the mutation must match exactly once: {old!r}"
    broken = tmp_path / path.name
    broken.write_text(source.replace(old, new), encoding="utf-8")
    problems = all_problems({path: broken})
    assert any(expected in p for p in problems), problems
