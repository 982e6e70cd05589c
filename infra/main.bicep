// Everything the APIM monetization app needs in Azure, deployed by `azd up` (see docs/deploy.md).
// Subscription scope: azd creates the resource group here, and an existing APIM instance may
// live in another resource group of the same subscription.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of all new resources; Flex Consumption must be offered there.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person or CI principal running azd (azd sets AZURE_PRINCIPAL_ID): may set the Stripe secrets in Key Vault. Empty for none.')
param principalId string = ''

@description('\'new\': create an API Management instance; \'existing\': use apimName in apimResourceGroupName.')
@allowed([
  'new'
  'existing'
])
param apimMode string = 'new'

@description('Name of the API Management instance to use or create; empty creates apim-<token>.')
param apimName string = ''

@description('Resource group of the existing API Management instance; empty means the app\'s resource group.')
param apimResourceGroupName string = ''

@description('Pricing tier of a new API Management instance (Consumption has no developer portal, so no delegation).')
@allowed([
  'Developer'
  'Basic'
  'Standard'
  'Premium'
  'BasicV2'
  'StandardV2'
])
param apimSku string = 'Developer'

@description('Publisher email of a new API Management instance (required when creating one).')
param apimPublisherEmail string = ''

@description('Publisher name of a new API Management instance.')
param apimPublisherName string = 'API provider'

@description('\'full\': APIM delegates sign-in, sign-up and subscriptions to the app; \'subscriptions\': only subscriptions.')
@allowed([
  'full'
  'subscriptions'
])
param delegationMode string = 'full'

@description('Application (client) id of the Entra application that the app\'s SMTP login to Azure Communication Services belongs to (docs/deploy.md, E-mail). Empty: no SMTP login yet.')
param smtpEntraAppClientId string = ''

@description('Object id of that application\'s service principal: gets "Communication and Email Service Owner" on the Communication Services resource. Empty: no role yet.')
param smtpServicePrincipalId string = ''

@description('Data location of the Email Communication Service and Communication Services resources (e.g. \'United States\', \'Europe\'); fixed once created.')
param emailDataLocation string = 'United States'

@description('A verified custom domain already added to the Email Communication Service (e.g. mail.example.com); empty: send from the Azure-managed domain.')
param emailCustomDomainName string = ''

@description('From address of the portal\'s mails; empty: DoNotReply@ the custom domain, or the Azure-managed domain.')
param mailSenderOverride string = ''

// Gateway logs, from which the app bills usage (modules/usage-logs.bicep, docs/deploy.md).
@description('Days that the gateway logs (the calls the app bills) are kept; at least a billing month plus Stripe\'s webhook retries.')
@minValue(35)
@maxValue(730)
param usageLogsRetentionInDays int = 90

@description('Daily ingestion cap of the gateway-log workspace in GB; -1 for none. Calls past the cap are not logged, so never billed.')
@minValue(-1)
param usageLogsDailyQuotaGb int = -1

// Alerts (modules/alerts.bicep, runbook in docs/operations.md): empty creates none, for a dev or
// trial environment; the preprovision hook says so. Production sets ALERT_EMAIL.
@description('Address that Azure Monitor alerts go to (a team list); empty: no alert rules and no action group.')
param alertEmail string = ''

// Created once and kept: the preprovision hook (infra/hooks/kept-key.sh) reuses the key of
// the azd environment, else the one in Key Vault, and generates one only on the first provision;
// azd passes it from the environment (main.parameters.json). A new key on every deployment would
// void every portal session and form the app signed with the old one (docs/deploy.md, section 5).
// No default: a missing key fails the deployment instead of silently rotating it.
@secure()
@minLength(44)
@description('The APIM delegation validation key, base64 (at least 256 bits). Set by the preprovision hook; rotate with `azd env set APIM_DELEGATION_VALIDATION_KEY`.')
param delegationValidationKey string

// The app's own keys for sessions, forms and device cookies (billing/portal/tokens.py), newest first,
// comma-separated during a rotation (docs/operations.md). Kept like the delegation key, by the same hook.
@secure()
@minLength(44)
@description('PORTAL_SESSION_KEYS: base64 keys (at least 256 bits each), newest first. Set by the preprovision hook.')
param portalSessionKeys string

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var useExistingApim = apimMode == 'existing'
var apimServiceName = !empty(apimName) ? apimName : 'apim-${resourceToken}'
var deploymentContainerName = 'app-package'
// The app's tables and queues, generated from billing/store/tables.py by infra/settings_gen.py.
var appStorage = loadJsonContent('app-storage.json')
var secretNames = {
  stripeApiKey: 'stripe-api-key'
  stripeWebhookSecret: 'stripe-webhook-secret'
  // The signing secret of the event destination that receives Stripe's thin meter error events.
  stripeEventDestinationSecret: 'stripe-event-destination-secret'
  delegationKey: 'apim-delegation-validation-key'
  sessionKeys: 'portal-session-keys'
  // The Entra application's client secret, set by the provider (docs/deploy.md, E-mail).
  smtpPassword: 'smtp-password'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

resource apimRg 'Microsoft.Resources/resourceGroups@2024-03-01' existing = {
  name: useExistingApim && !empty(apimResourceGroupName) ? apimResourceGroupName : rg.name
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

// Log search alerts on the app's telemetry, sent to alertEmail (docs/operations.md).
module alerts 'modules/alerts.bicep' = if (!empty(alertEmail)) {
  name: 'alerts'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    location: location
    tags: tags
    alertEmail: alertEmail
  }
}

module usageLogs 'modules/usage-logs.bicep' = {
  name: 'usage-logs'
  scope: rg
  params: {
    name: 'log-usage-${resourceToken}'
    location: location
    tags: tags
    retentionInDays: usageLogsRetentionInDays
    dailyQuotaGb: usageLogsDailyQuotaGb
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    tableNames: appStorage.tables
    queueNames: appStorage.queues
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    delegationKeySecretName: secretNames.delegationKey
    delegationValidationKey: delegationValidationKey
    sessionKeysSecretName: secretNames.sessionKeys
    portalSessionKeys: portalSessionKeys
  }
}

module email 'modules/email.bicep' = {
  name: 'email'
  scope: rg
  params: {
    emailServiceName: 'ecs-${resourceToken}'
    communicationServiceName: 'acs-${resourceToken}'
    dataLocation: emailDataLocation
    tags: tags
    smtpEntraApplicationId: smtpEntraAppClientId
    smtpServicePrincipalId: smtpServicePrincipalId
    customDomainName: emailCustomDomainName
    mailSender: mailSenderOverride
  }
}

module appRoles 'modules/app-roles.bicep' = {
  name: 'app-roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    usageLogsWorkspaceName: usageLogs.outputs.name
    operatorPrincipalId: principalId
  }
}

