"""The settings the app reads (billing/config.py), local.settings.sample.json and the Function App
settings in Bicep are one set; secrets are Key Vault references; storage has no key."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from billing import config
from tests.infra.bicep_tree import (
    INFRA,
    ROOT,
    Declaration,
    all_declarations,
    get_path,
    properties,
    string_value,
    text,
)

# Read by the Functions host (Entra ID auth for App Insights ingestion), not by the app. It belongs
# in config.PLATFORM_SETTINGS; listed here until it is there, so the check stays exact otherwise.
HOST_SETTINGS = config.PLATFORM_SETTINGS | {"APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
# Flex Consumption rejects these as app settings: runtime and version live in functionAppConfig.
FLEX_FORBIDDEN = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
}
KEY_VAULT_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\(SecretUri=.+\)$")
APP_SETTING_NAMES = {s.name for s in config.SETTINGS}


def family(name: str) -> str:
    """`AzureWebJobsStorage__accountName` belongs to `AzureWebJobsStorage`; others are their own."""
    prefix = name.split("__", 1)[0]
    return prefix if prefix in config.CONNECTION_SETTINGS else name


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_gen", INFRA / "settings_gen.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def app_settings_resource() -> Declaration:
    found = [
        d
        for d in all_declarations()
        if d.resource_type == "Microsoft.Web/sites/config"
        and string_value(properties(d.body).get("name")) == "appsettings"
    ]
    assert len(found) == 1, f"expected one Function App 'appsettings' resource, found {[d.where for d in found]}"
    return found[0]


def bicep_app_settings() -> dict[str, str]:
    """Name -> value source text of the Function App settings in Bicep."""
    settings = get_path(app_settings_resource().body, "properties")
    assert settings is not None, "the appsettings resource has no 'properties'"
    assert settings.type == "object", (
        "the appsettings 'properties' must be one object literal, so that its names can be checked"
    )
    return {name: text(value) for name, value in properties(settings).items()}


def describe(missing: set[str], extra: set[str], where: str) -> str:
    parts = []
    if missing:
        parts.append(f"{where} lacks {sorted(missing)}, which billing/config.py declares: add them there")
    if extra:
        parts.append(
            f"{where} has {sorted(extra)}, which billing/config.py does not declare: declare them in "
            "billing/config.py or remove them"
        )
    return "; ".join(parts) + " (`python infra/settings_gen.py` rewrites local.settings.sample.json)"


def test_bicep_app_settings_are_the_settings_the_app_reads() -> None:
    names = set(bicep_app_settings())
    families = {family(n) for n in names} - HOST_SETTINGS
    missing, extra = APP_SETTING_NAMES - families, families - APP_SETTING_NAMES
    assert missing | extra == set(), describe(missing, extra, "infra/modules/functionapp.bicep appsettings")


def test_sample_lists_the_settings_the_app_reads() -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))
    assert sample["IsEncrypted"] is False
    assert sample["Host"]["LocalHttpPort"] == 7071
    values = sample["Values"]
    families = {family(n) for n in values} - config.PLATFORM_SETTINGS
    missing, extra = APP_SETTING_NAMES - families, families - APP_SETTING_NAMES
    assert missing | extra == set(), describe(missing, extra, "local.settings.sample.json")
    # The local stack: Azurite for storage, the Python worker for the host.
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    for setting in config.SETTINGS:
        assert values[setting.name] == setting.local, f"{setting.name}: sample value is not config's local value"


def test_generated_files_are_up_to_date() -> None:
    generator = load_generator()
    problems = [p for path, data in generator.targets() for p in generator.differences(path, data)]
    assert not problems, "\n".join(problems) + "\nRun `python infra/settings_gen.py` to regenerate."


def test_generator_names_a_setting_missing_from_the_sample(tmp_path: Path) -> None:
    generator = load_generator()
    expected = generator.sample_settings()
    stale = json.loads(json.dumps(expected))
    dropped = config.SETTINGS[-1].name
    del stale["Values"][dropped]
    stale["Values"]["NOT_A_SETTING"] = "x"
    path = tmp_path / "local.settings.sample.json"
    path.write_text(json.dumps(stale), encoding="utf-8")
    problems = generator.differences(path, expected)
    assert any(dropped in p and "lacks" in p for p in problems), problems
    assert any("NOT_A_SETTING" in p for p in problems), problems


def test_generator_check_fails_on_a_stale_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = load_generator()
    stale = tmp_path / "sample.json"
    stale.write_text('{"IsEncrypted": false, "Values": {}}', encoding="utf-8")
    monkeypatch.setattr(generator, "SAMPLE_PATH", stale)
    assert generator.main(["--check"]) == 1


def test_app_defaults_file_holds_config_defaults() -> None:
    defaults = json.loads((INFRA / "app-settings-defaults.json").read_text(encoding="utf-8"))
    for name, value in defaults.items():
        assert config.SETTINGS_BY_NAME[name].default == value
        assert not config.SETTINGS_BY_NAME[name].secret


def test_every_secret_setting_is_a_key_vault_reference() -> None:
    settings = bicep_app_settings()
    for setting in config.SETTINGS:
        if not setting.secret or setting.name in config.CONNECTION_SETTINGS:
            continue
        value = settings[setting.name].strip("'")
        assert KEY_VAULT_REFERENCE.match(value), (
            f"{setting.name} is secret: its Bicep value must be '@Microsoft.KeyVault(SecretUri=...)', "
            f"not {settings[setting.name]}"
        )
        assert "${" in value, f"{setting.name}: the SecretUri must be built from the vault, not typed in"


def test_storage_connections_are_identity_based_without_a_key() -> None:
    settings = bicep_app_settings()
    for name in config.CONNECTION_SETTINGS:
        assert name not in settings, f"{name} as a connection string would need an account key; use {name}__*"
        assert settings.get(f"{name}__credential") == "'managedidentity'"
        assert f"{name}__clientId" in settings, f"{name}__clientId must name the user-assigned identity"
        assert f"{name}__accountName" in settings or f"{name}__blobServiceUri" in settings
        for service in ("queue", "table"):  # the app's queues and tables
            assert f"{name}__{service}ServiceUri" in settings or f"{name}__accountName" in settings
    for path in INFRA.rglob("*.bicep"):
        source = path.read_text(encoding="utf-8")
        for marker in ("AccountKey", "listKeys(", "SharedAccessSignature", "listAccountSas("):
            assert marker not in source, f"{path.relative_to(ROOT)} uses {marker}: storage must be keyless"


def test_storage_account_disallows_shared_key_access() -> None:
    accounts = [
        d for d in all_declarations() if d.resource_type == "Microsoft.Storage/storageAccounts" and not d.existing
    ]
    assert accounts
    for account in accounts:
        assert text(get_path(account.body, "properties", "allowSharedKeyAccess")) == "false", account.where


def test_flex_consumption_runtime_is_declared_outside_app_settings() -> None:
    settings = bicep_app_settings()
    assert not FLEX_FORBIDDEN & set(settings), f"Flex Consumption rejects {sorted(FLEX_FORBIDDEN & set(settings))}"
    sites = [d for d in all_declarations() if d.resource_type == "Microsoft.Web/sites" and not d.existing]
    assert len(sites) == 1
    runtime = get_path(sites[0].body, "properties", "functionAppConfig", "runtime")
    assert string_value(get_path(runtime, "name")) == "python"
    assert string_value(get_path(runtime, "version")) == "3.11"
    plans = [d for d in all_declarations() if d.resource_type == "Microsoft.Web/serverfarms"]
    assert [string_value(get_path(p.body, "sku", "tier")) for p in plans] == ["FlexConsumption"]


ENV_READ = re.compile(
    r"""(?:os\.environ(?:\.get)?|os\.getenv|\benv\.get|\bsource\.get|config\.get)\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""
    r"""|os\.environ\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\]"""
)


def test_the_app_reads_no_setting_that_config_does_not_declare() -> None:
    """billing/config.py is the one list: an env read elsewhere must name a declared setting."""
    sources = [ROOT / "function_app.py", *sorted((ROOT / "billing").rglob("*.py"))]
    undeclared = []
    for path in sources:
        if not path.is_file() or path.name == "config.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for match in ENV_READ.finditer(line):
                name = match.group(1) or match.group(2)
                if family(name) not in APP_SETTING_NAMES | HOST_SETTINGS:
                    undeclared.append(f"{path.relative_to(ROOT)}:{number}: reads {name}")
    assert not undeclared, "settings read outside billing/config.py's list:\n" + "\n".join(undeclared)
