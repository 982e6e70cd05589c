#!/bin/sh
# azd preprovision hook, part 2: a key created once and kept.
#
#   sh kept-key.sh [NAME SECRET LABEL [new-if-absent]]
#
# Used for two keys (preprovision.sh): APIM's delegation validation key (the default:
# APIM_DELEGATION_VALIDATION_KEY, secret apim-delegation-validation-key), with which APIM signs its
# delegation links, and the app's own session keys (PORTAL_SESSION_KEYS, secret portal-session-keys),
# with which it signs sessions, forms and device cookies. A new delegation key voids every open
# delegation link; new session keys sign every consumer out. main.bicep takes each from the azd
# environment value NAME (main.parameters.json); this script makes sure that value is there:
#   1. already in the azd environment: kept as it is (to rotate: azd env set a new one);
#   2. else, if the environment was provisioned before, the key APIM and the app use now is read from
#      its Key Vault and put into the azd environment. The vault is AZURE_KEY_VAULT_NAME (an output azd
#      kept) or, on a machine or CI runner without azd's outputs, the vault in the environment's
#      resource group rg-<AZURE_ENV_NAME> (main.bicep's name for it);
#   3. else (the first provision: no such resource group, or no vault in it): a new random key,
#      512 bits, base64.
# When it cannot tell (no Azure CLI, not signed in, vault unreadable) it stops: never a silent new key.
# With new-if-absent (the session keys), a vault that lists its secrets but has none of that name
# (an environment provisioned before the key existed) gets a new key, once, and says so.
set -eu

# The azd environment value, the secret that keyvault.bicep writes (main.bicep, secretNames) and what
# the messages call it.
name=${1:-APIM_DELEGATION_VALIDATION_KEY}
secret=${2:-apim-delegation-validation-key}
label=${3:-Delegation validation key}
absent=${4:-}
case "$name" in
  *[!A-Z0-9_]* | "") echo "kept-key.sh: '$name' is not an environment variable name" >&2; exit 2 ;;
esac

stop() {
  cat >&2 <<EOF
azd provision stopped: $name is not in the azd environment, and $1.
A new key would sign out every portal user or void open links, so none is made here.
  - sign in with the Azure CLI (az login) as someone who may read the environment's resource group
    and its Key Vault secrets (Key Vault Secrets User or Officer), then run azd provision again; or
  - to replace the key on purpose: azd env set $name "\$(openssl rand -base64 64 | tr -d '\\n')"
EOF
  exit 1
}

keep() {
  # azd sets AZURE_ENV_NAME for hooks: write to the environment being provisioned (azd up -e <env>),
  # not to the default one.
  azd env set "$name" "$1" --environment "$AZURE_ENV_NAME" >/dev/null
}

generate() {
  if command -v openssl >/dev/null 2>&1; then
    openssl rand -base64 64 | tr -d '\n'
  else
    head -c 64 /dev/urandom | base64 | tr -d '\n'
  fi
}

eval "current=\${$name:-}"
if [ -n "$current" ]; then
  echo "$label: kept (azd environment)."
  exit 0
fi
if [ -z "${AZURE_ENV_NAME:-}" ]; then
  stop "AZURE_ENV_NAME is not set (run this as an azd hook: azd hooks run preprovision)"
fi
if ! command -v az >/dev/null 2>&1; then
  stop "without the Azure CLI (az) it cannot tell whether this environment already has a key"
fi

vault="${AZURE_KEY_VAULT_NAME:-}"
if [ -z "$vault" ]; then
  group="rg-$AZURE_ENV_NAME"
  exists=$(az group exists --name "$group" 2>/dev/null) || stop "it could not ask Azure whether resource group $group exists"
  if [ "$exists" = true ]; then
    vault=$(az keyvault list --resource-group "$group" --query "[0].name" --output tsv 2>/dev/null) \
      || stop "it could not list the Key Vaults of resource group $group"
  fi
fi

if [ -n "$vault" ]; then
  key=$(az keyvault secret show --vault-name "$vault" --name "$secret" --query value --output tsv 2>/dev/null) || key=""
  if [ -z "$key" ] && [ "$absent" = new-if-absent ]; then
    count=$(az keyvault secret list --vault-name "$vault" --query "length([?name=='$secret'])" --output tsv \
      2>/dev/null) || count=""
    if [ "$count" = 0 ]; then
      keep "$(generate)"
      echo "$label: generated (Key Vault $vault had none: provisioned before this key existed); kept from now on."
      exit 0
    fi
  fi
  if [ -z "$key" ]; then
    stop "the key in use could not be read from Key Vault $vault (secret '$secret')"
  fi
  keep "$key"
  echo "$label: kept (read from Key Vault $vault into the azd environment)."
  exit 0
fi

keep "$(generate)"
echo "$label: generated for this new environment; kept in the azd environment from now on."
