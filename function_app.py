"""Azure Functions entry point (Python v2 programming model): builds the app from blueprints."""

import azure.functions as func

from billing import bootstrap
from billing.functions.health import bp as health_bp
from billing.functions.maintenance import bp as maintenance_bp
from billing.functions.portal import bp as portal_bp
from billing.functions.usage import bp as usage_bp
from billing.functions.webhooks import bp as webhooks_bp

bootstrap.configure_telemetry()  # Application Insights in Azure (its connection string set); nothing locally
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in (health_bp, portal_bp, webhooks_bp, usage_bp, maintenance_bp):
    app.register_functions(blueprint)
