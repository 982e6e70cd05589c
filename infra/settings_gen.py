"""Generate the files derived from billing/config.py, or check that they are up to date.

    python infra/settings_gen.py          # rewrite the generated files
    python infra/settings_gen.py --check  # exit 1 naming every setting that differs

`billing/config.py` is the one list of settings and `billing/store/tables.py` the one list of
tables and queues. Generated from them:
- `local.settings.sample.json`: each setting's local value (plus what the Functions host needs locally);
- `infra/app-settings-defaults.json`: setting defaults, for `infra/modules/functionapp.bicep`;
- `infra/app-storage.json`: the tables and queues that `infra/main.bicep` creates.
So nothing is written twice by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_PATH = ROOT / "local.settings.sample.json"
DEFAULTS_PATH = ROOT / "infra" / "app-settings-defaults.json"
STORAGE_PATH = ROOT / "infra" / "app-storage.json"

# Read by the Functions host when it runs locally (`func start`); on Flex Consumption in Azure
# the runtime is declared in functionAppConfig.runtime instead.
LOCAL_HOST_VALUES = {"FUNCTIONS_WORKER_RUNTIME": "python"}
LOCAL_HTTP_PORT = 7071

if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from billing import config  # noqa: E402  (needs ROOT on sys.path first)
from billing.store import tables  # noqa: E402


def sample_settings() -> dict[str, Any]:
    """The content local.settings.sample.json must have."""
    values = {s.name: s.local for s in config.SETTINGS}
    values.update(LOCAL_HOST_VALUES)
    return {"IsEncrypted": False, "Values": values, "Host": {"LocalHttpPort": LOCAL_HTTP_PORT}}


def app_defaults() -> dict[str, str]:
    """Defaults of the non-secret settings that have one, for Bicep's loadJsonContent."""
    return {s.name: s.default for s in config.SETTINGS if s.default and not s.secret}


def app_storage() -> dict[str, list[str]]:
    """The tables and queues the app uses, for Bicep's loadJsonContent."""
    return {"tables": list(tables.ALL_TABLES), "queues": list(tables.ALL_QUEUES)}


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def differences(path: Path, expected: dict[str, Any]) -> list[str]:
    """Human-readable differences between a generated file on disk and what it should hold."""
    try:
        actual = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{path.name} is missing"]
    except json.JSONDecodeError as exc:
        return [f"{path.name} is not valid JSON ({exc.msg} at line {exc.lineno})"]
    if not isinstance(actual, dict):
        return [f"{path.name} must hold a JSON object"]
    problems: list[str] = []
    exp_values = expected.get("Values", expected)
    act_values = actual.get("Values", actual) if "Values" in expected else actual
    if not isinstance(act_values, dict):
        return [f"{path.name}: 'Values' must be a JSON object"]
    missing = sorted(set(exp_values) - set(act_values))
    extra = sorted(set(act_values) - set(exp_values))
    if missing:
        problems.append(f"{path.name} lacks {', '.join(missing)} (declared in billing/)")
    if extra:
        problems.append(f"{path.name} has {', '.join(extra)}, which billing/ does not declare")
    changed = sorted(k for k in set(exp_values) & set(act_values) if exp_values[k] != act_values[k])
    if changed:
        problems.append(f"{path.name} has other values than billing/ for {', '.join(changed)}")
    if not problems and actual != expected:
        problems.append(f"{path.name} differs from the generated file outside the settings")
    return problems


def targets() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (SAMPLE_PATH, sample_settings()),
        (DEFAULTS_PATH, dict(app_defaults())),
        (STORAGE_PATH, dict(app_storage())),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    args = parser.parse_args(argv)
    if args.check:
        problems = [p for path, data in targets() for p in differences(path, data)]
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("Run `python infra/settings_gen.py` to regenerate.", file=sys.stderr)
        return 1 if problems else 0
    for path, data in targets():
        path.write_text(render(data), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
