#!/bin/sh
# azd preprovision hook, part 2: the APIM delegation validation key, created once and kept.
#
# APIM signs its delegation links with this key and the app signs its sessions and forms with it,
# so a new key voids them all. main.bicep takes it from the azd environment value
# APIM_DELEGATION_VALIDATION_KEY (main.parameters.json); this script makes sure that value is there:
#   1. already in the azd environment: kept as it is (to rotate: azd env set a new one);
#   2. else, if the environment was provisioned before, the key APIM and the app use now is read from
#      its Key Vault and put into the azd environment. The vault is AZURE_KEY_VAULT_NAME (an output azd
#      kept) or, on a machine or CI runner without azd's outputs, the vault in the environment's
#      resource group rg-<AZURE_ENV_NAME> (main.bicep's name for it);
#   3. else (the first provision: no such resource group, or no vault in it): a new random key,
#      512 bits, base64.
# When it cannot tell (no Azure CLI, not signed in, vault unreadable) it stops: never a silent new key.
set -eu

name=APIM_DELEGATION_VALIDATION_KEY
# The secret that keyvault.bicep writes (main.bicep, secretNames.delegationKey).
secret=apim-delegation-validation-key

stop() {
  cat >&2 <<EOF
azd provision stopped: $name is not in the azd environment, and $1.
A new key would sign out every portal user, so none is made here.
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

if [ -n "${APIM_DELEGATION_VALIDATION_KEY:-}" ]; then
  echo "Delegation validation key: kept (azd environment)."
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
  if [ -z "$key" ]; then
    stop "the key in use could not be read from Key Vault $vault (secret '$secret')"
  fi
  keep "$key"
  echo "Delegation validation key: kept (read from Key Vault $vault into the azd environment)."
  exit 0
fi

keep "$(generate)"
echo "Delegation validation key: generated for this new environment; kept in the azd environment from now on."
