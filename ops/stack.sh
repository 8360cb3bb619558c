#!/usr/bin/env bash
# Create or update the AWS stack: `aws cloudformation deploy` of deploy/cloudformation.yaml.
#
#   ops/stack.sh deploy/parameters.env          (make stack)
#   ops/stack.sh ImageTag=v1.4.0 ...            (ops/rollout.sh)
#
# Arguments: template parameters as KEY=VALUE, or files of such lines (# comments and blank lines
# skipped). Parameters not given keep their current values (a new stack: the template's defaults),
# and an update that changes nothing succeeds. A name the template does not declare is an error
# (`aws cloudformation deploy` would drop it silently). Settings: STACK_NAME (ai-image-detection),
# and the AWS CLI's own variables (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL, ...).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PATH="$root/.venv/bin:$PATH"
template=$root/deploy/cloudformation.yaml
stack=${STACK_NAME:-ai-image-detection}

overrides=()
for argument in "$@"; do
    if [[ $argument == *=* ]]; then
        overrides+=("$argument")
    elif [ -f "$argument" ]; then
        mapfile -t -O "${#overrides[@]}" overrides < <(grep -Ev '^[[:space:]]*(#|$)' "$argument")
    else
        echo "no parameters file $argument: copy deploy/parameters.example.env (docs/deploy.md)" >&2
        exit 2
    fi
done
declared=$(awk '/^[^ #]/ { section = $1 } section == "Parameters:" && /^  [A-Za-z0-9]+:/ { print $1 }' \
    "$template" | tr -d : | tr '\n' ' ')
for pair in "${overrides[@]}"; do
    if [[ " $declared" != *" ${pair%%=*} "* ]]; then
        echo "unknown template parameter '${pair%%=*}' (in '$pair'); the template declares: $declared" >&2
        exit 2
    fi
done

aws cloudformation deploy --template-file "$template" --stack-name "$stack" --capabilities CAPABILITY_IAM \
    --no-fail-on-empty-changeset ${overrides[0]+--parameter-overrides "${overrides[@]}"}
aws cloudformation describe-stacks --stack-name "$stack" --query 'Stacks[0].Outputs' --output table
