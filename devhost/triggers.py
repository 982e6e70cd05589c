"""Invoking timer- and queue-triggered functions in-process, as the Functions host would."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import azure.functions as func


class DevTimerRequest(func.TimerRequest):
    """What a timer-triggered function receives; `past_due` is False for an on-demand run."""

    @property
    def past_due(self) -> bool:
        return False


def invoke_non_http(function: Any, input_text: str) -> Any:
    trigger = function.get_trigger()
    handler = function.get_user_function()
    if trigger.type == "timerTrigger":
        argument: Any = DevTimerRequest()
    elif trigger.type == "queueTrigger":
        argument = func.QueueMessage(body=input_text.encode("utf-8"))
    else:
        raise ValueError(f"the development host cannot invoke a '{trigger.type}' trigger")
    result = handler(**{trigger.name: argument})
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(awaitable: Any) -> Any:
    return await awaitable
