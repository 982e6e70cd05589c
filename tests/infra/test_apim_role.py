"""The app's custom role on API Management (infra/modules/apim-wiring.bicep) grants exactly the
ARM actions that the Functions app calls, derived from the code:

1. the modules the Functions app can import (function_app.py's static import closure, imports
   inside functions included) that use the azure-mgmt-apimanagement client;
2. in them, every `<...>.<operation group>.<method>` of the SDK's ApiManagementClient, called or
   passed on (`self._call(t, client.subscription.get, sid)`), also through a local alias
   (`ops = client.product_api if ... else client.product_group`), and the paths sent through the
   client's own pipeline (`client._send_request(HttpRequest("GET", <ARM path>))`);
3. each SDK method's HTTP verb and URL template, read from the installed SDK's request builders;
4. each request mapped to its ARM action the way ARM names them: the resource type is every other
   path segment after the provider namespace; GET -> read, PUT/PATCH -> write, DELETE -> delete, a
   POST to a trailing segment -> <segment>/action; long-running operations add their polling.

`python -m billing catalog ...` (products, policies, links) is only reachable from billing/cli.py,
so its calls are the operator's, not the app's: they must stay out of the role.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from azure.mgmt.apimanagement import ApiManagementClient
from azure.mgmt.apimanagement import operations as sdk_operations

from tests.infra.bicep_tree import (
    INFRA,
    ROOT,
    Declaration,
    declarations,
    get_path,
    properties,
    resolve_string,
    string_value,
    text,
    variables,
)

APIM_WIRING = INFRA / "modules" / "apim-wiring.bicep"
ENTRY = ROOT / "function_app.py"
PROVIDER = "Microsoft.ApiManagement"

# The actions this app may ever need, as Microsoft documents them ("Azure permissions for
# Integration", Microsoft.ApiManagement; learn.microsoft.com/azure/role-based-access-control/
# permissions/integration). A derived action missing here fails the test: look it up there first.
DOCUMENTED = {
    "Microsoft.ApiManagement/service/read": "Read metadata for an API Management Service instance",
    "Microsoft.ApiManagement/service/users/read": "Lists registered users or gets a user's details",
    "Microsoft.ApiManagement/service/users/write": "Creates or updates a user",
    "Microsoft.ApiManagement/service/users/delete": "Deletes specific user",
    "Microsoft.ApiManagement/service/users/token/action": "Gets the Shared Access Authorization Token for the User",
    "Microsoft.ApiManagement/service/users/groups/read": "Lists all user groups",
    "Microsoft.ApiManagement/service/users/subscriptions/read": "Lists the collection of subscriptions of the user",
    "Microsoft.ApiManagement/service/tenant/operationResults/read": "Get result of a specific operation",
    "Microsoft.ApiManagement/service/subscriptions/read": "Lists subscriptions or gets one (without keys)",
    "Microsoft.ApiManagement/service/subscriptions/write": "Creates or updates a subscription",
    "Microsoft.ApiManagement/service/subscriptions/listSecrets/action": "Gets the specified Subscription keys",
    "Microsoft.ApiManagement/service/quotas/write": "Set quota counter current value",
    "Microsoft.ApiManagement/service/reports/read": "Get report aggregated by ... subscription",
    # `catalog apply` (the operator's identity, not the app's):
    "Microsoft.ApiManagement/service/apis/read": "Lists all APIs or gets one",
    "Microsoft.ApiManagement/service/groups/read": "Lists groups or gets one",
    "Microsoft.ApiManagement/service/products/read": "Lists products or gets one",
    "Microsoft.ApiManagement/service/products/write": "Creates or updates a product",
    "Microsoft.ApiManagement/service/products/apis/read": "Lists the APIs associated with a product",
    "Microsoft.ApiManagement/service/products/apis/write": "Adds an API to the specified product",
    "Microsoft.ApiManagement/service/products/apis/delete": "Deletes the specified API from the product",
    "Microsoft.ApiManagement/service/products/groups/read": "Lists the developer groups of a product",
    "Microsoft.ApiManagement/service/products/groups/write": "Adds a group to a product",
    "Microsoft.ApiManagement/service/products/groups/delete": "Deletes the association of a group and a product",
    "Microsoft.ApiManagement/service/products/policies/read": "Get the policy configuration at the Product level",
    "Microsoft.ApiManagement/service/products/policies/write": "Creates or updates policy configuration (Product)",
    "Microsoft.ApiManagement/service/products/subscriptions/read": "Lists the subscriptions to the product",
}

# Long-running operations: ARM polls the Azure-AsyncOperation URL, then GETs the Location URL
# (azure-mgmt-core ARMPolling, final-state-via location). User delete, REST example
# ApiManagementDeleteUser.json (azure-rest-api-specs, apimanagement stable/2024-05-01): 202 with
# Azure-AsyncOperation .../service/{name}/tenant/operationResults/{id} and Location .../users/{id}.
LRO_POLLING = {
    ("user", "begin_delete"): {
        "Microsoft.ApiManagement/service/tenant/operationResults/read",
        "Microsoft.ApiManagement/service/users/read",
    },
}

VERBS = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}


# --- the SDK: operation groups, methods, requests ---------------------------------------------


@cache
def operation_groups() -> dict[str, type]:
    """ApiManagementClient attribute -> its operations class (`client.user` -> UserOperations)."""
    source = Path(inspect.getsourcefile(ApiManagementClient) or "").read_text(encoding="utf-8")
    found = {attr: getattr(sdk_operations, cls) for attr, cls in re.findall(r"self\.(\w+) = (\w+Operations)\(", source)}
    assert len(found) > 50, "could not read ApiManagementClient's operation groups"
    return found


@cache
def _sdk_module(cls: type) -> tuple[dict[str, tuple[str, str]], dict[str, ast.FunctionDef]]:
    """(request builder name -> (HTTP verb, URL template), method name -> its AST) of an operations class."""
    tree = ast.parse(Path(inspect.getsourcefile(cls) or "").read_text(encoding="utf-8"))
    builders: dict[str, tuple[str, str]] = {}
    for fn in tree.body:
        if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("build_")):
            continue
        url = verb = None
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "pop"
                and len(node.args) == 2
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value == "template_url"
                and isinstance(node.args[1], ast.Constant)
            ):
                url = node.args[1].value
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "HttpRequest":
                verb = next(
                    (k.value.value for k in node.keywords if k.arg == "method" and isinstance(k.value, ast.Constant)),
                    None,
                )
        if isinstance(url, str) and isinstance(verb, str) and url and verb:
            builders[fn.name] = (verb, url)
    (cls_node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    methods = {f.name: f for f in cls_node.body if isinstance(f, ast.FunctionDef)}
    return builders, methods


def public_methods(group: str) -> set[str]:
    return {name for name in _sdk_module(operation_groups()[group])[1] if not name.startswith("_")}


def sdk_requests(group: str, method: str) -> list[tuple[str, str]]:
    """The (verb, URL template) requests an SDK method sends, following its `self._..._initial` helpers."""
    builders, methods = _sdk_module(operation_groups()[group])
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    todo = [method]
    while todo:
        name = todo.pop()
        if name in seen or name not in methods:
            continue
        seen.add(name)
        for node in ast.walk(methods[name]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in builders:
                found.append(builders[node.func.id])
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "self"
            ):
                todo.append(node.func.attr)
    return found


def arm_action(verb: str, url: str) -> str:
    """`GET .../providers/Microsoft.ApiManagement/service/{s}/users/{u}/groups` -> `.../service/users/groups/read`."""
    path = url.split("?", 1)[0]
    if f"/providers/{PROVIDER}/" not in path:
        raise ValueError(f"not an API Management path: {url}")
    segments = path.split(f"/providers/{PROVIDER}/", 1)[1].strip("/").split("/")
    types = segments[0::2]  # type, name, type, name, ...: a trailing type is a collection or an action
    if verb == "POST":
        if len(segments) % 2 == 0:
            raise ValueError(f"POST to a resource, not to an action: {url}")
        return f"{PROVIDER}/{'/'.join(types)}/action"
    return f"{PROVIDER}/{'/'.join(types)}/{VERBS[verb]}"


# --- billing/: which modules the app runs, and their calls -------------------------------------


def _module_file(name: str, root: Path) -> Path | None:
    for candidate in (root / (name.replace(".", "/") + ".py"), root / name.replace(".", "/") / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_closure(entry: Path = ENTRY, root: Path = ROOT) -> dict[str, Path]:
    """Every repository module that `entry` imports, directly or not, at any depth in the code."""
    found: dict[str, Path] = {}
    todo = [entry.stem]
    while todo:
        name = todo.pop()
        path = entry if name == entry.stem else _module_file(name, root)
        if name in found or path is None:
            continue
        found[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.rsplit(".", node.level)[0]
                    base = f"{package}.{base}" if base else package
                todo.append(base)
                todo += [f"{base}.{alias.name}" for alias in node.names]
    return found


def uses_apim_client(path: Path) -> bool:
    source = path.read_text(encoding="utf-8")
    return "azure.mgmt.apimanagement" in source or "billing.adapters.apim_client" in source


@dataclass(frozen=True)
class Call:
    where: str  # file:line
    group: str  # SDK operation group, or "_send_request"
    method: str  # SDK method, or the HTTP verb
    url: str = ""  # for _send_request: the ARM path

    def actions(self) -> set[str]:
        if self.group == "_send_request":
            return {arm_action(self.method, self.url)}
        requests = sdk_requests(self.group, self.method)
        if not requests:
            raise AssertionError(f"{self.where}: {self.group}.{self.method}: no request found in the SDK")
        if self.method.startswith("begin_") and (self.group, self.method) not in LRO_POLLING:
            raise AssertionError(
                f"{self.where}: {self.group}.{self.method} is a long-running operation: add the "
                "actions its polling needs to LRO_POLLING (see its REST example)"
            )
        return {arm_action(verb, url) for verb, url in requests} | LRO_POLLING.get((self.group, self.method), set())


def _group_of(node: ast.expr) -> set[str]:
    """`client.product_api` -> {"product_api"}; `a.product_api if c else a.product_group` -> both."""
    if isinstance(node, ast.Attribute) and node.attr in operation_groups():
        return {node.attr}
    if isinstance(node, ast.IfExp):
        return _group_of(node.body) | _group_of(node.orelse)
    return set()


def apim_calls(path: Path, root: Path = ROOT) -> list[Call]:
    """The SDK operations one module uses (see the module docstring for the forms)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    where = path.relative_to(root) if path.is_relative_to(root) else path.name
    calls: list[Call] = []
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
    for scope in scopes:
        aliases: dict[str, set[str]] = {}
        for node in ast.walk(scope):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                groups = _group_of(node.value)
                if groups:
                    aliases[node.targets[0].id] = groups
        for node in ast.walk(scope):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if isinstance(owner, ast.Attribute):
                groups = _group_of(owner)
            else:
                groups = aliases.get(getattr(owner, "id", ""), set())
            calls += [
                Call(f"{where}:{node.lineno}", g, node.attr) for g in sorted(groups) if node.attr in public_methods(g)
            ]
    if any(isinstance(n, ast.Attribute) and n.attr == "_send_request" for n in ast.walk(tree)):
        paths = [
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and f"/providers/{PROVIDER}/" in n.value
        ]
        verbs = {
            n.args[0].value
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)
            and n.func.id == "HttpRequest"
            and n.args
            and isinstance(n.args[0], ast.Constant)
            and isinstance(n.args[0].value, str)
        }
        assert paths, f"{where}: _send_request without an ARM path constant"
        assert verbs, f"{where}: _send_request without an HttpRequest verb"
        calls += [Call(f"{where}", "_send_request", verb, url) for url in paths for verb in sorted(verbs)]
    return sorted(set(calls), key=lambda c: (c.where, c.group, c.method))


