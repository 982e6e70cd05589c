"""A development host for machines without Azure Functions Core Tools (`func`).

It serves the HTTP routes of the very same `function_app.app` object that Azure runs, and
invokes its other functions through the admin endpoint that Core Tools also has
(`POST /admin/functions/{name}`). A development tool only: it is not deployed, does no
authentication of function keys and runs triggers in-process. Use `func start` where you can.
"""
