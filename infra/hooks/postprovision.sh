#!/bin/sh
# azd postprovision hook: report which app secrets are missing from Key Vault (never their
# values) and the next steps. azd exports the Bicep outputs as environment variables.
set -eu

vault="${AZURE_KEY_VAULT_NAME:?azd did not export AZURE_KEY_VAULT_NAME; run azd provision}"
missing=0
for secret in "${STRIPE_API_KEY_SECRET_NAME:-stripe-api-key}" "${STRIPE_WEBHOOK_SECRET_SECRET_NAME:-stripe-webhook-secret}"; do
  if az keyvault secret show --vault-name "$vault" --name "$secret" --query id --output none 2>/dev/null; then
    echo "Key Vault $vault: secret '$secret' is set."
  else
    echo "Key Vault $vault: secret '$secret' is NOT set yet (see docs/deploy.md, 'Stripe secrets')."
    missing=1
  fi
done
echo "Stripe webhook endpoint URL: ${STRIPE_WEBHOOK_URL:-https://<app>/api/webhooks/stripe}"
if [ "$missing" -ne 0 ]; then
  echo "Payment routes cannot work until both secrets are set and the app has re-read them (docs/deploy.md)."
fi
