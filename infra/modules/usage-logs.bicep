// The Log Analytics workspace that receives API Management's gateway logs: one row in
// ApiManagementGatewayLogs per call, which the app counts to bill usage (USAGE_SOURCE=logs,
// docs/deploy.md). Its own workspace, not the Application Insights one (monitoring.bicep): the
// app's identity reads this one only (Log Analytics Reader, app-roles.bicep), not its own
// telemetry, and retention and daily cap here are chosen for billing, not for troubleshooting.

@description('Name of the workspace.')
param name string

@description('Region of the workspace (the API Management instance may be elsewhere).')
param location string

@description('Tags for the workspace.')
param tags object = {}

// The closing read of a period reads the whole billing month (up to 31 days) when Stripe creates
// the invoice, and Stripe retries that webhook for up to 3 days: 35 days at least. 31 days are
// included in the ingestion price; each month beyond costs extra per GB (docs/deploy.md).
@description('Days that gateway log rows (the calls the app bills) are kept and can be queried.')
@minValue(35)
@maxValue(730)
param retentionInDays int = 90

// Off by default: past the cap Azure Monitor stops collecting for the rest of the day, so those
// calls are never billed (learn.microsoft.com/azure/azure-monitor/logs/daily-cap).
@description('Daily ingestion cap in GB; -1 for none.')
@minValue(-1)
param dailyQuotaGb int = -1

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    workspaceCapping: {
      dailyQuotaGb: dailyQuotaGb
    }
    // The app (Flex Consumption, no virtual network) queries over the public endpoint,
    // api.loganalytics.io, with its Entra ID token; the rows come from a diagnostic setting.
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

output id string = workspace.id
output name string = workspace.name
// The workspace (customer) id that LogsQueryClient.query_workspace takes: LOG_ANALYTICS_WORKSPACE_ID.
output customerId string = workspace.properties.customerId
