// The Function App on the Flex Consumption plan (Python 3.11), running as the app's
// user-assigned identity. Its app settings are the app's settings (billing/config.py SETTINGS)
// plus the host's; secrets are Key Vault references, storage is identity-based (no key).

@description('Name of the Function App (becomes <name>.azurewebsites.net).')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Region of the app and plan.')
param location string

@description('Tags for the app and plan.')
param tags object = {}

@description('Resource id of the app\'s user-assigned identity.')
param identityId string

@description('Name of the app\'s storage account.')
param storageAccountName string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Name of the app\'s Key Vault.')
param keyVaultName string

@description('Key Vault secret names of the Stripe secret key and webhook signing secret(s).')
param stripeApiKeySecretName string
param stripeWebhookSecretSecretName string
@description('Key Vault secret name of the signing secret of the Stripe event destination (thin meter error events).')
param stripeEventDestinationSecretName string

@description('Key Vault secret name of the SMTP password (the client secret of the Entra application that ACS e-mail authenticates).')
param smtpPasswordSecretName string

@description('SMTP server, login and From address of the portal\'s mails (infra/modules/email.bicep); the login is empty until the Entra application is set up.')
param smtpHost string
param smtpUsername string
param mailSender string

@description('Versioned Key Vault URI of the APIM delegation validation key.')
param delegationKeySecretUri string

@description('Versioned Key Vault URI of the portal\'s session keys.')
param sessionKeysSecretUri string

@description('Subscription id, resource group and name of the API Management instance.')
param apimSubscriptionId string
param apimResourceGroupName string
param apimName string

@description('Gateway and developer portal URLs of the API Management instance.')
param apimGatewayUrl string
param apimDeveloperPortalUrl string

@description('\'full\' or \'subscriptions\': what APIM delegates to the app.')
param delegationMode string

@description('Optional overrides; empty means the default from billing/config.py (app-settings-defaults.json).')
param usagePushSchedule string = ''
param usageReportLagMinutes string = ''

@description('Workspace (customer) id of the Log Analytics workspace that holds ApiManagementGatewayLogs.')
param logAnalyticsWorkspaceId string = ''
param reconcileSchedule string = ''

@description('Where usage is read; empty means the default (\'logs\'). \'reports\' works on the classic tiers only, until 15 March 2027.')
@allowed([
  ''
  'logs'
  'reports'
])
param usageSource string = ''

@description('Most instances the app scales out to (the usage push fans out over a queue).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: last(split(identityId, '/'))
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the app to deploy `services.api` of azure.yaml to by this tag.
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    // Key Vault references resolve with the user-assigned identity, not a system-assigned one.
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      // On Flex Consumption the language and version live here, not in FUNCTIONS_WORKER_RUNTIME.
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// No publishing with user/password credentials: azd deploys with Entra ID.
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

var secretsBase = '${vault.properties.vaultUri}secrets'

// Defaults of the app's settings, generated from billing/config.py by infra/settings_gen.py:
// a timer schedule read as %USAGE_PUSH_SCHEDULE% must never be empty.
var appDefaults = loadJsonContent('../app-settings-defaults.json')

// The one list of the app's settings in Azure; tests/infra checks it against billing/config.py.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    // Host storage and the app's tables/queues: identity-based connection, no account key.
    AzureWebJobsStorage__accountName: storageAccount.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identity.properties.clientId
    AzureWebJobsStorage__blobServiceUri: storageAccount.properties.primaryEndpoints.blob
    AzureWebJobsStorage__queueServiceUri: storageAccount.properties.primaryEndpoints.queue
    AzureWebJobsStorage__tableServiceUri: storageAccount.properties.primaryEndpoints.table
    // Telemetry with Entra ID auth (the component has local auth disabled).
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
    // Unversioned references: a rotated secret is picked up without a redeployment (docs/deploy.md).
    STRIPE_API_KEY: '@Microsoft.KeyVault(SecretUri=${secretsBase}/${stripeApiKeySecretName})'
    STRIPE_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${secretsBase}/${stripeWebhookSecretSecretName})'
    STRIPE_EVENT_DESTINATION_SECRET: '@Microsoft.KeyVault(SecretUri=${secretsBase}/${stripeEventDestinationSecretName})'
    STRIPE_API_BASE: ''
    APIM_SUBSCRIPTION_ID: apimSubscriptionId
    APIM_RESOURCE_GROUP: apimResourceGroupName
    APIM_SERVICE_NAME: apimName
    APIM_MANAGEMENT_ENDPOINT: environment().resourceManager
    APIM_DELEGATION_VALIDATION_KEY: '@Microsoft.KeyVault(SecretUri=${delegationKeySecretUri})'
    PORTAL_SESSION_KEYS: '@Microsoft.KeyVault(SecretUri=${sessionKeysSecretUri})'
    APIM_DEVELOPER_PORTAL_URL: apimDeveloperPortalUrl
    APIM_GATEWAY_URL: apimGatewayUrl
    APP_BASE_URL: 'https://${site.properties.defaultHostName}'
    AZURE_CLIENT_ID: identity.properties.clientId
    DELEGATION_MODE: delegationMode
    USAGE_PUSH_SCHEDULE: empty(usagePushSchedule) ? appDefaults.USAGE_PUSH_SCHEDULE : usagePushSchedule
    USAGE_REPORT_LAG_MINUTES: empty(usageReportLagMinutes) ? appDefaults.USAGE_REPORT_LAG_MINUTES : usageReportLagMinutes
    RECONCILE_SCHEDULE: empty(reconcileSchedule) ? appDefaults.RECONCILE_SCHEDULE : reconcileSchedule
    RETENTION_SCHEDULE: appDefaults.RETENTION_SCHEDULE
    // Usage push tuning: per-instance request budgets and batch size; change in the portal if needed.
    USAGE_STRIPE_REQUESTS_PER_SECOND: appDefaults.USAGE_STRIPE_REQUESTS_PER_SECOND
    USAGE_ARM_REQUESTS_PER_SECOND: appDefaults.USAGE_ARM_REQUESTS_PER_SECOND
    USAGE_BATCH_SIZE: appDefaults.USAGE_BATCH_SIZE
    USAGE_CONFIRM_DELAY_SECONDS: appDefaults.USAGE_CONFIRM_DELAY_SECONDS
    // Usage is read from the gateway logs in Log Analytics (every tier; the Reports API retires in March 2027).
    USAGE_SOURCE: empty(usageSource) ? appDefaults.USAGE_SOURCE : usageSource
    LOG_ANALYTICS_ENDPOINT: appDefaults.LOG_ANALYTICS_ENDPOINT
    LOG_ANALYTICS_WORKSPACE_ID: logAnalyticsWorkspaceId
    // Portal mails through Azure Communication Services: port 587 with STARTTLS (config defaults);
    // the password is an unversioned reference like the Stripe secrets, so a rotation needs no deployment.
    SMTP_HOST: smtpHost
    SMTP_PORT: appDefaults.SMTP_PORT
    SMTP_STARTTLS: appDefaults.SMTP_STARTTLS
    SMTP_USERNAME: smtpUsername
    SMTP_PASSWORD: '@Microsoft.KeyVault(SecretUri=${secretsBase}/${smtpPasswordSecretName})'
    MAIL_SENDER: mailSender
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
