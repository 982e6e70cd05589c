// Connects the API Management instance to the app: delegation of sign-in/sign-up and
// subscriptions to the app's /api/delegation endpoint, and the one role the app needs on the
// instance: a custom role with only the actions the app calls, assigned on the instance.
// Deployed into the instance's resource group, so the role is scoped to the instance.

@description('Name of the API Management instance.')
param apimName string

@description('Principal (object) id of the app\'s user-assigned identity.')
param appPrincipalId string

@description('Absolute HTTPS URL of the app\'s delegation endpoint.')
param delegationUrl string

@secure()
@description('Base64 validation key that APIM signs delegation requests with (also in Key Vault).')
param delegationValidationKey string

@description('\'full\': sign-in, sign-up and subscriptions are delegated; \'subscriptions\': only subscriptions.')
@allowed([
  'full'
  'subscriptions'
])
param delegationMode string = 'full'

// What the Functions app calls on the instance, and nothing else (least privilege). The built-in
// API Management Service Contributor it had before also let it delete the instance, change its
// SKU, network, APIs, products and policies, and read every secret; none of that is needed here.
// Products, their policies and their API/group links belong to `python -m billing catalog apply`,
// which runs as the operator's identity, not the app's (docs/deploy.md, section 4).
// tests/infra/test_apim_role.py derives this list from the azure-mgmt-apimanagement calls that
// function_app.py can reach in billing/ and fails on any action missing or extra. Action strings:
// Microsoft Learn, "Azure permissions for Integration", Microsoft.ApiManagement.
var appActions = [
  // The tier (SKU), read once: classic tiers have quota-by-key counters to reset, v2 tiers not.
  'Microsoft.ApiManagement/service/read'
  // Consumer accounts: find by e-mail, create, rename, delete (with their subscriptions), the
  // developer portal sign-in token, and the groups (is this user an administrator?).
  'Microsoft.ApiManagement/service/users/read'
  'Microsoft.ApiManagement/service/users/write'
  'Microsoft.ApiManagement/service/users/delete'
  'Microsoft.ApiManagement/service/users/token/action'
  'Microsoft.ApiManagement/service/users/groups/read'
  'Microsoft.ApiManagement/service/users/subscriptions/read'
  // Deleting a user is a long-running operation, polled at .../tenant/operationResults/{id}
  // (azure-rest-api-specs, apimanagement stable/2024-05-01 example ApiManagementDeleteUser.json).
  'Microsoft.ApiManagement/service/tenant/operationResults/read'
  // Subscriptions: read, create, change state, and the primary key shown to its paying owner.
  'Microsoft.ApiManagement/service/subscriptions/read'
  'Microsoft.ApiManagement/service/subscriptions/write'
  'Microsoft.ApiManagement/service/subscriptions/listSecrets/action'
  // A subscription's quota counter, reset when Stripe starts its next billing period.
  'Microsoft.ApiManagement/service/quotas/write'
  // Usage reports (USAGE_SOURCE=reports, and the portal's usage figures).
  'Microsoft.ApiManagement/service/reports/read'
]

resource apim 'Microsoft.ApiManagement/service@2024-05-01' existing = {
  name: apimName
}

resource delegation 'Microsoft.ApiManagement/service/portalsettings@2024-05-01' = {
  parent: apim
  name: 'delegation'
  properties: {
    url: delegationUrl
    validationKey: delegationValidationKey
    subscriptions: {
      enabled: true
    }
    userRegistration: {
      enabled: delegationMode == 'full'
    }
  }
}

// A custom role (Microsoft.Authorization/roleDefinitions 2022-04-01; Bicep reference
// learn.microsoft.com/azure/templates/microsoft.authorization/roledefinitions). One per instance:
// its name is a GUID derived from the instance, and its display name, which must be unique in the
// tenant ("Azure custom roles"), carries the instance's globally unique name. Assignable in the
// instance's resource group only. Creating it needs Microsoft.Authorization/roleDefinitions/write
// there (Owner or User Access Administrator), like the role assignment itself.
var assignableScope = resourceGroup().id

resource appRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(apim.id, 'apim-billing-app')
  properties: {
    roleName: 'APIM billing app (${apimName})'
    description: 'What the APIM monetization app calls on API Management instance ${apimName}: users, subscriptions and their keys, quota counters, reports, the service read. Nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: appActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      assignableScope
    ]
  }
}

// Role definitions live at subscription level whatever the deployment scope: the assignment takes
// the subscription-level id (subscriptionResourceId), which also makes it wait for the definition.
resource appRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(apim.id, appPrincipalId, 'apim-billing-app')
  scope: apim
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', appRole.name)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}
