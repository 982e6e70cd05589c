"""Indexing a FunctionApp once, as the Functions worker does.

`FunctionApp.get_functions()` records the names it has seen and refuses a second call on the
same app ("does not have a unique function name"), so every user of the index shares one.
"""

from __future__ import annotations

import threading

import azure.functions as func
from azure.functions.decorators.function_app import Function

_lock = threading.Lock()
_indexed: dict[int, tuple[func.FunctionApp, list[Function]]] = {}


def indexed_functions(app: func.FunctionApp) -> list[Function]:
    with _lock:
        entry = _indexed.get(id(app))
        if entry is None or entry[0] is not app:
            entry = (app, app.get_functions())
            _indexed[id(app)] = entry
        return entry[1]


def function_named(app: func.FunctionApp, name: str) -> Function:
    for function in indexed_functions(app):
        if function.get_function_name() == name:
            return function
    raise KeyError(f"the app has no function named '{name}'")