module newApim 'modules/apim.bicep' = if (!useExistingApim) {
  name: 'apim'
  scope: rg
  params: {
    name: apimServiceName
    location: location
    tags: tags
    sku: apimSku
    publisherEmail: apimPublisherEmail
    publisherName: apimPublisherName
  }
}

module apim 'modules/apim-lookup.bicep' = {
  name: 'apim-lookup'
  scope: apimRg
  params: {
    name: apimServiceName
  }
  dependsOn: [
    newApim
  ]
}

// Every call through the gateway, new or existing instance, into the usage workspace.
module apimLogging 'modules/apim-logging.bicep' = {
  name: 'apim-logging'
  scope: apimRg
  params: {
    apimName: apimServiceName
    workspaceId: usageLogs.outputs.id
  }
  dependsOn: [
    newApim
  ]
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: 'func-${resourceToken}'
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    stripeApiKeySecretName: secretNames.stripeApiKey
    stripeWebhookSecretSecretName: secretNames.stripeWebhookSecret
    stripeEventDestinationSecretName: secretNames.stripeEventDestinationSecret
    delegationKeySecretUri: keyVault.outputs.delegationKeySecretUriWithVersion
    sessionKeysSecretUri: keyVault.outputs.sessionKeysSecretUriWithVersion
    smtpPasswordSecretName: secretNames.smtpPassword
    smtpHost: email.outputs.smtpHost
    smtpUsername: email.outputs.smtpUsername
    mailSender: email.outputs.mailSender
    apimSubscriptionId: subscription().subscriptionId
    apimResourceGroupName: apimRg.name
    apimName: apimServiceName
    apimGatewayUrl: apim.outputs.gatewayUrl
    apimDeveloperPortalUrl: apim.outputs.developerPortalUrl
    delegationMode: delegationMode
    logAnalyticsWorkspaceId: usageLogs.outputs.customerId
  }
  // The host starts as soon as the app exists: its storage, Key Vault and workspace roles must be in place.
  dependsOn: [
    appRoles
  ]
}

module apimWiring 'modules/apim-wiring.bicep' = {
  name: 'apim-wiring'
  scope: apimRg
  params: {
    apimName: apimServiceName
    appPrincipalId: identity.outputs.principalId
    delegationUrl: 'https://${functionApp.outputs.defaultHostName}/api/delegation'
    delegationValidationKey: delegationValidationKey
    delegationMode: delegationMode
  }
}

// Names and URLs only; no secret leaves the deployment. azd stores these in .azure/<env>/.env.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
// For the operator's terminal (docs/operations.md): the app's tables and queues, and its telemetry.
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_APPLICATION_INSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output SERVICE_API_URL string = 'https://${functionApp.outputs.defaultHostName}'
output STRIPE_WEBHOOK_URL string = 'https://${functionApp.outputs.defaultHostName}/api/webhooks/stripe'
output STRIPE_EVENT_DESTINATION_URL string = 'https://${functionApp.outputs.defaultHostName}/api/webhooks/stripe-events'
output STRIPE_API_KEY_SECRET_NAME string = secretNames.stripeApiKey
output STRIPE_WEBHOOK_SECRET_SECRET_NAME string = secretNames.stripeWebhookSecret
output STRIPE_EVENT_DESTINATION_SECRET_SECRET_NAME string = secretNames.stripeEventDestinationSecret
output SMTP_PASSWORD_SECRET_NAME string = secretNames.smtpPassword
output SMTP_USERNAME string = email.outputs.smtpUsername
output MAIL_SENDER string = email.outputs.mailSender
output AZURE_COMMUNICATION_SERVICE_NAME string = email.outputs.communicationServiceName
output AZURE_EMAIL_SERVICE_NAME string = email.outputs.emailServiceName
output APIM_SUBSCRIPTION_ID string = subscription().subscriptionId
output APIM_RESOURCE_GROUP string = apimRg.name
output APIM_SERVICE_NAME string = apimServiceName
output APIM_GATEWAY_URL string = apim.outputs.gatewayUrl
output APIM_DEVELOPER_PORTAL_URL string = apim.outputs.developerPortalUrl
// The workspace (customer) id, for running the app or `az monitor log-analytics query` locally.
output LOG_ANALYTICS_WORKSPACE_ID string = usageLogs.outputs.customerId
