#!/bin/sh
# azd preprovision hook (azure.yaml): runs before `azd provision` / `azd up` deploys anything.
#   check-inputs.sh   refuses missing or wrong inputs, with what to set;
#   kept-key.sh       makes sure the APIM delegation validation key and the portal's session keys
#                     exist, made once and kept.
set -eu

here=$(dirname "$0")
sh "$here/check-inputs.sh"
sh "$here/kept-key.sh"
sh "$here/kept-key.sh" PORTAL_SESSION_KEYS portal-session-keys "Portal session keys" new-if-absent
