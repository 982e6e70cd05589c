"""No secrets in parameters or outputs; HTTPS and TLS 1.2; delegation wired to the app;
what is deployed and what is not."""

from __future__ import annotations

import json
import re

from tests.infra.bicep_tree import (
    INFRA,
    ROOT,
    Declaration,
    all_declarations,
    bicep_files,
    get_path,
    params,
    string_value,
    text,
    top_level,
)

SECRET_LOOKING = re.compile(r"\b(sk|rk)_(live|test)_\w+|\bwhsec_\w+|AccountKey=|SharedAccessSignature=")
AZD_SUBSTITUTION = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*(=[^}]*)?\}$")
AZD_SECRET_FROM_ENV = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*\}$")


def only(resource_type: str) -> list[Declaration]:
    return [d for d in all_declarations() if d.resource_type == resource_type and not d.existing]


def prop(decl: Declaration, *path: str) -> str:
    node = get_path(decl.body, *path)
    assert node is not None, f"{decl.where}: {'.'.join(path)} is not set"
    return text(node)


def test_parameters_file_holds_no_secret() -> None:
    main_params = params(INFRA / "main.bicep")
    document = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    for name, entry in document["parameters"].items():
        assert name in main_params, f"main.parameters.json sets {name!r}, which main.bicep does not declare"
        value = entry.get("value")
        if main_params[name].secure:
            # Only as a value of the azd environment (never a literal, never a default in the file).
            assert isinstance(value, str), f"{name} is @secure(): not a literal value"
            assert AZD_SECRET_FROM_ENV.match(value), (
                f"{name} is @secure(): in main.parameters.json only as ${{NAME}} (azd environment), not {value!r}"
            )
        assert "reference" not in entry, f"{name}: no Key Vault references in the parameters file"
        if isinstance(value, str):
            assert not SECRET_LOOKING.search(value), f"{name} looks like a secret"
            assert AZD_SUBSTITUTION.match(value), f"{name}: use an azd ${{VAR}} substitution, not {value!r}"


def test_secure_parameters_have_no_literal_secret_defaults() -> None:
    for path in bicep_files():
        for param in params(path).values():
            if param.secure and param.default is not None:
                assert string_value(param.default) is None, f"{path.name}: @secure {param.name} has a literal default"


def test_outputs_expose_no_secret() -> None:
    for path in bicep_files():
        secure = {name for name, p in params(path).items() if p.secure}
        for output in top_level(path, "output_declaration"):
            source = text(output)
            identifiers = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source))
            leaked = identifiers & secure
            assert not leaked, f"{path.name}: output uses secure parameter(s) {sorted(leaked)}"
            for call in ("listKeys(", "listSecrets(", "getSecret(", "ConnectionString", "InstrumentationKey"):
                assert call not in source, f"{path.name}: output uses {call}"


