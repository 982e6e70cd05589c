"""Role assignments are scoped to single resources and grant no broad role; the one custom role
(the app's actions on API Management, checked action by action in test_apim_role.py) is the only one."""

from __future__ import annotations

from pathlib import Path

from tests.infra.bicep_tree import (
    GUID,
    Declaration,
    Node,
    all_declarations,
    declarations,
    get_path,
    line_of,
    resolve_string,
    string_value,
    text,
    variables,
)

# Built-in role ids from Microsoft's "Azure built-in roles" page.
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
USER_ACCESS_ADMINISTRATOR = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
BROAD_ROLES = {OWNER: "Owner", CONTRIBUTOR: "Contributor", USER_ACCESS_ADMINISTRATOR: "User Access Administrator"}

# A custom role declared in the same file as its assignment is named "custom:<file>".
APIM_APP_ROLE = "custom:apim-wiring.bicep"
# API Management Service Contributor: more than the app needs (it may delete the instance).
APIM_SERVICE_CONTRIBUTOR = "312a565d-c81f-4fd8-895a-4e21e48d571c"

# What the app's identity needs, and on which kind of resource.
REQUIRED = {
    (APIM_APP_ROLE, "Microsoft.ApiManagement/service"),  # the app's calls only (apim-wiring.bicep)
    ("b7e6dc6d-f1e8-4753-8033-0f276bb0955b", "Microsoft.Storage/storageAccounts"),  # Storage Blob Data Owner
    ("974c5e8b-45b9-4653-ba55-5f855dd0fb88", "Microsoft.Storage/storageAccounts"),  # Storage Queue Data Contributor
    ("0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3", "Microsoft.Storage/storageAccounts"),  # Storage Table Data Contributor
    ("4633458b-17de-408a-b874-0445c86b69e6", "Microsoft.KeyVault/vaults"),  # Key Vault Secrets User
    ("3913510d-42f4-4e42-8a64-420c390055eb", "Microsoft.Insights/components"),  # Monitoring Metrics Publisher
    ("73c42c96-874c-492b-b04d-ab87d138a893", "Microsoft.OperationalInsights/workspaces"),  # Log Analytics Reader
}


def role_assignments(decls: list[Declaration]) -> list[Declaration]:
    return [d for d in decls if d.resource_type == "Microsoft.Authorization/roleAssignments"]


def custom_role(role_node: Node | None, resources: dict[str, Declaration]) -> Declaration | None:
    """The roleDefinitions resource of this file that `subscriptionResourceId(..., <symbol>.name)` names."""
    if role_node is None or role_node.type != "call_expression":
        return None
    args = role_node.named_children[-1].named_children
    last = args[-1] if args else None
    if last is None or last.type != "member_expression" or text(last.named_children[-1]) != "name":
        return None
    target = resources.get(text(last.named_children[0]))
    if target is None or target.resource_type != "Microsoft.Authorization/roleDefinitions" or target.existing:
        return None
    return target


def custom_actions(role: Declaration, path: Path) -> list[str]:
    """The `actions` strings of a custom role (a literal list or a variable holding one)."""
    permissions = get_path(role.body, "properties", "permissions")
    found: list[str] = []
    for permission in permissions.named_children if permissions is not None else []:
        actions = get_path(permission, "actions")
        if actions is not None and actions.type == "identifier":
            actions = variables(path).get(text(actions))
        if actions is None or actions.type != "array":
            found.append("*unreadable*")
            continue
        found += [string_value(a) or "*unreadable*" for a in actions.named_children if a.type != "comment"]
    return found


def check(path: Path) -> tuple[list[str], set[tuple[str, str]]]:
    """Problems with the role assignments of one file, and the (role id, scope type) pairs granted."""
    decls = declarations(path)
    resources = {d.symbol: d for d in decls if d.kind == "resource"}
    problems: list[str] = []
    granted: set[tuple[str, str]] = set()
    for assignment in role_assignments(decls):
        where = f"{path.name}:{line_of(assignment.node)} ({assignment.symbol})"
        scope = get_path(assignment.body, "scope")
        target = resources.get(text(scope)) if scope is not None and scope.type == "identifier" else None
        if scope is None:
            problems.append(f"{where}: no 'scope', so it applies to the whole resource group")
        elif target is None or target.resource_type == "Microsoft.Resources/resourceGroups":
            problems.append(f"{where}: scope {text(scope)!r} is not a resource of this file; scope it to one")
        role_node = get_path(assignment.body, "properties", "roleDefinitionId")
        role = resolve_string(role_node, path)
        role_id = GUID.findall(role)[-1].lower() if role and GUID.search(role) else None
        custom = custom_role(role_node, resources)
        if custom is not None:
            role_id = f"custom:{path.name}"
            if any("*" in action for action in custom_actions(custom, path)):
                problems.append(f"{where}: custom role {custom.symbol} must list its actions, no wildcards")
        if role_id is None:
            shown = text(role_node) if role_node is not None else "nothing"
            problems.append(f"{where}: roleDefinitionId {shown!r} is not a static built-in role id")
        elif role_id in BROAD_ROLES:
            problems.append(f"{where}: grants {BROAD_ROLES[role_id]}; grant the narrow data/service role instead")
        if role_id and target is not None:
            granted.add((role_id, target.resource_type))
    return problems, granted


