#!/bin/sh
# azd preprovision hook (azure.yaml): runs before `azd provision` / `azd up` deploys anything.
#   check-inputs.sh   refuses missing or wrong inputs, with what to set;
#   delegation-key.sh makes sure the APIM delegation validation key exists, once, and is kept.
set -eu

here=$(dirname "$0")
sh "$here/check-inputs.sh"
sh "$here/delegation-key.sh"
