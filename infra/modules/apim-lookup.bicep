// Reads the URLs of the API Management instance (new or existing) that the app needs as settings.
// Deployed into the instance's resource group.

@description('Name of the API Management instance.')
param name string

resource apim 'Microsoft.ApiManagement/service@2024-05-01' existing = {
  name: name
}

output id string = apim.id
output gatewayUrl string = apim.properties.gatewayUrl
output developerPortalUrl string = apim.properties.developerPortalUrl
