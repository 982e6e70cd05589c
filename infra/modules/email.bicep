// E-mail for the portal's consumer accounts (address confirmation, password reset): Azure
// Communication Services (ACS) Email, which the app reaches over SMTP with STARTTLS.
//
//   Email Communication Service ecs-<token>
//     └─ domain 'AzureManagedDomain' (xxxx.azurecomm.net, sender DoNotReply@xxxx.azurecomm.net)
//   Communication Services acs-<token>, linked to that domain (and to a verified custom domain)
//     └─ SMTP Username: the SMTP login, bound to the provider's Entra application
//   Role "Communication and Email Service Owner" for that application on acs-<token>
//
// The Entra application and its client secret (the SMTP password) cannot be created by plain
// Bicep: the provider registers them and puts the secret into Key Vault (docs/deploy.md,
// "E-mail (Azure Communication Services)"). No secret passes through this module.
//
// Every Microsoft.Communication type below uses API version 2025-09-01: the first stable version
// with smtpUsernames (before it only 2024-09-01-preview and 2025-05-01-preview had it), and its
// REST spec (azure-rest-api-specs, specification/communication/resource-manager/
// Microsoft.Communication/Communication/stable/2025-09-01/openapi.json) defines all four types
// and every property set here. Bicep reference: learn.microsoft.com/azure/templates/
// microsoft.communication/<type>.

@description('Name of the Email Communication Service.')
param emailServiceName string

@description('Name of the Communication Services resource (globally unique: it names <name>.<geo>.communication.azure.com).')
param communicationServiceName string

// Both resources must have the same data location, or the domain cannot be linked ("How to connect
// a verified email domain", learn.microsoft.com/azure/communication-services/quickstarts/email/
// connect-email-communication-resource). It is fixed at creation (create-only in the REST spec).
@description('Where ACS stores e-mail data at rest, e.g. \'United States\' or \'Europe\'; cannot change after creation.')
param dataLocation string = 'United States'

@description('Tags for the resources.')
param tags object = {}

@description('Application (client) id of the provider\'s Entra application used for SMTP; empty: no SMTP login yet.')
param smtpEntraApplicationId string = ''

@description('Object id of that application\'s service principal (enterprise application); empty: no role yet.')
param smtpServicePrincipalId string = ''

@description('Tenant of the Entra application; the subscription\'s tenant by default.')
param smtpTenantId string = tenant().tenantId

@description('Name of a verified custom domain already added to this Email Communication Service (e.g. mail.example.com); empty: the Azure-managed domain only.')
param customDomainName string = ''

@description('From address of the mails; empty: DoNotReply@ the custom domain if set, else the Azure-managed domain.')
param mailSender string = ''

// Host and port of ACS SMTP submission: smtp.azurecomm.net, 587 with STARTTLS ("Create
// credentials for SMTP authentication", learn.microsoft.com/azure/communication-services/
// quickstarts/email/send-email-smtp/smtp-authentication). The port and STARTTLS come from
// billing/config.py's defaults (app-settings-defaults.json).
var smtpHost = 'smtp.azurecomm.net'

// Built-in "Communication and Email Service Owner" ("Create, read, modify, and delete
// Communications and Email Service resources"). The SMTP authentication article (section "Assign
// the built-in Communication and Email Service Owner role") names it for the SMTP Entra
// application; its actions include Microsoft.Communication/CommunicationServices/read and /write
// and EmailServices/write, the three that article requires. Built-in role ids are the same in
// every tenant; check with
//   az role definition list --name "Communication and Email Service Owner" --query "[].name" -o tsv
// Scoped to the one Communication Services resource below (tests/infra forbid custom roles).
var roles = {
  communicationAndEmailServiceOwner: '09976791-48a7-449e-bb21-39d1a415f350'
}

var smtpEnabled = !empty(smtpEntraApplicationId) && !empty(smtpServicePrincipalId)
var useCustomDomain = !empty(customDomainName)

