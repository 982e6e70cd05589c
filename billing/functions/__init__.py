"""Azure Functions entry points (blueprints). Thin: parse the trigger, call a service, shape the answer."""
