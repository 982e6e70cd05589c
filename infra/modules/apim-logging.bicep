// Logs every call through the API Management gateway into the usage workspace (usage-logs.bicep),
// where the app counts each subscription's billable calls in ApiManagementGatewayLogs. Deployed
// into the instance's resource group, for a new and an existing instance alike (main.bicep).

@description('Name of the API Management instance.')
param apimName string

@description('Resource id of the Log Analytics workspace for the gateway logs (any resource group or region).')
param workspaceId string

resource apim 'Microsoft.ApiManagement/service@2024-05-01' existing = {
  name: apimName
}

// Resource logs of the GatewayLogs category in resource-specific mode ('Dedicated'), so that rows
// land in ApiManagementGatewayLogs rather than AzureDiagnostics ("Monitor API Management", Resource
// specific destination table; REST "Diagnostic Settings - Create Or Update", 2021-05-01-preview).
// Named after the workspace: two azd environments on one instance each keep their own setting.
resource gatewayLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'usage-${last(split(workspaceId, '/'))}'
  scope: apim
  properties: {
    workspaceId: workspaceId
    logAnalyticsDestinationType: 'Dedicated'
    logs: [
      {
        category: 'GatewayLogs'
        enabled: true
      }
    ]
  }
}

// The instance's Azure Monitor logger, which the portal creates with the first diagnostic setting
// (REST "Logger - Create Or Update", loggerType azureMonitor; declared the same way in
// Azure-Samples/AI-Gateway modules/apim/v2/apim.bicep). isBuffered as the portal leaves it.
resource azureMonitorLogger 'Microsoft.ApiManagement/service/loggers@2024-05-01' = {
  parent: apim
  name: 'azuremonitor'
  properties: {
    loggerType: 'azureMonitor'
    isBuffered: true
  }
  dependsOn: [
    gatewayLogs
  ]
}

// The logging settings for all APIs (portal: APIs > All APIs > Settings > Diagnostic Logs > Azure
// Monitor; REST "Diagnostic - Create Or Update"). Every request is logged: fixed sampling at 100
// percent, since a sampled-out call is a call never billed. No headers, bodies or client IP: the
// app needs none of them, and they would only make each billed row bigger (and hold personal data).
// An API-level 'azuremonitor' diagnostic overrides this one for its API: never sample there.
resource azureMonitorDiagnostic 'Microsoft.ApiManagement/service/diagnostics@2024-05-01' = {
  parent: apim
  name: 'azuremonitor'
  properties: {
    loggerId: azureMonitorLogger.id
    alwaysLog: 'allErrors'
    sampling: {
      samplingType: 'fixed'
      percentage: 100
    }
    logClientIp: false
    verbosity: 'error'
    frontend: {
      request: {
        headers: []
        body: {
          bytes: 0
        }
      }
      response: {
        headers: []
        body: {
          bytes: 0
        }
      }
    }
    backend: {
      request: {
        headers: []
        body: {
          bytes: 0
        }
      }
      response: {
        headers: []
        body: {
          bytes: 0
        }
      }
    }
  }
}