// 'global' location and dataLocation as in "Create and manage Email Communication Service
// resources" (az communication email create --location Global --data-location "United States").
resource emailService 'Microsoft.Communication/emailServices@2025-09-01' = {
  name: emailServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
  }
}

// An Azure-managed domain must be named 'AzureManagedDomain' with domainManagement 'AzureManaged'
// ("Create Domain resource", quickstarts/email/add-azure-managed-domains, Azure CLI tab). It needs
// no DNS verification and comes with the MailFrom address DoNotReply@<mailFromSenderDomain>
// ("How to add and remove multiple email sender addresses"). No senderUsernames resource: sender
// usernames "cannot be enabled for Azure Managed Domains or custom domains with default sending
// limits" (same article). User engagement tracking cannot be enabled on it either.
resource managedDomain 'Microsoft.Communication/emailServices/domains@2025-09-01' = {
  parent: emailService
  name: 'AzureManagedDomain'
  location: 'global'
  tags: tags
  properties: {
    domainManagement: 'AzureManaged'
    userEngagementTracking: 'Disabled'
  }
}

// A custom domain is added and DNS-verified by the provider (docs/deploy.md): only verified domains
// can be connected ("How to connect a verified email domain"). Its resource name is the domain
// name itself, and its default MailFrom address is donotreply@<domain> ("How to add and remove
// multiple email sender addresses").
var customDomainId = useCustomDomain ? resourceId('Microsoft.Communication/emailServices/domains', emailService.name, customDomainName) : ''

// linkedDomains is the list of e-mail domain resource ids (CommunicationServiceProperties in the
// 2025-09-01 spec). This deployment owns the list: a domain linked only in the portal is unlinked
// by the next `azd provision`, so a custom domain is linked through customDomainName.
resource communicationService 'Microsoft.Communication/communicationServices@2025-09-01' = {
  name: communicationServiceName
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
    linkedDomains: concat([managedDomain.id], useCustomDomain ? [customDomainId] : [])
  }
}

// The SMTP login. SMTP Username resources "are user-defined and can use either email format or
// freeform. If an SMTP username uses the email format, the domain must be one of the Communication
// Service resource's linked domains" (SMTP authentication article). The e-mail form on our own
// managed domain keeps the login clear of other tenants' logins. Properties as in the 2025-09-01 spec
// (SmtpUsernameProperties: username, entraApplicationId, tenantId, all required).
var smtpLogin = 'smtp@${managedDomain.properties.mailFromSenderDomain}'

resource smtpLoginResource 'Microsoft.Communication/communicationServices/smtpUsernames@2025-09-01' = if (smtpEnabled) {
  parent: communicationService
  name: 'app-smtp'
  properties: {
    username: smtpLogin
    entraApplicationId: smtpEntraApplicationId
    tenantId: smtpTenantId
  }
}

// ACS SMTP signs in as the Entra application and needs its role on the Communication Services
// resource (SMTP authentication article, "Assign a role to the Microsoft Entra application").
resource smtpSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (smtpEnabled) {
  name: guid(communicationService.id, smtpServicePrincipalId, roles.communicationAndEmailServiceOwner)
  scope: communicationService
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.communicationAndEmailServiceOwner)
    principalId: smtpServicePrincipalId
    principalType: 'ServicePrincipal'
  }
}

// mailFromSenderDomain: "P1 sender domain that is present on the email envelope [RFC 5321]"
// (DomainProperties, read-only); for an Azure-managed domain it is the xxxx.azurecomm.net name.
var defaultSender = useCustomDomain ? 'DoNotReply@${customDomainName}' : 'DoNotReply@${managedDomain.properties.mailFromSenderDomain}'

output emailServiceName string = emailService.name
output communicationServiceName string = communicationService.name
output communicationServiceId string = communicationService.id
output managedDomainName string = managedDomain.properties.mailFromSenderDomain
output smtpHost string = smtpHost
// Empty until the Entra application is configured: the app then sends without logging in, which
// ACS refuses, so the postprovision hook reports it.
output smtpUsername string = smtpEnabled ? smtpLogin : ''
output mailSender string = empty(mailSender) ? defaultSender : mailSender
