// Azure Monitor alerts on the app's Application Insights component (monitoring.bicep): one log
// search alert rule per failure an operator must act on, all sending to one e-mail action group.
// docs/operations.md says, for each rule, what it means and what to do; tests/infra/test_alerts.py
// checks that each query still matches the log lines and function names in billing/.
//
// How the Functions host records the app (Microsoft Learn, "Analyze Azure Functions telemetry in
// Application Insights"): one row in `requests` per function invocation, named after the
// function (`name`, = `operation_Name`), `success == false` when it raised; for an HTTP function
// `resultCode` is the status it answered. What the app logs (Python `logging`) lands in `traces`,
// `message` being the formatted line. The rules are scoped to the component, so the queries use
// its table names (`requests`, `traces`), not the workspace's (AppRequests, AppTraces).
//
// Types and API versions: Microsoft.Insights/scheduledQueryRules 2023-12-01 (REST spec
// specification/monitor/resource-manager/Microsoft.Insights/stable/2023-12-01/
// scheduledQueryRule_API.json, example createOrUpdateScheduledQueryRule.json; Bicep reference
// learn.microsoft.com/azure/templates/microsoft.insights/scheduledqueryrules) and
// Microsoft.Insights/actionGroups 2023-01-01 (stable/2023-01-01/actionGroups_API.json). A log
// search alert reads at most two days of data ("Create a log search alert rule", query time
// range), which bounds the 26-hour rule below.

@description('Name of the Application Insights component the rules query.')
param applicationInsightsName string

@description('Region of the rules (the component\'s).')
param location string

@description('Tags for the rules and the action group.')
param tags object = {}

