// A new API Management instance, used only when the provider has none yet. Products and their
// policies are not declared here: `python -m billing catalog apply` owns them.

@description('Name of the instance (globally unique; it becomes <name>.azure-api.net).')
param name string

@description('Region of the instance.')
param location string

@description('Tags for the instance.')
param tags object = {}

// Consumption is not offered: it has no developer portal, so no delegation.
@description('Pricing tier. Developer has no SLA; use Basic or higher in production.')
@allowed([
  'Developer'
  'Basic'
  'Standard'
  'Premium'
  'BasicV2'
  'StandardV2'
])
param sku string = 'Developer'

@description('Email address that APIM sends its system notifications to.')
param publisherEmail string

@description('Organisation name shown on the developer portal and in emails.')
param publisherName string

var isV2 = endsWith(sku, 'V2')
var tlsPrefix = 'Microsoft.WindowsAzure.ApiManagement.Gateway.Security'

resource apim 'Microsoft.ApiManagement/service@2024-05-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
    capacity: 1
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
    // Classic tiers still accept TLS 1.0/1.1 unless told not to; v2 tiers never do.
    customProperties: isV2 ? {} : {
      '${tlsPrefix}.Protocols.Tls10': 'false'
      '${tlsPrefix}.Protocols.Tls11': 'false'
      '${tlsPrefix}.Backend.Protocols.Tls10': 'false'
      '${tlsPrefix}.Backend.Protocols.Tls11': 'false'
      '${tlsPrefix}.Backend.Protocols.Ssl30': 'false'
      '${tlsPrefix}.Protocols.Server.Http2': 'true'
    }
  }
}

output name string = apim.name
