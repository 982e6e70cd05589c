"""The azd preprovision hook (azure.yaml -> infra/hooks/preprovision.sh), run with `sh` the way azd
runs it: the azd environment's values arrive as plain environment variables, and `azd`/`az` are
stubs on PATH that record their arguments. No azd, Azure CLI or Azure access needed.

- check-inputs.sh refuses missing or wrong inputs before anything is created, naming what to set;
  its defaults and allowed values are those of main.parameters.json and main.bicep.
- kept-key.sh keeps the APIM delegation validation key and the portal's session keys: the azd
  environment's, else the one in the environment's Key Vault, else (first provision only) a new one;
  never a silent new key.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.bicep_tree import INFRA, ROOT, text, top_level

HOOKS = INFRA / "hooks"
CHECK = HOOKS / "check-inputs.sh"
KEY = HOOKS / "kept-key.sh"
PREPROVISION = HOOKS / "preprovision.sh"
MAIN = INFRA / "main.bicep"
PARAMETERS = INFRA / "main.parameters.json"
# What the scripts call besides sh builtins; linked into a PATH of their own, so that a real az or
# azd on the machine running the tests is never used.
TOOLS = ("sh", "openssl", "base64", "head", "tr", "dirname", "cat")
KEY_NAME = "APIM_DELEGATION_VALIDATION_KEY"


@dataclass
class Run:
    code: int
    out: str
    err: str
    calls: list[list[str]]  # each stub call: [command, args...]

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A PATH directory with the tools the scripts use and stubs for azd and az."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"the hook tests need {tool}"
        (bin_dir / tool).symlink_to(found)
    log = tmp_path / "calls.log"
    # One line per call: the command and its arguments, separated by tabs.
    record = (
        f'printf "%s" "$(basename "$0")" >> "{log}"\n'
        f'for a in "$@"; do printf "\\t%s" "$a" >> "{log}"; done\n'
        f'echo >> "{log}"\n'
    )
    (bin_dir / "basename").symlink_to(shutil.which("basename") or "/usr/bin/basename")
    stubs = {
        "azd": "#!/bin/sh\n" + record + "exit 0\n",
        # AZ_SIGNED_OUT: every call fails, as when not signed in. `group exists` prints AZ_GROUP
        # (default false), `keyvault list` AZ_VAULT, `keyvault secret show` AZ_SECRET or fails as
        # for a missing secret.
        "az": "#!/bin/sh\n"
        + record
        + (
            'if [ -n "${AZ_SIGNED_OUT:-}" ]; then echo "ERROR: Please run \'az login\'" >&2; exit 1; fi\n'
            'case "$1 $2" in\n'
            '  "group exists") echo "${AZ_GROUP:-false}" ;;\n'
            '  "keyvault list") echo "${AZ_VAULT:-}" ;;\n'
            '  "keyvault secret")\n'
            '    if [ "$3" = list ]; then echo "${AZ_SECRET_COUNT:-1}"; exit 0; fi\n'
            '    if [ -n "${AZ_SECRET:-}" ]; then echo "$AZ_SECRET"; exit 0; fi\n'
            '    echo "ERROR: (SecretNotFound) A secret with (name/id) was not found" >&2; exit 1 ;;\n'
            '  *) echo "unexpected az call: $*" >&2; exit 2 ;;\n'
            "esac\n"
        ),
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(body, encoding="utf-8")
        (bin_dir / name).chmod(0o755)
    return tmp_path


def run(
    script: Path, sandbox: Path, env: dict[str, str], *, without: tuple[str, ...] = (), args: tuple[str, ...] = ()
) -> Run:
    bin_dir = sandbox / "bin"
    for name in without:
        (bin_dir / name).unlink()
    result = subprocess.run(
        [str(bin_dir / "sh"), str(script), *args],
        env={"PATH": str(bin_dir), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    log = sandbox / "calls.log"
    calls = [line.split("\t") for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []
    return Run(result.returncode, result.stdout, result.stderr, calls)


# --- check-inputs.sh ------------------------------------------------------------------------------

GOOD = {"AZURE_ENV_NAME": "dev", "APIM_PUBLISHER_EMAIL": "ops@example.com", "ALERT_EMAIL": "alerts@example.com"}

# (environment, exit code, words that must be in the output)
CASES = [
    ({}, 1, ["APIM_PUBLISHER_EMAIL", "azd env set APIM_PUBLISHER_EMAIL", "before creating anything"]),
    (GOOD, 0, ["APIM_MODE=new", "alerts to alerts@example.com"]),
    ({**GOOD, "APIM_MODE": "existing"}, 1, ["APIM_MODE=existing needs", "azd env set APIM_NAME"]),
    (
        {"APIM_MODE": "existing", "APIM_NAME": "apim-x", "APIM_EXISTING_RESOURCE_GROUP": "rg-apim"},
        0,
        ["APIM_MODE=existing", "ALERT_EMAIL is not set"],
    ),
    (
        {"APIM_MODE": "existing", "APIM_NAME": "apim-x", "AZURE_ENV_NAME": "dev"},
        0,
        ["APIM_EXISTING_RESOURCE_GROUP is not set", "rg-dev"],
    ),
    ({**GOOD, "APIM_MODE": "New"}, 1, ["APIM_MODE is 'New'"]),
    ({**GOOD, "APIM_PUBLISHER_EMAIL": "ops at example"}, 1, ["'ops at example' is not an e-mail address"]),
    ({**GOOD, "APIM_PUBLISHER_EMAIL": "ops@localhost"}, 1, ["is not an e-mail address"]),
    ({**GOOD, "APIM_SKU": "Consumption"}, 1, ["no developer portal"]),
    ({**GOOD, "APIM_SKU": "Premiumv2"}, 1, ["APIM_SKU 'Premiumv2' is not one of"]),
    ({**GOOD, "APIM_SKU": "StandardV2"}, 0, ["APIM_SKU=StandardV2"]),
    ({**GOOD, "DELEGATION_MODE": "none"}, 1, ["DELEGATION_MODE is 'none'"]),
    ({**GOOD, "ALERT_EMAIL": ""}, 0, ["ALERT_EMAIL is not set", "no alert rules"]),
    ({**GOOD, "ALERT_EMAIL": "ops@@example.com"}, 1, ["ALERT_EMAIL 'ops@@example.com' is not an e-mail address"]),
    # Every problem at once, not one per run.
    (
        {"APIM_MODE": "existing", "APIM_SKU": "Consumption", "ALERT_EMAIL": "x"},
        1,
        ["APIM_NAME", "Consumption", "ALERT_EMAIL 'x'"],
    ),
]


@pytest.mark.parametrize(("env", "code", "words"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_inputs_are_checked_before_anything_is_created(
    sandbox: Path, env: dict[str, str], code: int, words: list[str]
) -> None:
    result = run(CHECK, sandbox, env)
    assert result.code == code, result.text
    for word in words:
        assert word in result.text, f"{word!r} not in:\n{result.text}"
    if code:
        assert "azd provision stopped" in result.err, "problems go to stderr"
    assert result.calls == [], "the check calls nothing"


def script_defaults(script: Path) -> dict[str, str]:
    return dict(re.findall(r'^\w+="\$\{([A-Z_]+):-([^}]*)\}"$', script.read_text(encoding="utf-8"), re.MULTILINE))


def parameter_defaults() -> dict[str, str]:
    document = json.loads(PARAMETERS.read_text(encoding="utf-8"))
    values = [entry["value"] for entry in document["parameters"].values() if isinstance(entry.get("value"), str)]
    return {m.group(1): m.group(2) for v in values if (m := re.match(r"^\$\{([A-Z_]+)=([^}]*)\}$", v))}


def allowed(param: str) -> set[str]:
    """The @allowed values of a main.bicep parameter."""
    source = MAIN.read_text(encoding="utf-8")
    block = source.split(f"param {param} ", 1)[0].rsplit("\n\n", 1)[-1]
    match = re.search(r"@allowed\(\[(.*?)\]\)", block, re.DOTALL)
    assert match, f"main.bicep: {param} has no @allowed list"
    return set(re.findall(r"'([^']+)'", match.group(1)))


def accepted(variable: str) -> set[str]:
    """The values a `case "$variable"` of check-inputs.sh lets through (its first branch)."""
    source = CHECK.read_text(encoding="utf-8")
    match = re.search(rf'case "\${variable}" in\n\s+([\w |]+)\) ;;', source)
    assert match, f"check-inputs.sh: no case on ${variable}"
    return {v.strip() for v in match.group(1).split("|")}


def test_the_check_reads_the_variables_that_feed_main_bicep() -> None:
    defaults = script_defaults(CHECK)
    expected = parameter_defaults()
    for name in (
        "APIM_MODE",
        "APIM_SKU",
        "DELEGATION_MODE",
        "APIM_PUBLISHER_EMAIL",
        "APIM_NAME",
        "APIM_EXISTING_RESOURCE_GROUP",
        "ALERT_EMAIL",
    ):
        assert name in expected, f"main.parameters.json does not feed a parameter from ${{{name}}}"
        assert defaults.get(name) == expected[name], (
            f"check-inputs.sh defaults {name} to {defaults.get(name)!r}, main.parameters.json to {expected[name]!r}"
        )
    assert accepted("mode") == allowed("apimMode")
    assert accepted("sku") == allowed("apimSku")
    assert accepted("delegation") == allowed("delegationMode")


def test_the_alert_email_is_optional_and_turns_the_alerts_on() -> None:
    document = json.loads(PARAMETERS.read_text(encoding="utf-8"))
    assert document["parameters"]["alertEmail"]["value"] == "${ALERT_EMAIL=}"
    source = MAIN.read_text(encoding="utf-8")
    assert "module alerts 'modules/alerts.bicep' = if (!empty(alertEmail)) {" in source
    assert "param alertEmail string = ''" in source


# --- kept-key.sh ----------------------------------------------------------------------------

KEY_IN_VAULT = base64.b64encode(bytes(range(64))).decode()


def stored_key(result: Run) -> str:
    sets = [c for c in result.calls if c[:3] == ["azd", "env", "set"]]
    assert len(sets) == 1, result.calls
    assert sets[0][3] == KEY_NAME
    return sets[0][4]


def test_the_key_of_the_azd_environment_is_kept(sandbox: Path) -> None:
    result = run(KEY, sandbox, {KEY_NAME: KEY_IN_VAULT, "AZURE_KEY_VAULT_NAME": "kv-x", "AZURE_ENV_NAME": "dev"})
    assert result.code == 0, result.text
    assert "kept (azd environment)" in result.out
    assert result.calls == [], "nothing to read, nothing to write"


SECRET_SHOW = [
    "az",
    "keyvault",
    "secret",
    "show",
    "--vault-name",
    "kv-x",
    "--name",
    "apim-delegation-validation-key",
    "--query",
    "value",
    "--output",
    "tsv",
]


def test_the_key_in_key_vault_is_kept_when_the_azd_environment_has_none(sandbox: Path) -> None:
    result = run(KEY, sandbox, {"AZURE_KEY_VAULT_NAME": "kv-x", "AZURE_ENV_NAME": "prod", "AZ_SECRET": KEY_IN_VAULT})
    assert result.code == 0, result.text
    assert [c for c in result.calls if c[0] == "az"] == [SECRET_SHOW]
    assert stored_key(result) == KEY_IN_VAULT
    assert ["azd", "env", "set", KEY_NAME, KEY_IN_VAULT, "--environment", "prod"] in result.calls
    assert "read from Key Vault kv-x" in result.out


def test_a_new_machine_finds_the_vault_in_the_environments_resource_group(sandbox: Path) -> None:
    # No azd outputs here (a CI runner, a fresh clone): the environment's resource group tells.
    env = {"AZURE_ENV_NAME": "prod", "AZ_GROUP": "true", "AZ_VAULT": "kv-x", "AZ_SECRET": KEY_IN_VAULT}
    result = run(KEY, sandbox, env)
    assert result.code == 0, result.text
    az = [c for c in result.calls if c[0] == "az"]
    assert az[0] == ["az", "group", "exists", "--name", "rg-prod"]
    assert az[1][:5] == ["az", "keyvault", "list", "--resource-group", "rg-prod"]
    assert az[2] == SECRET_SHOW
    assert stored_key(result) == KEY_IN_VAULT


def test_an_unreadable_vault_stops_instead_of_making_a_new_key(sandbox: Path) -> None:
    result = run(KEY, sandbox, {"AZURE_KEY_VAULT_NAME": "kv-x", "AZURE_ENV_NAME": "prod"})
    assert result.code == 1
    assert "could not be read" in result.err
    assert "Key Vault kv-x" in result.err
    assert f"azd env set {KEY_NAME}" in result.err, "the message says how to replace the key on purpose"
    assert not [c for c in result.calls if c[0] == "azd"], "no key written"


@pytest.mark.parametrize(
    ("env", "without", "words"),
    [
        ({"AZURE_ENV_NAME": "prod", "AZ_SIGNED_OUT": "1"}, (), "whether resource group rg-prod exists"),
        ({"AZURE_ENV_NAME": "prod"}, ("az",), "without the Azure CLI"),
        ({"AZURE_KEY_VAULT_NAME": "kv-x", "AZURE_ENV_NAME": "prod"}, ("az",), "without the Azure CLI"),
        ({}, (), "AZURE_ENV_NAME is not set"),
    ],
    ids=["signed-out", "no-az", "no-az-known-vault", "no-env-name"],
)
def test_when_it_cannot_tell_it_stops(sandbox: Path, env: dict[str, str], without: tuple[str, ...], words: str) -> None:
    result = run(KEY, sandbox, env, without=without)
    assert result.code == 1, result.text
    assert words in result.err
    assert "az login" in result.err
    assert not [c for c in result.calls if c[0] == "azd"], "no key written"


def test_the_first_provision_generates_a_strong_key(sandbox: Path) -> None:
    first = run(KEY, sandbox, {"AZURE_ENV_NAME": "dev", "AZ_GROUP": "false"})
    assert first.code == 0, first.text
    assert [c for c in first.calls if c[0] == "az"] == [["az", "group", "exists", "--name", "rg-dev"]]
    key = stored_key(first)
    assert len(base64.b64decode(key, validate=True)) == 64, "512 random bits, base64 (APIM takes a base64 key)"
    assert len(key) >= 44, "main.bicep's @minLength"
    assert ["azd", "env", "set", KEY_NAME, key, "--environment", "dev"] in first.calls
    assert "generated" in first.out
    (sandbox / "calls.log").unlink()
    second = run(KEY, sandbox, {"AZURE_ENV_NAME": "dev"})
    assert stored_key(second) != key


def test_a_resource_group_without_a_vault_is_a_first_provision(sandbox: Path) -> None:
    # An earlier provision that failed before creating the vault: there is no key in use yet.
    result = run(KEY, sandbox, {"AZURE_ENV_NAME": "dev", "AZ_GROUP": "true", "AZ_VAULT": ""})
    assert result.code == 0, result.text
    assert len(base64.b64decode(stored_key(result), validate=True)) == 64


def test_without_openssl_the_key_comes_from_urandom(sandbox: Path) -> None:
    result = run(KEY, sandbox, {"AZURE_ENV_NAME": "dev"}, without=("openssl",))
    assert result.code == 0, result.text
    assert len(base64.b64decode(stored_key(result), validate=True)) == 64


# --- preprovision.sh and azure.yaml ---------------------------------------------------------------


def test_wrong_inputs_stop_the_hook_before_the_key_step(sandbox: Path) -> None:
    result = run(PREPROVISION, sandbox, {"APIM_MODE": "existing"})
    assert result.code == 1
    assert "APIM_NAME" in result.err
    assert result.calls == [], "nothing read or written after a refused input"


def test_the_hook_checks_then_keeps_both_keys(sandbox: Path) -> None:
    result = run(PREPROVISION, sandbox, {**GOOD, "AZURE_KEY_VAULT_NAME": "kv-x", "AZ_SECRET": KEY_IN_VAULT})
    assert result.code == 0, result.text
    assert result.out.index("Inputs:") < result.out.index("Delegation validation key: kept")
    assert "Portal session keys: kept" in result.out
    sets = {c[3]: c[4] for c in result.calls if c[:3] == ["azd", "env", "set"]}
    assert sets == {KEY_NAME: KEY_IN_VAULT, "PORTAL_SESSION_KEYS": KEY_IN_VAULT}  # the stub's vault has one value


def test_azure_yaml_runs_the_preprovision_hook_with_sh() -> None:
    manifest = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    hooks = manifest.split("\nhooks:\n", 1)[1]
    assert re.search(
        r"^  preprovision:\n    posix:\n      shell: sh\n      run: infra/hooks/preprovision.sh\n"
        r"      interactive: false\n      continueOnError: false$",
        hooks,
        re.MULTILINE,
    )


def test_the_hooks_are_posix_sh() -> None:
    for script in (CHECK, KEY, PREPROVISION):
        source = script.read_text(encoding="utf-8")
        assert source.startswith("#!/bin/sh\n"), f"{script.name}: azure.yaml runs it with sh"
        assert "set -eu" in source
        for bashism in ("[[", "declare ", "local ", "function ", "$'", "<<<", "echo -e"):
            assert bashism not in source, f"{script.name}: {bashism!r} is not POSIX sh"


def test_the_key_secret_vault_and_resource_group_are_the_ones_main_bicep_has() -> None:
    source = MAIN.read_text(encoding="utf-8")
    outputs = {text(o.named_children[0]) for o in top_level(MAIN, "output_declaration")}
    assert "AZURE_KEY_VAULT_NAME" in outputs, "kept-key.sh finds the vault through this azd output"
    assert "  name: 'rg-${environmentName}'\n" in source, "kept-key.sh looks for the vault in rg-<environment>"
    assert 'group="rg-$AZURE_ENV_NAME"' in KEY.read_text(encoding="utf-8")
    secret = re.search(r"delegationKey:\s*'([^']+)'", source)
    assert secret, "main.bicep: no secretNames.delegationKey"
    assert f"secret=${{2:-{secret.group(1)}}}\n" in KEY.read_text(encoding="utf-8")
    sessions = re.search(r"sessionKeys:\s*'([^']+)'", source)
    assert sessions, "main.bicep: no secretNames.sessionKeys"
    assert f'kept-key.sh" PORTAL_SESSION_KEYS {sessions.group(1)} ' in PREPROVISION.read_text(encoding="utf-8")


SESSIONS = ("PORTAL_SESSION_KEYS", "portal-session-keys", "Portal session keys", "new-if-absent")


def test_the_session_keys_are_kept_like_the_delegation_key(sandbox: Path) -> None:
    kept = run(
        KEY, sandbox, {"AZURE_KEY_VAULT_NAME": "kv-x", "AZURE_ENV_NAME": "prod", "AZ_SECRET": "a,b"}, args=SESSIONS
    )
    assert kept.code == 0, kept.text
    assert ["azd", "env", "set", "PORTAL_SESSION_KEYS", "a,b", "--environment", "prod"] in kept.calls
    assert "Portal session keys: kept (read from Key Vault kv-x" in kept.out


def test_session_keys_new_to_an_older_environment_are_made_once(sandbox: Path) -> None:
    # The vault exists and lists its secrets, but has no session keys: provisioned before they existed.
    made = run(
        KEY, sandbox, {"AZURE_KEY_VAULT_NAME": "kv-x", "AZURE_ENV_NAME": "prod", "AZ_SECRET_COUNT": "0"}, args=SESSIONS
    )
    assert made.code == 0, made.text
    (stored,) = [c[4] for c in made.calls if c[:4] == ["azd", "env", "set", "PORTAL_SESSION_KEYS"]]
    assert len(base64.b64decode(stored, validate=True)) == 64
    assert "Key Vault kv-x had none" in made.out


@pytest.mark.parametrize("count", ["1", ""], ids=["there-but-unreadable", "list-refused"])
def test_session_keys_that_cannot_be_read_are_never_replaced(sandbox: Path, count: str) -> None:
    env = {"AZURE_KEY_VAULT_NAME": "kv-x", "AZURE_ENV_NAME": "prod", "AZ_SECRET_COUNT": count}
    result = run(KEY, sandbox, env, args=SESSIONS)
    assert result.code == 1, result.text
    assert not [c for c in result.calls if c[0] == "azd"], "no key written"


def test_the_delegation_key_is_never_made_for_an_existing_vault(sandbox: Path) -> None:
    result = run(KEY, sandbox, {"AZURE_KEY_VAULT_NAME": "kv-x", "AZURE_ENV_NAME": "prod", "AZ_SECRET_COUNT": "0"})
    assert result.code == 1, "without new-if-absent a missing secret stops: APIM and the app share this key"
    assert not [c for c in result.calls if c[0] == "azd"]


def test_a_name_that_is_not_a_variable_is_refused(sandbox: Path) -> None:
    result = run(KEY, sandbox, {"AZURE_ENV_NAME": "prod"}, args=("X;rm -rf /", "s", "l"))
    assert result.code == 2
    assert "not an environment variable name" in result.err