def test_function_app_is_https_only_with_tls12() -> None:
    (site,) = only("Microsoft.Web/sites")
    assert prop(site, "properties", "httpsOnly") == "true"
    assert prop(site, "properties", "siteConfig", "minTlsVersion") == "'1.2'"
    assert prop(site, "properties", "siteConfig", "scmMinTlsVersion") == "'1.2'"
    assert prop(site, "properties", "siteConfig", "ftpsState") == "'Disabled'"
    assert prop(site, "identity", "type") == "'UserAssigned'"
    # Key Vault references must resolve with the user-assigned identity (no system identity exists).
    assert prop(site, "properties", "keyVaultReferenceIdentity")
    policies = only("Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {prop(p, "name") for p in policies} == {"'scm'", "'ftp'"}
    assert {prop(p, "properties", "allow") for p in policies} == {"false"}


def test_storage_key_vault_and_insights_are_locked_down() -> None:
    (account,) = only("Microsoft.Storage/storageAccounts")
    assert prop(account, "properties", "minimumTlsVersion") == "'TLS1_2'"
    assert prop(account, "properties", "supportsHttpsTrafficOnly") == "true"
    assert prop(account, "properties", "allowBlobPublicAccess") == "false"
    (vault,) = only("Microsoft.KeyVault/vaults")
    assert prop(vault, "properties", "enableRbacAuthorization") == "true"
    assert "accessPolicies" not in text(vault.node)
    (insights,) = only("Microsoft.Insights/components")
    assert prop(insights, "properties", "DisableLocalAuth") == "true"
    assert prop(insights, "properties", "WorkspaceResourceId")


def test_deployment_package_is_pulled_with_the_user_assigned_identity() -> None:
    (site,) = only("Microsoft.Web/sites")
    auth = ("properties", "functionAppConfig", "deployment", "storage", "authentication")
    assert prop(site, *auth, "type") == "'UserAssignedIdentity'"
    assert prop(site, *auth, "userAssignedIdentityResourceId")
    assert "storageAccountConnectionStringName" not in text(site.node)


def test_delegation_points_at_the_app_with_a_key_created_once_and_kept() -> None:
    (delegation,) = [
        d for d in only("Microsoft.ApiManagement/service/portalsettings") if prop(d, "name") == "'delegation'"
    ]
    assert prop(delegation, "properties", "subscriptions", "enabled") == "true"
    assert prop(delegation, "properties", "userRegistration", "enabled")
    key_param = prop(delegation, "properties", "validationKey")
    assert params(delegation.file)[key_param].secure, "the validation key must be a @secure() parameter"
    main = INFRA / "main.bicep"
    source = main.read_text(encoding="utf-8")
    url_passed = re.search(r"delegationUrl:\s*'([^']*)'", source)
    assert url_passed, "main.bicep must pass delegationUrl to the APIM wiring"
    assert url_passed.group(1).startswith("https://")
    assert url_passed.group(1).endswith("/api/delegation")
    # Not generated per deployment: no newGuid() anywhere (a default would rotate the key, voiding
    # every session and form the app signed with it), no default at all (a missing key must fail).
    for path in bicep_files():
        assert "newGuid(" not in path.read_text(encoding="utf-8"), f"{path.name}: newGuid() is new per deployment"
    key = params(main)["delegationValidationKey"]
    assert key.secure, "delegationValidationKey must be @secure()"
    assert key.default is None, "delegationValidationKey: no default (a missing key must fail the deployment)"
    decorators = source.split("param delegationValidationKey", 1)[0].rsplit("\n\n", 1)[-1]
    min_length = re.search(r"^@minLength\((\d+)\)$", decorators, re.MULTILINE)
    assert min_length, "delegationValidationKey needs a @minLength"
    assert int(min_length.group(1)) >= 44, "delegationValidationKey: @minLength(44) or more (256 bits)"
    # APIM and Key Vault (so the app) get the same key.
    assert len(re.findall(r"delegationValidationKey:\s*delegationValidationKey\b", source)) == 2
    # Its value comes from the azd environment, which the preprovision hook fills once and keeps.
    document = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    env_value = document["parameters"]["delegationValidationKey"]["value"]
    assert env_value == "${APIM_DELEGATION_VALIDATION_KEY}"
    manifest = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    assert re.search(
        r"^  preprovision:\n    posix:\n      shell: sh\n      run: infra/hooks/preprovision.sh\n"
        r"      interactive: false\n      continueOnError: false$",
        manifest,
        re.MULTILINE,
    )
    hook = (INFRA / "hooks" / "preprovision.sh").read_text(encoding="utf-8")
    assert 'sh "$here/kept-key.sh"\n' in hook
    script = (INFRA / "hooks" / "kept-key.sh").read_text(encoding="utf-8")
    assert "name=${1:-APIM_DELEGATION_VALIDATION_KEY}\n" in script
    secret = re.search(r"delegationKey:\s*'([^']+)'", source)
    assert secret, "main.bicep: no secretNames.delegationKey"
    assert f"secret=${{2:-{secret.group(1)}}}\n" in script, "kept-key.sh must read the secret keyvault.bicep writes"


def test_sessions_have_their_own_keys_created_once_and_kept() -> None:
    """Sessions and forms are signed with PORTAL_SESSION_KEYS, not the delegation key: from the azd
    environment (kept by the hook), into Key Vault, referenced by version so a rotation reaches the app."""
    main = INFRA / "main.bicep"
    source = main.read_text(encoding="utf-8")
    keys = params(main)["portalSessionKeys"]
    assert keys.secure
    assert keys.default is None
    document = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    assert document["parameters"]["portalSessionKeys"]["value"] == "${PORTAL_SESSION_KEYS}"
    assert re.search(r"portalSessionKeys:\s*portalSessionKeys\b", source), "main.bicep must pass it to Key Vault"
    app = (INFRA / "modules" / "functionapp.bicep").read_text(encoding="utf-8")
    assert "PORTAL_SESSION_KEYS: '@Microsoft.KeyVault(SecretUri=${sessionKeysSecretUri})'" in app


def test_key_vault_stores_the_delegation_key() -> None:
    secrets = only("Microsoft.KeyVault/vaults/secrets")
    assert secrets, "the delegation validation key must be stored in Key Vault"
    for secret in secrets:
        value = prop(secret, "properties", "value")
        assert params(secret.file)[value].secure, f"{secret.where}: secret value must come from a @secure() param"


def test_new_apim_sku_can_delegate() -> None:
    # Consumption has no developer portal, hence no delegation.
    (apim,) = only("Microsoft.ApiManagement/service")
    allowed = text(next(d for d in top_level(apim.file, "decorators") if "@allowed" in text(d)))
    assert "'Consumption'" not in allowed


def test_funcignore_keeps_tooling_out_of_the_package() -> None:
    lines = {
        line.strip().rstrip("/")
        for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for path in ("emulators", "devstack", "devhost", "tests", "bench", "node_modules", ".venv", "docs", "infra"):
        assert path in lines, f".funcignore must exclude {path}/"
    for deployed in ("function_app.py", "host.json", "billing", "payment", "requirements.txt"):
        assert deployed not in lines, f".funcignore must not exclude {deployed}"


def test_azure_yaml_deploys_the_tagged_function_app() -> None:
    manifest = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    services = re.search(r"^services:\n((?:[ #].*\n)+)", manifest, re.MULTILINE)
    assert services, "azure.yaml has no services section"
    service = re.search(r"^  ([a-z][\w-]*):\n", services.group(1), re.MULTILINE)
    assert service
    assert re.search(r"^    host: function$", services.group(1), re.MULTILINE)
    assert re.search(r"^    language: python$", services.group(1), re.MULTILINE)
    (site,) = only("Microsoft.Web/sites")
    assert f"'azd-service-name': '{service.group(1)}'" in prop(site, "tags")
    assert re.search(r"^  path: infra$", manifest, re.MULTILINE)