def derived_actions(modules: Iterable[Path], root: Path = ROOT) -> dict[str, list[str]]:
    """ARM action -> where in the code it comes from."""
    found: dict[str, list[str]] = {}
    for path in modules:
        if uses_apim_client(path):
            for call in apim_calls(path, root):
                for action in call.actions():
                    found.setdefault(action, []).append(f"{call.where} ({call.group}.{call.method})")
    return found


def app_modules() -> list[Path]:
    return sorted(set(import_closure().values()))


def all_billing_modules() -> list[Path]:
    return sorted((ROOT / "billing").rglob("*.py"))


# --- the role in Bicep ---------------------------------------------------------------------------


def role_definitions(path: Path) -> list[Declaration]:
    return [d for d in declarations(path) if d.resource_type == "Microsoft.Authorization/roleDefinitions"]


def role_actions(path: Path = APIM_WIRING) -> list[str]:
    (role,) = role_definitions(path)
    permissions = get_path(role.body, "properties", "permissions")
    assert permissions is not None, f"{role.where}: no permissions"
    assert permissions.type == "array", f"{role.where}: permissions must be a list"
    (permission,) = [c for c in permissions.named_children if c.type == "object"]
    actions = properties(permission).get("actions")
    if actions is not None and actions.type == "identifier":
        actions = variables(path).get(text(actions))
    assert actions is not None, f"{role.where}: no actions"
    assert actions.type == "array", f"{role.where}: actions must be a literal list"
    values = [string_value(c) for c in actions.named_children if c.type != "comment"]
    assert all(v is not None for v in values), f"{role.where}: every action must be a plain string"
    return [v for v in values if v is not None]


