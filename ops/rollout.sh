#!/usr/bin/env bash
# Roll an image tag out to the service's Auto Scaling group, with automatic rollback.
#
#   ops/rollout.sh TAG      (release.yml, and `make rollout TAG=...` by hand)
#
# 1. ops/stack.sh ImageTag=TAG: a new launch template version; the group stays pinned
#    (LaunchTemplateVersion) on the version its instances run, so no instance is touched yet;
# 2. an instance refresh onto the new version: new instances first (MinHealthyPercentage 100), each
#    judged by the target group's /readyz check; AutoRollback puts the pinned version back when the
#    refresh fails, which needs the group to be on the previous version when it starts (step 1);
# 3. once the refresh has succeeded, ops/stack.sh LaunchTemplateVersion=NEW records it in the stack.
# Exits 1 when the refresh ends Failed, Cancelled, RollbackSuccessful or RollbackFailed; when it has
# not ended after REFRESH_TIMEOUT seconds, asks for its rollback first.
# Settings: STACK_NAME (ai-image-detection), REFRESH_TIMEOUT (1800), POLL_SECONDS (30).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PATH="$here/../.venv/bin:$PATH"
tag=${1:?usage: ops/rollout.sh IMAGE_TAG}
stack=${STACK_NAME:-ai-image-detection}

outputs() {  # the values of the stack's outputs named, tab-separated
    local query
    query=$(printf "Outputs[?OutputKey=='%s'].OutputValue|[0]," "$@")
    aws cloudformation describe-stacks --stack-name "$stack" --output text --query "Stacks[0].[${query%,}]"
}
group=$(outputs AutoScalingGroupName)
running=$(aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names "$group" \
    --query 'AutoScalingGroups[0].LaunchTemplate.Version' --output text)

"$here/stack.sh" "ImageTag=$tag" "LaunchTemplateVersion=$running"
read -r group template target <<<"$(outputs AutoScalingGroupName LaunchTemplateId LatestLaunchTemplateVersion)"
if [ "$target" = "$running" ]; then
    echo "$group runs launch template $template version $target (image $tag) already"
    exit 0
fi

echo "instance refresh of $group: launch template $template version $running -> $target (image $tag)"
refresh=$(aws autoscaling start-instance-refresh --auto-scaling-group-name "$group" \
    --desired-configuration "LaunchTemplate={LaunchTemplateId=$template,Version=$target}" \
    --preferences '{"AutoRollback": true, "MinHealthyPercentage": 100, "MaxHealthyPercentage": 200,
                    "InstanceWarmup": 60, "SkipMatching": true}' \
    --query InstanceRefreshId --output text)
deadline=$((SECONDS + ${REFRESH_TIMEOUT:-1800}))
while true; do
    state=$(aws autoscaling describe-instance-refreshes --auto-scaling-group-name "$group" \
        --instance-refresh-ids "$refresh" --query 'InstanceRefreshes[0].[Status,StatusReason]' --output text)
    read -r status reason <<<"$state"
    case $status in
        Successful) break ;;
        RollbackSuccessful)
            echo "instance refresh $refresh ended $status ($reason): $group is back on version $running" >&2
            exit 1 ;;
        Failed | Cancelled | RollbackFailed)
            echo "instance refresh $refresh ended $status ($reason): $group may run versions $running and" \
                "$target side by side; see aws autoscaling describe-instance-refreshes" >&2
            exit 1 ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ] && [ -z "${rolling_back:-}" ]; then
        echo "instance refresh $refresh not done after ${REFRESH_TIMEOUT:-1800} s ($status): rolling back" >&2
        aws autoscaling rollback-instance-refresh --auto-scaling-group-name "$group" >/dev/null
        rolling_back=1
    fi
    echo "instance refresh $refresh: $status ($reason)"
    sleep "${POLL_SECONDS:-30}"
done

"$here/stack.sh" "LaunchTemplateVersion=$target"
echo "$group runs launch template $template version $target (image $tag)"
