"""Names of the app's tables and queues, in one place (Azure table names: letters and digits)."""

PROCESSED_EVENTS_TABLE = "processedevents"
SUBSCRIPTIONS_TABLE = "subscriptions"
USAGE_WATERMARKS_TABLE = "usagewatermarks"
ACCOUNTS_TABLE = "accounts"
THROTTLES_TABLE = "throttles"  # fixed-window counters: guesses per account, requests per client, mails per address
EMAIL_TOKENS_TABLE = "emailtokens"  # single-use links sent by e-mail (address confirmation, password reset)
CATALOG_LINKS_TABLE = "cataloglinks"  # product links to APIs and groups that `catalog apply` made
CUSTOMERS_TABLE = "customers"  # APIM user id -> the Stripe customer the app made for it
DELEGATION_SALTS_TABLE = "delegationsalts"
TRIALS_TABLE = "trials"  # who has had the free trial of which product (billing/store/trials.py)

USAGE_BATCH_QUEUE = "usage-batches"
EVENT_WORK_QUEUE = "stripe-event-work"

ALL_TABLES = (
    PROCESSED_EVENTS_TABLE,
    SUBSCRIPTIONS_TABLE,
    USAGE_WATERMARKS_TABLE,
    ACCOUNTS_TABLE,
    THROTTLES_TABLE,
    EMAIL_TOKENS_TABLE,
    DELEGATION_SALTS_TABLE,
    CATALOG_LINKS_TABLE,
    CUSTOMERS_TABLE,
    TRIALS_TABLE,
)
ALL_QUEUES = (USAGE_BATCH_QUEUE, EVENT_WORK_QUEUE)