def role_problems(path: Path = APIM_WIRING, modules: Iterable[Path] | None = None) -> list[str]:
    """Missing and extra actions of the role, each named with where the code needs it."""
    needed = derived_actions(app_modules() if modules is None else modules)
    granted = role_actions(path)
    twice = sorted({a for a in granted if granted.count(a) > 1})
    problems = [f"{path.name}: action {a!r} is listed twice" for a in twice]
    for action in sorted(set(needed) - set(granted)):
        problems.append(f"{path.name}: the role lacks {action!r}, which the app calls at {'; '.join(needed[action])}")
    for action in sorted(set(granted) - set(needed)):
        problems.append(
            f"{path.name}: the role grants {action!r}, which no code the Functions app runs calls: remove it"
        )
    return problems


def shape_problems(path: Path = APIM_WIRING) -> list[str]:
    """One custom role, assignable in the instance's resource group, assigned to the app on the instance."""
    roles = role_definitions(path)
    if len(roles) != 1:
        return [f"{path.name}: expected one custom role definition, found {len(roles)}"]
    (role,) = roles
    problems = []
    if string_value(get_path(role.body, "properties", "type")) != "CustomRole":
        problems.append(f"{path.name}: the role's type must be 'CustomRole'")
    if any("*" in a for a in role_actions(path)):
        problems.append(f"{path.name}: no wildcards in the role's actions")
    for field in ("notActions", "dataActions", "notDataActions"):
        node = get_path(get_path(role.body, "properties", "permissions").named_children[0], field)  # type: ignore[union-attr]
        if node is not None and any(c.type != "comment" for c in node.named_children):
            problems.append(f"{path.name}: {field} must be empty")
    scopes = get_path(role.body, "properties", "assignableScopes")
    scope_values = [text(c) for c in scopes.named_children if c.type != "comment"] if scopes is not None else []
    resolved = [text(variables(path)[v]) if v in variables(path) else v for v in scope_values]
    if resolved != ["resourceGroup().id"]:
        problems.append(f"{path.name}: assignableScopes must be the instance's resource group only, not {resolved}")
    if "apimName" not in text(get_path(role.body, "properties", "roleName") or role.node):
        problems.append(f"{path.name}: the roleName must carry apimName (role names are unique in the tenant)")
    assignments = [d for d in declarations(path) if d.resource_type == "Microsoft.Authorization/roleAssignments"]
    mine = [a for a in assignments if role.symbol in text(get_path(a.body, "properties", "roleDefinitionId") or a.node)]
    if len(mine) != 1:
        return [*problems, f"{path.name}: the custom role must be assigned once, found {len(mine)}"]
    (assignment,) = mine
    role_id = get_path(assignment.body, "properties", "roleDefinitionId")
    if text(role_id) != f"subscriptionResourceId('Microsoft.Authorization/roleDefinitions', {role.symbol}.name)":
        problems.append(f"{path.name}: roleDefinitionId must be the subscription-level id of {role.symbol}")
    if text(get_path(assignment.body, "scope") or assignment.node) != "apim":
        problems.append(f"{path.name}: the role must be assigned on the instance (scope: apim)")
    if text(get_path(assignment.body, "properties", "principalId") or assignment.node) != "appPrincipalId":
        problems.append(f"{path.name}: the role must go to the app's identity (appPrincipalId)")
    contributor = "312a565d-c81f-4fd8-895a-4e21e48d571c"  # API Management Service Contributor
    builtin = [
        a
        for a in assignments
        if a is not assignment
        and resolve_string(get_path(a.body, "properties", "roleDefinitionId"), path) == contributor
    ]
    if builtin:
        problems.append(f"{path.name}: API Management Service Contributor is still assigned")
    return problems


