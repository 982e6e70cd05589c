"""Azure Functions entry point (Python v2 programming model): builds the app from blueprints."""

import azure.functions as func

from billing.functions.health import bp as health_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(health_bp)
