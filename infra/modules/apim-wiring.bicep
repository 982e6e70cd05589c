// Connects the API Management instance to the app: delegation of sign-in/sign-up and
// subscriptions to the app's /api/delegation endpoint, and the one role the app needs on the
// instance. Deployed into the instance's resource group, so the role is scoped to the instance.

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

var apiManagementServiceContributor = '312a565d-c81f-4fd8-895a-4e21e48d571c'

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

// Users, subscriptions, products, policies and usage reports: all under Microsoft.ApiManagement/service/*.
resource apimContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(apim.id, appPrincipalId, apiManagementServiceContributor)
  scope: apim
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', apiManagementServiceContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}
