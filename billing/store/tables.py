"""Names of the app's tables and queues, in one place (Azure table names: letters and digits)."""

PROCESSED_EVENTS_TABLE = "processedevents"
SUBSCRIPTIONS_TABLE = "subscriptions"
USAGE_WATERMARKS_TABLE = "usagewatermarks"
ACCOUNTS_TABLE = "accounts"
LOGIN_ATTEMPTS_TABLE = "loginattempts"
DELEGATION_SALTS_TABLE = "delegationsalts"

USAGE_BATCH_QUEUE = "usage-batches"
EVENT_WORK_QUEUE = "stripe-event-work"

ALL_TABLES = (
    PROCESSED_EVENTS_TABLE,
    SUBSCRIPTIONS_TABLE,
    USAGE_WATERMARKS_TABLE,
    ACCOUNTS_TABLE,
    LOGIN_ATTEMPTS_TABLE,
    DELEGATION_SALTS_TABLE,
)
ALL_QUEUES = (USAGE_BATCH_QUEUE, EVENT_WORK_QUEUE)
