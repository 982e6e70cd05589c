"""E-mail through Azure Communication Services (infra/modules/email.bicep): the resources, the
SMTP login's Entra application and its role, the SMTP app settings, and the wiring from main.bicep."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.infra.bicep_tree import (
    GUID,
    INFRA,
    ROOT,
    Declaration,
    declarations,
    get_path,
    params,
    properties,
    resolve_string,
    string_value,
    text,
    top_level,
    variables,
)
from tests.infra.test_settings import KEY_VAULT_REFERENCE, bicep_app_settings

EMAIL = INFRA / "modules" / "email.bicep"
MAIN = INFRA / "main.bicep"
FUNCTION_APP = INFRA / "modules" / "functionapp.bicep"
# The first stable Microsoft.Communication API version that has smtpUsernames.
API_VERSION = "2025-09-01"
# Built-in "Communication and Email Service Owner" (Azure built-in roles, Integration).
COMMUNICATION_AND_EMAIL_SERVICE_OWNER = "09976791-48a7-449e-bb21-39d1a415f350"


def resources(path: Path = EMAIL) -> dict[str, Declaration]:
    return {d.symbol: d for d in declarations(path) if d.kind == "resource"}


def one(resource_type: str) -> Declaration:
    found = [d for d in resources().values() if d.resource_type == resource_type and not d.existing]
    assert len(found) == 1, f"infra/modules/email.bicep: expected one {resource_type}, found {len(found)}"
    return found[0]


def value(decl: Declaration, *path: str) -> str:
    node = get_path(decl.body, *path)
    assert node is not None, f"{decl.where}: {'.'.join(path)} is not set"
    return text(node)


def email_module() -> Declaration:
    (module,) = [d for d in declarations(MAIN) if d.kind == "module" and d.type == "modules/email.bicep"]
    return module


def module_params(module: Declaration) -> dict[str, str]:
    return {name: text(node) for name, node in properties(get_path(module.body, "params")).items()}


def function_app_params() -> dict[str, str]:
    (module,) = [d for d in declarations(MAIN) if d.kind == "module" and d.type == "modules/functionapp.bicep"]
    return module_params(module)


def outputs(path: Path) -> dict[str, str]:
    return {text(o.named_children[0]): text(o.named_children[-1]) for o in top_level(path, "output_declaration")}


def test_the_email_resources_exist_with_a_stable_api_version() -> None:
    expected = {
        "Microsoft.Communication/emailServices",
        "Microsoft.Communication/emailServices/domains",
        "Microsoft.Communication/communicationServices",
        "Microsoft.Communication/communicationServices/smtpUsernames",
    }
    found = {d.resource_type: d for d in resources().values() if d.resource_type.startswith("Microsoft.Communication/")}
    assert set(found) == expected
    for decl in found.values():
        assert decl.type.endswith(f"@{API_VERSION}"), f"{decl.where}: {decl.type} is not @{API_VERSION}"
        assert not decl.existing, f"{decl.where}: the module creates its resources"


def test_the_managed_domain_is_azure_managed_and_linked() -> None:
    email_service = one("Microsoft.Communication/emailServices")
    domain = one("Microsoft.Communication/emailServices/domains")
    acs = one("Microsoft.Communication/communicationServices")
    assert value(domain, "parent") == email_service.symbol
    # The name an Azure-managed domain must have ("Create Domain resource", Azure CLI).
    assert value(domain, "name") == "'AzureManagedDomain'"
    assert value(domain, "properties", "domainManagement") == "'AzureManaged'"
    for decl in (email_service, domain, acs):
        assert value(decl, "location") == "'global'", f"{decl.where}: ACS resources live in 'global'"
    # The same data location on both, or the domain cannot be linked.
    assert value(email_service, "properties", "dataLocation") == value(acs, "properties", "dataLocation")
    assert string_value(params(EMAIL)["dataLocation"].default) == "United States"
    linked = value(acs, "properties", "linkedDomains")
    assert f"{domain.symbol}.id" in linked, f"{acs.where}: linkedDomains must hold the managed domain"


def test_the_smtp_login_is_bound_to_the_entra_application() -> None:
    acs = one("Microsoft.Communication/communicationServices")
    login = one("Microsoft.Communication/communicationServices/smtpUsernames")
    assert value(login, "parent") == acs.symbol
    assert re.fullmatch(r"'[a-zA-Z0-9-]+'", value(login, "name")), "smtpUsernames names match ^[a-zA-Z0-9-]+$"
    assert value(login, "properties", "entraApplicationId") == "smtpEntraApplicationId"
    assert value(login, "properties", "tenantId") == "smtpTenantId"
    assert text(params(EMAIL)["smtpTenantId"].default) == "tenant().tenantId"
    # E-mail form on a linked domain (the managed one), so it cannot collide with another login.
    username = text(variables(EMAIL)[value(login, "properties", "username")])
    assert re.fullmatch(r"'[\w.-]+@\$\{managedDomain\.properties\.mailFromSenderDomain\}'", username), username
    assert outputs(EMAIL)["smtpUsername"] == "smtpEnabled ? smtpLogin : ''"


def test_the_entra_application_gets_its_role_on_the_communication_service_only() -> None:
    by_symbol = resources()
    (assignment,) = [d for d in by_symbol.values() if d.resource_type == "Microsoft.Authorization/roleAssignments"]
    scope = by_symbol[value(assignment, "scope")]
    assert scope.resource_type == "Microsoft.Communication/communicationServices"
    role = resolve_string(get_path(assignment.body, "properties", "roleDefinitionId"), EMAIL)
    assert role is not None
    assert GUID.findall(role)[-1].lower() == COMMUNICATION_AND_EMAIL_SERVICE_OWNER
    assert value(assignment, "properties", "principalId") == "smtpServicePrincipalId"
    assert value(assignment, "properties", "principalType") == "'ServicePrincipal'"
    assert f"guid({scope.symbol}.id, smtpServicePrincipalId," in value(assignment, "name")


def test_the_login_and_role_wait_for_the_entra_application() -> None:
    """Before the provider has registered the application, `azd up` still works, without SMTP."""
    source = EMAIL.read_text(encoding="utf-8")
    for decl in resources().values():
        if decl.resource_type in (
            "Microsoft.Communication/communicationServices/smtpUsernames",
            "Microsoft.Authorization/roleAssignments",
        ):
            assert re.search(rf"resource {decl.symbol} '[^']+' = if \(smtpEnabled\)", source), decl.where
    enabled = text(variables(EMAIL)["smtpEnabled"])
    assert "smtpEntraApplicationId" in enabled
    assert "smtpServicePrincipalId" in enabled


def test_no_secret_passes_through_the_email_module() -> None:
    assert not [p.name for p in params(EMAIL).values() if p.secure]
    assert "listKeys(" not in EMAIL.read_text(encoding="utf-8"), "SMTP signs in with Entra ID, not ACS keys"
    assert not [d for d in declarations(EMAIL) if d.resource_type == "Microsoft.KeyVault/vaults/secrets"]


def test_the_smtp_password_is_an_unversioned_key_vault_reference() -> None:
    settings = bicep_app_settings()
    password = settings["SMTP_PASSWORD"].strip("'")
    assert KEY_VAULT_REFERENCE.match(password)
    assert password == "@Microsoft.KeyVault(SecretUri=${secretsBase}/${smtpPasswordSecretName})"
    assert not params(FUNCTION_APP)["smtpPasswordSecretName"].secure
    secret_names = properties(variables(MAIN)["secretNames"])
    assert string_value(secret_names["smtpPassword"]) == "smtp-password"
    assert function_app_params()["smtpPasswordSecretName"] == "secretNames.smtpPassword"
    assert outputs(MAIN)["SMTP_PASSWORD_SECRET_NAME"] == "secretNames.smtpPassword"


def test_the_smtp_settings_point_at_azure_communication_services() -> None:
    settings = bicep_app_settings()
    defaults = json.loads((INFRA / "app-settings-defaults.json").read_text(encoding="utf-8"))
    assert settings["SMTP_PORT"] == "appDefaults.SMTP_PORT"
    assert defaults["SMTP_PORT"] == "587"
    assert settings["SMTP_STARTTLS"] == "appDefaults.SMTP_STARTTLS"
    assert defaults["SMTP_STARTTLS"] == "true"
    assert string_value(variables(EMAIL)["smtpHost"]) == "smtp.azurecomm.net"
    assert outputs(EMAIL)["smtpHost"] == "smtpHost"
    # main.bicep hands the module's outputs to the Function App settings.
    given = function_app_params()
    for setting, param, output in (
        ("SMTP_HOST", "smtpHost", "smtpHost"),
        ("SMTP_USERNAME", "smtpUsername", "smtpUsername"),
        ("MAIL_SENDER", "mailSender", "mailSender"),
    ):
        assert settings[setting] == param, f"{setting} must be the functionapp.bicep parameter {param}"
        assert given[param] == f"email.outputs.{output}", f"main.bicep must pass email.outputs.{output} as {param}"


def test_the_sender_is_donotreply_at_the_managed_domain_unless_overridden() -> None:
    sender = outputs(EMAIL)["mailSender"]
    assert sender == "empty(mailSender) ? defaultSender : mailSender"
    default = text(variables(EMAIL)["defaultSender"])
    assert "'DoNotReply@${managedDomain.properties.mailFromSenderDomain}'" in default
    assert "'DoNotReply@${customDomainName}'" in default


def test_a_custom_domain_is_linked_besides_the_managed_one() -> None:
    acs = one("Microsoft.Communication/communicationServices")
    linked = value(acs, "properties", "linkedDomains")
    assert linked == "concat([managedDomain.id], useCustomDomain ? [customDomainId] : [])"
    custom_id = text(variables(EMAIL)["customDomainId"])
    domain_id = "resourceId('Microsoft.Communication/emailServices/domains', emailService.name, customDomainName)"
    assert domain_id in custom_id


def test_main_wires_the_email_module_parameters() -> None:
    module = email_module()
    assert text(get_path(module.body, "scope")) == "rg"
    given = module_params(module)
    assert given["emailServiceName"] == "'ecs-${resourceToken}'"
    assert given["communicationServiceName"] == "'acs-${resourceToken}'"
    wired = {
        "dataLocation": "emailDataLocation",
        "smtpEntraApplicationId": "smtpEntraAppClientId",
        "smtpServicePrincipalId": "smtpServicePrincipalId",
        "customDomainName": "emailCustomDomainName",
        "mailSender": "mailSenderOverride",
        "tags": "tags",
    }
    main_params = params(MAIN)
    for module_param, main_param in wired.items():
        assert given.get(module_param) == main_param, f"main.bicep must pass {main_param} as {module_param}"
        if main_param != "tags":
            assert main_param in main_params, f"main.bicep declares no parameter {main_param}"
            assert not main_params[main_param].secure
            assert main_params[main_param].default is not None, f"{main_param} must be optional for `azd up`"


def test_azd_sets_the_email_parameters_from_its_environment() -> None:
    document = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    expected = {
        "smtpEntraAppClientId": "SMTP_ENTRA_APP_CLIENT_ID",
        "smtpServicePrincipalId": "SMTP_SERVICE_PRINCIPAL_ID",
        "emailDataLocation": "EMAIL_DATA_LOCATION",
        "emailCustomDomainName": "EMAIL_CUSTOM_DOMAIN",
        "mailSenderOverride": "MAIL_SENDER_OVERRIDE",
    }
    main_outputs = set(outputs(MAIN))
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for param, variable in expected.items():
        assert re.fullmatch(rf"\$\{{{variable}=[^}}]*\}}", document[param]["value"]), document[param]
        # azd writes the outputs into the same .env: an output of the same name would feed back.
        assert variable not in main_outputs, f"{variable} is both an azd input and a main.bicep output"
        assert variable in docs, f"docs/deploy.md must say how to set {variable}"
    assert string_value(params(MAIN)["emailDataLocation"].default) == "United States"
    assert document["emailDataLocation"]["value"] == "${EMAIL_DATA_LOCATION=United States}"


def test_main_outputs_the_email_names_and_no_secret() -> None:
    main_outputs = outputs(MAIN)
    assert main_outputs["SMTP_USERNAME"] == "email.outputs.smtpUsername"
    assert main_outputs["MAIL_SENDER"] == "email.outputs.mailSender"
    assert main_outputs["AZURE_COMMUNICATION_SERVICE_NAME"] == "email.outputs.communicationServiceName"


def test_the_postprovision_hook_checks_the_smtp_password_and_login() -> None:
    hook = (INFRA / "hooks" / "postprovision.sh").read_text(encoding="utf-8")
    assert "SMTP_PASSWORD_SECRET_NAME:-smtp-password" in hook
    assert "SMTP_USERNAME" in hook


def test_the_deploy_guide_has_the_email_section() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    heading = re.search(r"^## (?:\d+\. )?E-mail \(Azure Communication Services\)$", docs, re.MULTILINE)
    assert heading, "docs/deploy.md needs a section 'E-mail (Azure Communication Services)'"
    body = docs[heading.end() :].split("\n## ", 1)[0]
    for needed in (
        "smtp-password",
        "Communication and Email Service Owner",
        "smtp.azurecomm.net",
        "az ad app credential reset",
        "custom domain",
    ):
        assert needed.lower() in body.lower(), f"the e-mail section must mention {needed!r}"