@description('Where the alerts are sent: one address, best a team or distribution list.')
@minLength(3)
param alertEmail string

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-${applicationInsightsName}'
  // Action groups are global resources.
  location: 'global'
  tags: tags
  properties: {
    // At most 12 characters; shown as the sender of SMS/push notifications.
    groupShortName: 'billing-ops'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Every rule counts rows: it fires when its query returns at least one in the window. Frequencies
// and windows are ISO 8601 durations; severity 0 is critical, 1 error, 2 warning. `runbook` is the
// heading of its section in docs/operations.md.
var rules = [
  {
    name: 'usage-push-failed'
    displayName: 'Usage push failed'
    runbook: 'usage-push-failed'
    // Unbilled usage is lost revenue if not fixed before the invoice is finalised: error.
    severity: 1
    // The push runs once a day and its batches within minutes: every 15 minutes over the last 15
    // sees each failure once, soon enough to rerun the push the same morning.
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    queryTimeRange: 'PT15M'
    // A failed timer run (no batch was queued), a failed batch (the host retries it, up to 5
    // times, then the poison rule fires), or meter events Stripe refused (billing/functions/usage.py).
    query: '''
union
  (requests
    | where name in ("usage_push_timer", "usage_push_batch") and success == false
    | project timestamp, what = strcat(name, " failed")),
  (traces
    | where message matches regex @"^usage push: \d+ refused: "
    | project timestamp, what = message)
'''
  }
  {
    name: 'usage-push-not-run'
    displayName: 'Usage push did not run for 26 hours'
    runbook: 'usage-push-not-run'
    // No push means no usage reported at all: error.
    severity: 1
    // Hourly is enough for a daily job; the query itself looks back 26 hours (a day plus slack
    // for a late or retried run, as `python -m billing status` does), within a 2-day range.
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    queryTimeRange: 'P2D'
    // Fires when no successful usage_push_timer run is younger than 26 hours, once the app has
    // had any invocation older than that (so not in the first day after the first deployment).
    query: '''
let lastRun = toscalar(requests | where name == "usage_push_timer" and success == true | summarize max(timestamp));
let firstSeen = toscalar(requests | summarize min(timestamp));
print last_run = lastRun, first_seen = firstSeen
| where first_seen < ago(26h) and (isnull(last_run) or last_run < ago(26h))
'''
  }
  {
    name: 'poison-message'
    displayName: 'A message was moved to a poison queue'
    runbook: 'poison-message'
    // A usage batch or a Stripe event that failed 5 times waits for a person: error.
    severity: 1
    // Rare and final: every 15 minutes is soon enough, each move counted once.
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    queryTimeRange: 'PT15M'
    // The Storage queues extension logs this warning when it moves a message to <queue>-poison
    // after host.json's maxDequeueCount (Azure/azure-sdk-for-net, Microsoft.Azure.WebJobs.
    // Extensions.Storage.Queues, QueueProcessor.CopyMessageToPoisonQueueAsync: "Message has
    // reached MaxDequeueCount of {0}. Moving message to queue '{1}'."). Not a Storage metric: the
    // queue service's capacity metrics (QueueMessageCount, QueueCount, QueueCapacity) have no queue
    // dimension ("Supported metrics for Microsoft.Storage/storageAccounts/queueServices"), so they
    // count the whole account and cannot tell a poison queue from the working ones.
    query: '''
traces
| where message has "Moving message to queue"
| where message matches regex @"Moving message to queue '[^']+-poison'"
'''
  }
  {
    name: 'webhook-5xx'
    displayName: 'Stripe webhooks answered 5xx'
    runbook: 'webhook-5xx'
    // Stripe retries for three days, but meanwhile access is not granted or revoked: error.
    severity: 1
    // Every 5 minutes over the last 15: three failures and 5 % of deliveries, so that one
    // transient 503 (retried by Stripe) stays quiet and a broken endpoint is seen within minutes.
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    queryTimeRange: 'PT15M'
    // Both HTTP functions Stripe calls. An answer of 5xx the app chose (500 without a signing
    // secret, 502/503 when a dependency is down) is a successful invocation: count the status,
    // and invocations that raised without one.
    query: '''
requests
| where name in ("stripe_webhook", "stripe_thin_events")
| summarize total = count(), failed = countif(toint(resultCode) >= 500 or (success == false and isnull(toint(resultCode))))
| where failed >= 3 and failed >= 0.05 * total
'''
  }
  {
    name: 'reconcile-drift'
    displayName: 'Reconcile changed subscriptions'
    runbook: 'reconcile-drift'
    // The drift is already repaired; someone should find out why the webhooks missed it: warning.
    severity: 2
    // Reconcile runs hourly (RECONCILE_SCHEDULE, at :30): one evaluation per run.
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    queryTimeRange: 'PT1H'
    // A run that changed something (billing/functions/webhooks.py logs the count every run), a
    // subscription it could not check (billing/access/reconcile.py), or a run that failed.
    query: '''
union
  (traces
    | where message matches regex @"^reconcile: \d+ change\(s\)$"
    | where toint(extract(@"^reconcile: (\d+) change", 1, message)) > 0),
  (traces
    | where message matches regex @"^reconcile of \S+ failed"),
  (requests
    | where name == "reconcile_access" and success == false)
'''
  }
  {
    name: 'meter-errors'
    displayName: 'Stripe reported meter errors'
    runbook: 'meter-errors'
    // The app asks Stripe again for what it missed, so usage is usually recovered: warning.
    severity: 2
    // Stripe sends these reports as they happen: every 15 minutes over the last 15.
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    queryTimeRange: 'PT15M'
    // One line per meter error report Stripe sent to the event destination (billing/functions/usage.py).
    query: '''
traces
| where message startswith "usage: meter error report "
'''
  }
]

resource logAlerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: '${applicationInsightsName}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: '${rule.displayName}. What to do: docs/operations.md, section "${rule.runbook}".'
    severity: rule.severity
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: rule.evaluationFrequency
    windowSize: rule.windowSize
    overrideQueryTimeRange: rule.queryTimeRange
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    // Stateful: one mail when it fires, one when the condition has cleared.
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupName string = actionGroup.name
output ruleNames array = [for rule in rules: '${applicationInsightsName}-${rule.name}']
