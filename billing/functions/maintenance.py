"""Housekeeping timers: the daily retention purge (billing.store.retention)."""

from __future__ import annotations

import logging
import time

import azure.functions as func

from billing.adapters.storage import table
from billing.store.retention import purge_all

bp = func.Blueprint()
log = logging.getLogger("billing.ops")


@bp.timer_trigger(schedule="%RETENTION_SCHEDULE%", arg_name="timer", run_on_startup=False)
def retention_purge(timer: func.TimerRequest) -> None:
    results = purge_all(table, int(time.time()))
    log.info("retention: %s", "; ".join(r.line() for r in results))