# --- the repository passes ----------------------------------------------------------------------


def test_the_role_grants_exactly_what_the_app_calls() -> None:
    assert role_problems() == []


def test_the_role_is_one_custom_role_on_the_instance() -> None:
    assert shape_problems() == []


def test_every_action_is_a_documented_operation() -> None:
    unknown = set(role_actions()) | set(derived_actions(all_billing_modules()))
    unknown -= set(DOCUMENTED)
    assert not unknown, f"not in Microsoft's list of Microsoft.ApiManagement operations (DOCUMENTED): {sorted(unknown)}"


def test_the_catalog_runs_as_the_operator_not_the_app() -> None:
    app = set(derived_actions(app_modules()))
    everything = derived_actions(all_billing_modules())
    operator_only = set(everything) - app
    # The scan does see the catalog's writes, so their absence from the role is a decision, not a miss.
    assert "Microsoft.ApiManagement/service/products/policies/write" in operator_only
    elsewhere = {action: where for action in operator_only for where in everything[action] if "catalog" not in where}
    assert not elsewhere, (
        f"APIM calls that only the CLI makes, outside the catalog: {elsewhere}. They run as the "
        "operator; say so in docs/deploy.md, or make the app call them and grant them"
    )
    deploy = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    section = deploy.split("## 4. Catalog", 1)[1].split("\n## ", 1)[0]
    assert "API Management Service Contributor" in section, "docs/deploy.md section 4 must say what the operator needs"


