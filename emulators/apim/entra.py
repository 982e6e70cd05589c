"""Token issuers the standard azure-identity credentials use, served by the emulator.

- App Service / Functions managed identity: `GET {IDENTITY_ENDPOINT}?resource=...` with the
  `X-IDENTITY-HEADER` secret. This is what `DefaultAzureCredential` uses in a deployed Function App,
  so the app's credential code is identical locally and in Azure.
- A minimal Entra ID (v2.0) authority: OpenID discovery and a client-credentials token endpoint, for
  `ClientSecretCredential(..., authority=<management url>, disable_instance_discovery=True)`.
  MSAL's instance discovery for unknown hosts goes to login.microsoftonline.com, so it must be disabled;
  that is a constructor argument, not an environment variable, hence managed identity is the default.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from urllib.parse import parse_qs

from emulators.apim.httpbase import Request, Response

TOKEN_LIFETIME_SECONDS = 3600
_TENANT_PATH = re.compile(r"^/(?P<tenant>[^/]+)/(?P<rest>v2\.0/\.well-known/openid-configuration|oauth2/v2\.0/token)$")


class TokenIssuer:
    def __init__(self, tenant_id: str, client_id: str) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.client_secret = secrets.token_urlsafe(24)
        self.identity_header = secrets.token_urlsafe(24)
        self._tokens: dict[str, tuple[float, str]] = {}  # token -> (expires on, audience)
        self._lock = threading.Lock()

    def issue(self, audience: str = "") -> tuple[str, int]:
        """A token for `audience` (the resource, or the scope without "/.default") that the issuer remembers."""
        token = "emu." + secrets.token_urlsafe(32)
        expires_on = int(time.time()) + TOKEN_LIFETIME_SECONDS  # real time: azure-identity caches by it
        with self._lock:
            self._tokens[token] = (expires_on, audience)
        return token, expires_on

    def valid(self, authorization: str | None) -> bool:
        return self.audience(authorization) is not None

    def audience(self, authorization: str | None) -> str | None:
        """The audience of a bearer token this issuer gave that has not expired; None for any other header."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        with self._lock:
            found = self._tokens.get(authorization[7:].strip())
        return found[1] if found is not None and found[0] > time.time() else None

    def handles(self, path: str) -> bool:
        return path in ("/msi/token", "/common/discovery/instance") or bool(_TENANT_PATH.match(path))

    def handle(self, req: Request) -> Response:
        if req.path == "/msi/token":
            return self._managed_identity(req)
        if req.path == "/common/discovery/instance":
            tenant_endpoint = f"{req.base_url}/{self.tenant_id}/v2.0/.well-known/openid-configuration"
            return Response.json({"tenant_discovery_endpoint": tenant_endpoint, "api-version": "1.1", "metadata": []})
        match = _TENANT_PATH.match(req.path)
        assert match is not None
        tenant = match.group("tenant")
        if tenant not in (self.tenant_id, "organizations", "common"):
            return _oauth_error(400, "invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.")
        if match.group("rest").startswith("v2.0"):
            base = f"{req.base_url}/{tenant}"
            return Response.json(
                {
                    "issuer": f"{base}/v2.0",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                }
            )
        return self._client_credentials(req)

    def _managed_identity(self, req: Request) -> Response:
        header = req.header("x-identity-header") or ""
        if not hmac.compare_digest(header, self.identity_header):
            return Response.json({"statusCode": 401, "message": "X-IDENTITY-HEADER is missing or wrong"}, 401)
        resource = req.query.get("resource")
        if not resource:
            return Response.json({"statusCode": 400, "message": "the query parameter 'resource' is required"}, 400)
        token, expires_on = self.issue(resource)
        return Response.json(
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": self.client_id,
            }
        )

    def _client_credentials(self, req: Request) -> Response:
        if req.method != "POST":
            return _oauth_error(405, "invalid_request", "use POST")
        form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "only grant_type=client_credentials is served")
        if form.get("client_id") != self.client_id:
            return _oauth_error(400, "unauthorized_client", "AADSTS700016: application not found in the tenant")
        secret = form.get("client_secret")
        if secret is not None:
            if not hmac.compare_digest(secret, self.client_secret):
                return _oauth_error(401, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        elif not form.get("client_assertion"):
            return _oauth_error(400, "invalid_request", "client_secret or client_assertion is required")
        scope = (form.get("scope") or "").split(" ")[0]
        token, _ = self.issue(scope.removesuffix("/.default"))
        return Response.json(
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME_SECONDS,
                "ext_expires_in": TOKEN_LIFETIME_SECONDS,
                "access_token": token,
            }
        )


def _oauth_error(status: int, code: str, description: str) -> Response:
    return Response.json({"error": code, "error_description": description}, status)
