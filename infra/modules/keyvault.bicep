// Key Vault for the app's secrets, read by the Function App through Key Vault references.
// Access is Azure RBAC only (no access policies). The Stripe secrets are set by the operator
// after provisioning (see docs/deploy.md): Bicep never sees them, so redeploying cannot
// overwrite a rotated value. Only the delegation validation key and the portal's session keys are
// written here: each created once by the preprovision hook and kept (infra/hooks/kept-key.sh), so a
// redeployment writes the same value.

@description('Name of the vault (3-24 characters).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the vault.')
param location string

@description('Tags for the vault.')
param tags object = {}

@description('Name of the secret holding the APIM delegation validation key.')
param delegationKeySecretName string

@secure()
@description('The APIM delegation validation key (base64); kept in the azd environment (infra/hooks/kept-key.sh).')
param delegationValidationKey string

@description('Name of the secret holding the portal\'s session keys.')
param sessionKeysSecretName string

@secure()
@description('PORTAL_SESSION_KEYS (base64 keys, newest first); kept in the azd environment (infra/hooks/kept-key.sh).')
param portalSessionKeys string

@description('Days a deleted secret or vault can be recovered.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    // Payment secrets: a deleted vault must stay recoverable for the whole retention period.
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource delegationKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: delegationKeySecretName
  properties: {
    value: delegationValidationKey
    contentType: 'base64'
  }
}

resource sessionKeys 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: sessionKeysSecretName
  properties: {
    value: portalSessionKeys
    contentType: 'base64 list'
  }
}

output name string = vault.name
output id string = vault.id
output vaultUri string = vault.properties.vaultUri
// A versioned URI: when the key is rotated (a new value in the azd environment), the deployment
// writes a new version and the app setting that points at it changes with it, so the app reloads
// the key in the same deployment that gives it to APIM.
output delegationKeySecretUriWithVersion string = delegationKey.properties.secretUriWithVersion
output sessionKeysSecretUriWithVersion string = sessionKeys.properties.secretUriWithVersion
