#!/bin/sh
# azd preprovision hook, part 1: refuse missing or wrong inputs before anything is created.
#
# azd runs hooks with the azd environment's values (.azure/<env>/.env, set with `azd env set`) as
# plain environment variables. A value that main.parameters.json defaults (${NAME=default}) is
# absent until someone sets it, so the same defaults apply here (tests/infra/test_hooks.py checks
# that they match). Lists every problem at once and exits 1; prints notes and exits 0 otherwise.
set -eu

mode="${APIM_MODE:-new}"
sku="${APIM_SKU:-Developer}"
delegation="${DELEGATION_MODE:-full}"
publisher_email="${APIM_PUBLISHER_EMAIL:-}"
apim_name="${APIM_NAME:-}"
apim_group="${APIM_EXISTING_RESOURCE_GROUP:-}"
alert_email="${ALERT_EMAIL:-}"

problems=""
notes=""
problem() {
  problems="${problems}  - $1
"
}
note() {
  notes="${notes}  - $1
"
}

# name@domain.tld, no spaces, one @: a typo check, not a validation.
is_email() {
  case "$1" in
    *" "* | *@*@* | @* | *@) return 1 ;;
    *@*.*) return 0 ;;
    *) return 1 ;;
  esac
}

case "$mode" in
  new | existing) ;;
  *) problem "APIM_MODE is '$mode': use 'new' (create an API Management instance) or 'existing' (azd env set APIM_MODE existing)." ;;
esac

if [ "$mode" = existing ]; then
  if [ -z "$apim_name" ]; then
    problem "APIM_MODE=existing needs the instance's name: azd env set APIM_NAME <name> (and azd env set APIM_EXISTING_RESOURCE_GROUP <its resource group>)."
  elif [ -z "$apim_group" ]; then
    note "APIM_EXISTING_RESOURCE_GROUP is not set: instance '$apim_name' is looked up in the app's resource group rg-${AZURE_ENV_NAME:-<environment>}."
  fi
fi

if [ "$mode" = new ]; then
  if [ -z "$publisher_email" ]; then
    problem "A new API Management instance needs a publisher e-mail, where APIM sends its notifications: azd env set APIM_PUBLISHER_EMAIL ops@example.com (or use an existing instance: azd env set APIM_MODE existing)."
  elif ! is_email "$publisher_email"; then
    problem "APIM_PUBLISHER_EMAIL '$publisher_email' is not an e-mail address."
  fi
fi

case "$sku" in
  Developer | Basic | Standard | Premium | BasicV2 | StandardV2) ;;
  Consumption) problem "APIM_SKU Consumption has no developer portal, so no delegation: use Developer, Basic, Standard, Premium, BasicV2 or StandardV2." ;;
  *) problem "APIM_SKU '$sku' is not one of Developer, Basic, Standard, Premium, BasicV2, StandardV2." ;;
esac

case "$delegation" in
  full | subscriptions) ;;
  *) problem "DELEGATION_MODE is '$delegation': use 'full' (sign-in, sign-up and subscriptions) or 'subscriptions'." ;;
esac

if [ -z "$alert_email" ]; then
  note "ALERT_EMAIL is not set: no alert rules are created and nobody hears of a failed usage push (azd env set ALERT_EMAIL ops@example.com; docs/operations.md)."
elif ! is_email "$alert_email"; then
  problem "ALERT_EMAIL '$alert_email' is not an e-mail address."
fi

if [ -n "$notes" ]; then
  printf 'Note:\n%s' "$notes"
fi
if [ -n "$problems" ]; then
  printf 'azd provision stopped before creating anything:\n%sSet the values with azd env set NAME VALUE, then run azd provision (or azd up) again (docs/deploy.md, section 1).\n' "$problems" >&2
  exit 1
fi
echo "Inputs: APIM_MODE=$mode, APIM_SKU=$sku, DELEGATION_MODE=$delegation${alert_email:+, alerts to $alert_email}."
