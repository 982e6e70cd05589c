#!/bin/sh
# azd postprovision hook: report which app secrets are missing from Key Vault (never their
# values) and the next steps. azd exports the Bicep outputs as environment variables.
set -eu

vault="${AZURE_KEY_VAULT_NAME:?azd did not export AZURE_KEY_VAULT_NAME; run azd provision}"
missing=0
# secret name, then the docs/deploy.md section that says how to set it
for entry in "${STRIPE_API_KEY_SECRET_NAME:-stripe-api-key}:Stripe secrets" \
             "${STRIPE_WEBHOOK_SECRET_SECRET_NAME:-stripe-webhook-secret}:Stripe secrets" \
             "${SMTP_PASSWORD_SECRET_NAME:-smtp-password}:E-mail (Azure Communication Services)"; do
  secret="${entry%%:*}"
  section="${entry#*:}"
  if az keyvault secret show --vault-name "$vault" --name "$secret" --query id --output none 2>/dev/null; then
    echo "Key Vault $vault: secret '$secret' is set."
  else
    echo "Key Vault $vault: secret '$secret' is NOT set yet (see docs/deploy.md, '$section')."
    missing=1
  fi
done
echo "Stripe webhook endpoint URL: ${STRIPE_WEBHOOK_URL:-https://<app>/api/webhooks/stripe}"
if [ -n "${SMTP_USERNAME:-}" ]; then
  echo "E-mail: SMTP login '${SMTP_USERNAME}', sender '${MAIL_SENDER:-?}'."
else
  echo "E-mail: no SMTP login yet: set SMTP_ENTRA_APP_CLIENT_ID and SMTP_SERVICE_PRINCIPAL_ID and run azd provision (docs/deploy.md, 'E-mail (Azure Communication Services)')."
  missing=1
fi
if [ "$missing" -ne 0 ]; then
  echo "Payment routes need both Stripe secrets, and the portal's mails the SMTP login and password; the app reads new secrets once re-read (docs/deploy.md)."
fi