def test_the_app_runs_the_apim_adapters() -> None:
    names = set(import_closure())
    for module in ("billing.adapters.access_apim", "billing.adapters.portal_apim", "billing.adapters.usage_reports"):
        assert module in names, f"{module} is not reachable from function_app.py: the scan would miss its calls"
    assert "billing.adapters.catalog_apim" not in names


# --- the derivation, on known inputs -------------------------------------------------------------


SERVICE = "/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.ApiManagement/service/{n}"


@pytest.mark.parametrize(
    ("verb", "path", "action"),
    [
        ("GET", "", "Microsoft.ApiManagement/service/read"),
        (
            "POST",
            "/subscriptions/{sid}/listSecrets",
            "Microsoft.ApiManagement/service/subscriptions/listSecrets/action",
        ),
        ("GET", "/reports/bySubscription", "Microsoft.ApiManagement/service/reports/read"),
        ("PATCH", "/quotas/{k}", "Microsoft.ApiManagement/service/quotas/write"),
        ("DELETE", "/products/{p}/apis/{a}", "Microsoft.ApiManagement/service/products/apis/delete"),
        ("GET", "/users/{u}/groups", "Microsoft.ApiManagement/service/users/groups/read"),
    ],
)
def test_requests_map_to_arm_actions(verb: str, path: str, action: str) -> None:
    assert arm_action(verb, SERVICE + path) == action


def test_sdk_methods_map_to_their_requests() -> None:
    token = Call("x", "user", "get_shared_access_token")
    assert token.actions() == {"Microsoft.ApiManagement/service/users/token/action"}
    assert Call("x", "user", "begin_delete").actions() == {
        "Microsoft.ApiManagement/service/users/delete",
        "Microsoft.ApiManagement/service/users/read",
        "Microsoft.ApiManagement/service/tenant/operationResults/read",
    }
    assert Call("x", "product_policy", "create_or_update").actions() == {
        "Microsoft.ApiManagement/service/products/policies/write"
    }


def test_every_form_of_call_is_found(tmp_path: Path) -> None:
    module = tmp_path / "adapter.py"
    module.write_text(
        """from azure.mgmt.apimanagement import models
from azure.core.rest import HttpRequest
PATH = "/subscriptions/{s}/resourceGroups/{g}/providers/Microsoft.ApiManagement/service/{n}/tenant/access"

class Adapter:
    def passed(self, call):
        return call(self.client.subscription.list_secrets, "sid")   # passed on, not called here

    def aliased(self, kind):
        operations = self.client.product_api if kind == "api" else self.client.product_group
        operations.delete("rg", "svc", "p", "t")

    def through_the_pipeline(self):
        return self.client._send_request(HttpRequest("GET", PATH))

    def not_the_sdk(self, contract):
        subscription = self.client.subscription.get("rg", "svc", "sid")
        return subscription.owner_id, contract.user.email            # attributes, not operations
""",
        encoding="utf-8",
    )
    assert set(derived_actions([module], tmp_path)) == {
        "Microsoft.ApiManagement/service/subscriptions/listSecrets/action",
        "Microsoft.ApiManagement/service/products/apis/delete",
        "Microsoft.ApiManagement/service/products/groups/delete",
        "Microsoft.ApiManagement/service/tenant/read",
        "Microsoft.ApiManagement/service/subscriptions/read",
    }