def test_role_assignments_are_scoped_to_resources_and_narrow() -> None:
    files = sorted({d.file for d in role_assignments(list(all_declarations()))})
    assert files, "no role assignments found in infra/"
    problems = [p for path in files for p in check(path)[0]]
    assert not problems, "\n".join(problems)


def test_the_app_gets_each_role_it_needs_on_the_right_resource() -> None:
    granted = set().union(*(check(d.file)[1] for d in role_assignments(list(all_declarations()))))
    missing = REQUIRED - granted
    assert not missing, f"role assignments missing (role id, scope type): {sorted(missing)}"


def test_the_only_custom_role_is_the_apps_role_on_api_management() -> None:
    roles = [d for d in all_declarations() if d.resource_type == "Microsoft.Authorization/roleDefinitions"]
    assert [d.file.name for d in roles] == ["apim-wiring.bicep"], [d.where for d in roles]
    (role,) = roles
    actions = custom_actions(role, role.file)
    assert actions, f"{role.where}: the custom role lists no actions"
    for action in actions:
        assert action.startswith("Microsoft.ApiManagement/service/"), (
            f"{role.where}: {action!r} is not an API Management instance action"
        )


def test_the_app_no_longer_gets_api_management_service_contributor() -> None:
    granted = set().union(*(check(d.file)[1] for d in role_assignments(list(all_declarations()))))
    assert (APIM_SERVICE_CONTRIBUTOR, "Microsoft.ApiManagement/service") not in granted


def test_broad_or_unscoped_assignments_are_reported(tmp_path: Path) -> None:
    snippet = tmp_path / "bad.bicep"
    snippet.write_text(
        f"""param principalId string
var roles = {{
  owner: '{OWNER}'
}}
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {{
  name: 'kv'
}}
resource onGroup 'Microsoft.Authorization/roleAssignments@2022-04-01' = {{
  name: guid(principalId)
  properties: {{
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.owner)
    principalId: principalId
  }}
}}
resource onSubscription 'Microsoft.Authorization/roleAssignments@2022-04-01' = {{
  name: guid(principalId, 'x')
  scope: subscription()
  properties: {{
    roleDefinitionId: '/providers/Microsoft.Authorization/roleDefinitions/{CONTRIBUTOR}'
    principalId: principalId
  }}
}}
resource everything 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {{
  name: guid(principalId, 'all')
  properties: {{
    roleName: 'all'
    type: 'CustomRole'
    permissions: [
      {{
        actions: [
          'Microsoft.ApiManagement/*'
        ]
      }}
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }}
}}
resource onEverything 'Microsoft.Authorization/roleAssignments@2022-04-01' = {{
  name: guid(principalId, 'z')
  scope: vault
  properties: {{
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', everything.name)
    principalId: principalId
  }}
}}
resource dynamicRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {{
  name: guid(principalId, 'y')
  scope: vault
  properties: {{
    roleDefinitionId: roleFromSomewhere
    principalId: principalId
  }}
}}
""",
        encoding="utf-8",
    )
    problems, _ = check(snippet)
    assert any("onGroup" in p and "no 'scope'" in p for p in problems), problems
    assert any("onGroup" in p and "Owner" in p for p in problems), problems
    assert any("onSubscription" in p and "subscription()" in p for p in problems), problems
    assert any("onSubscription" in p and "Contributor" in p for p in problems), problems
    assert any("dynamicRole" in p and "not a static" in p for p in problems), problems
    assert any("onEverything" in p and "no wildcards" in p for p in problems), problems
    assert not any("onEverything" in p and "not a static" in p for p in problems), problems