def test_an_unknown_long_running_operation_is_refused() -> None:
    with pytest.raises(AssertionError, match="LRO_POLLING"):
        Call("x.py:1", "api_management_service", "begin_backup").actions()


# --- and fails when the role and the code disagree -----------------------------------------------


ROLE_MUTATIONS = [
    (
        "  'Microsoft.ApiManagement/service/subscriptions/listSecrets/action'\n",
        "",
        "lacks 'Microsoft.ApiManagement/service/subscriptions/listSecrets/action'",
    ),
    (
        "  'Microsoft.ApiManagement/service/tenant/operationResults/read'\n",
        "",
        "lacks 'Microsoft.ApiManagement/service/tenant/operationResults/read'",
    ),
    (
        "  'Microsoft.ApiManagement/service/reports/read'\n",
        "  'Microsoft.ApiManagement/service/reports/read'\n  'Microsoft.ApiManagement/service/products/write'\n",
        "grants 'Microsoft.ApiManagement/service/products/write'",
    ),
    (
        "  'Microsoft.ApiManagement/service/read'\n",
        "  'Microsoft.ApiManagement/service/*'\n",
        "grants 'Microsoft.ApiManagement/service/*'",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), ROLE_MUTATIONS, ids=[m[2][:40] for m in ROLE_MUTATIONS])
def test_a_role_that_differs_from_the_code_is_reported(tmp_path: Path, old: str, new: str, expected: str) -> None:
    source = APIM_WIRING.read_text(encoding="utf-8")
    assert source.count(old) == 1, old
    broken = tmp_path / APIM_WIRING.name
    broken.write_text(source.replace(old, new), encoding="utf-8")
    assert any(expected in p for p in role_problems(broken)), role_problems(broken)


SHAPE_MUTATIONS = [
    ("      assignableScope\n", "      subscription().id\n", "assignableScopes"),
    (
        "  scope: apim\n  properties: {\n    roleDefinitionId: subscriptionResourceId",
        "  scope: resourceGroup()\n  properties: {\n    roleDefinitionId: subscriptionResourceId",
        "scope: apim",
    ),
    ("    type: 'CustomRole'\n", "", "'CustomRole'"),
    ("    roleName: 'APIM billing app (${apimName})'\n", "    roleName: 'APIM billing app'\n", "roleName"),
]


@pytest.mark.parametrize(("old", "new", "expected"), SHAPE_MUTATIONS, ids=[m[2] for m in SHAPE_MUTATIONS])
def test_a_role_of_the_wrong_shape_is_reported(tmp_path: Path, old: str, new: str, expected: str) -> None:
    source = APIM_WIRING.read_text(encoding="utf-8")
    assert source.count(old) == 1, old
    broken = tmp_path / APIM_WIRING.name
    broken.write_text(source.replace(old, new), encoding="utf-8")
    assert any(expected in p for p in shape_problems(broken)), shape_problems(broken)


def test_a_new_call_in_the_app_is_reported(tmp_path: Path) -> None:
    original = ROOT / "billing" / "adapters" / "portal_apim.py"
    source = original.read_text(encoding="utf-8")
    anchor = "    def find_user_by_email(self, email: str) -> str | None:\n"
    assert source.count(anchor) == 1
    changed = tmp_path / "billing" / "adapters" / "portal_apim.py"
    changed.parent.mkdir(parents=True)
    added = (
        "    def regenerate(self, sid: str) -> None:\n"
        "        self._c.subscription.regenerate_primary_key(*self._at(), sid)\n\n"
    )
    changed.write_text(source.replace(anchor, added + anchor), encoding="utf-8")
    modules = [changed if p == original else p for p in app_modules()]
    problems = role_problems(APIM_WIRING, modules)
    assert any(
        "lacks 'Microsoft.ApiManagement/service/subscriptions/regeneratePrimaryKey/action'" in p
        and "portal_apim.py" in p
        for p in problems
    ), problems
