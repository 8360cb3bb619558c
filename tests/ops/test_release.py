"""The release path: `release.yml`, the instances' boot script, and `ops/rollout.sh` on moto.

`ops/rollout.sh` runs with the real `aws` CLI against conftest.py's moto server: the stack update
that makes the new launch template version, the instance refresh request exactly as the CLI
validates and sends it, the wait for its outcome and the version recorded afterwards. moto has no
instance refresh, so its outcome is scripted (`Refreshes`): what AWS does while refreshing (new
instances, the target group's /readyz, the rollback itself) is not run here.
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
RELEASE_WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
REPOSITORY_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ai-image-detection"  # in moto
# moto warns about the resource types its CloudFormation skips (test_stack.py checks those)
MOTO_SKIPS = pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS..(S3..BucketPolicy|AutoScaling..ScalingPolicy) but it.s not supported"
)


# ================================================================ the workflow


def test_the_job_that_assumes_the_release_role_runs_in_the_production_environment() -> None:
    workflow = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    credentials = "aws-actions/configure-aws-credentials@"
    assuming = [name for name, job in workflow["jobs"].items() if credentials in str(job.get("steps"))]
    assert assuming == ["release"]
    # the only subject the role trusts is repo:ORG/REPO:environment:production
    job = workflow["jobs"]["release"]
    assert (job["environment"], job["permissions"]["id-token"]) == ("production", "write")
    others = [job for name, job in workflow["jobs"].items() if name != "release"]
    assert all("id-token" not in (job.get("permissions") or {}) for job in others)
    assert "id-token" not in workflow.get("permissions", {})


def test_the_release_rolls_out_through_ops_rollout() -> None:
    job = yaml.safe_load(RELEASE_WORKFLOW.read_text())["jobs"]["release"]
    (rollout,) = [step for step in job["steps"] if "ops/rollout.sh" in step.get("run", "")]
    assert 'ops/rollout.sh "$IMAGE_TAG"' in rollout["run"]
    assert rollout["env"]["IMAGE_TAG"] == "${{ steps.tag.outputs.image_tag }}"
    assert job["env"]["STACK_NAME"] == "${{ vars.STACK_NAME }}"
    (check,) = [step for step in job["steps"] if "missing" in step.get("run", "")]
    assert "STACK_NAME" in check["run"].split("for name in ")[1].splitlines()[0]  # a required variable
    assert job["timeout-minutes"] >= 60 + 30  # the build, the refresh's 30 minutes and its rollback


def test_make_rollout_runs_ops_rollout_with_the_tag() -> None:
    command = ["make", "-n", "-C", str(ROOT), "rollout", "TAG=v1.4.0", "STACK_NAME=s1"]
    dry_run = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert "STACK_NAME=s1 ops/rollout.sh v1.4.0" in dry_run


# ================================================================ the instances' boot script


_FAKES = {  # each logs its arguments; docker fails `run` when FAIL_RUN is set
    "dnf": "",
    "systemctl": "",
    "install": "",
    "aws": "echo fake-token",
    "docker": 'if [ "$1" = login ]; then cat >/dev/null; fi\n[ "$1" != run ] || [ -z "${FAIL_RUN:-}" ]',
}
_VALUES = {  # what CloudFormation substitutes into the user data
    "ProjectName": "ai-image-detection",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::URLSuffix": "amazonaws.com",
    "Repository": "ai-image-detection",
    "ContainerMemoryLimit": "6g",
    "ContainerLogGroup": "/ai-image-detection/service",
    "ArtifactBucket": "ai-image-detection-123456789012-us-east-1",
}


@pytest.fixture
def boot(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the launch template's user data, as a version with this image tag has it, with fake commands."""
    decoded, matches = decode(str(ROOT / "deploy" / "cloudformation.yaml"))
    assert not matches and decoded is not None, matches
    data = decoded["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    script = data["UserData"]["Fn::Base64"]["Fn::Sub"]
    for name, text in _FAKES.items():
        (tmp_path / name).write_text(f'#!/bin/bash\necho "{name} $*" >> "{tmp_path}/log"\n{text}\n')
        (tmp_path / name).chmod(0o755)

    def run(image_tag: str, **env: str) -> subprocess.CompletedProcess[str]:
        values = {**_VALUES, "ImageTag": image_tag}
        text = re.sub(r"\$\{([A-Za-z:]+)\}", lambda match: values[match.group(1)], script)
        environment = {"PATH": f"{tmp_path}:/usr/bin:/bin", **env}
        return subprocess.run(
            ["/bin/bash", "-c", text], env=environment, capture_output=True, text=True, check=False
        )

    return run


def test_an_instance_starts_the_image_of_its_launch_template_version(
    boot: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    result = boot("v1.4.0")
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "log").read_text().splitlines()
    assert log[:2] == ["dnf install -y docker", "systemctl enable --now docker"]
    # the two sides of a pipe, logged in either order
    login = f"docker login --username AWS --password-stdin {REPOSITORY_URI.split('/', maxsplit=1)[0]}"
    assert sorted(log[2:4]) == ["aws ecr get-login-password --region us-east-1", login]
    (run,) = [line for line in log if line.startswith("docker run ")]
    assert run.startswith(
        "docker run -d --name ai-image-detection --restart unless-stopped --memory 6g -p 80:3000 "
    )
    assert " --log-driver awslogs --log-opt awslogs-region=us-east-1 " in run
    assert " --log-opt awslogs-group=/ai-image-detection/service " in run
    # the prediction log on the host, owned by the image's user; feedback in the stack's bucket
    assert "install -d -o 1034 -g 1034 -m 0750 /var/lib/ai-image-detection/predictions" in log
    assert " -v /var/lib/ai-image-detection/predictions:/home/bentoml/logs/predictions " in run
    assert " -e AIID_FEEDBACK_BUCKET=ai-image-detection-123456789012-us-east-1 " in run
    assert run.endswith(f" {REPOSITORY_URI}:v1.4.0")


def test_an_instance_before_the_first_release_starts_nothing(
    boot: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    result = boot("")
    assert result.returncode == 0, result.stderr
    assert "nothing to start before the first release" in result.stderr
    assert "\ndocker " not in (tmp_path / "log").read_text()  # neither login nor run


def test_a_failed_start_fails_the_boot_script(boot: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    # the instance then never passes /readyz: the refresh does not count it, and rolls back
    assert boot("v1.4.0", FAIL_RUN="1").returncode != 0


# ================================================================ ops/rollout.sh against a real moto server


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def created(ops: Run, parameters_file: Path, stack: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The stack, created by ops/stack.sh from the parameters file; its description."""
    result = ops("stack.sh", str(parameters_file))
    assert result.returncode == 0, result.stderr
    return stack()


def _group(aws: Callable[[str], Any]) -> dict[str, Any]:
    (group,) = aws("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    return dict(group)


def _refreshed_to(refreshes: Any) -> str:
    (request,) = refreshes.started
    return str(request["DesiredConfiguration"]["LaunchTemplate"]["Version"])


@pytest.mark.slow
@MOTO_SKIPS
def test_a_rollout_refreshes_the_group_onto_the_tags_launch_template_version(
    created: dict[str, Any], ops: Run, aws: Callable[[str], Any], stack: Callable[[], Any], refreshes: Any
) -> None:
    template_id = created["Outputs"]["LaunchTemplateId"]
    first = ops("rollout.sh", "v1.4.0")
    assert first.returncode == 0, first.stderr
    assert f"launch template {template_id} version 1 -> 2 (image v1.4.0)" in first.stdout
    # the refresh request, as the aws CLI validated and sent it (moto replaces the group on each stack
    # update, under a new name; CloudFormation updates it in place)
    (request,) = refreshes.started
    assert request.pop("AutoScalingGroupName").startswith(f"{created['StackName']}-AutoScalingGroup-")
    preferences = {"MinHealthyPercentage": 100, "MaxHealthyPercentage": 200, "InstanceWarmup": 60}
    assert request == {
        "DesiredConfiguration": {"LaunchTemplate": {"LaunchTemplateId": template_id, "Version": "2"}},
        "Preferences": {"AutoRollback": True, "SkipMatching": True, **preferences},
    }
    # the stack records the tag and the version the group runs now, and keeps the rest
    parameters = stack()["Parameters"]
    assert (parameters["ImageTag"], parameters["LaunchTemplateVersion"], parameters["GitHubOrg"]) == (
        "v1.4.0",
        "2",
        "acme",
    )
    assert _group(aws)["LaunchTemplate"]["Version"] == "2"
    (version,) = aws("ec2").describe_launch_template_versions(LaunchTemplateId=template_id, Versions=["2"])[
        "LaunchTemplateVersions"
    ]
    assert f"{REPOSITORY_URI}:v1.4.0" in base64.b64decode(version["LaunchTemplateData"]["UserData"]).decode()
    # the next release: from version 2 to 3; the same tag again: nothing to refresh
    refreshes.reset()
    assert ops("rollout.sh", "v1.5.0").returncode == 0
    assert _refreshed_to(refreshes) == _group(aws)["LaunchTemplate"]["Version"] == "3"
    refreshes.reset()
    again = ops("rollout.sh", "v1.5.0")
    assert again.returncode == 0, again.stderr
    assert "version 3 (image v1.5.0) already" in again.stdout
    assert refreshes.started == []


@pytest.mark.slow
@MOTO_SKIPS
def test_a_rolled_back_refresh_fails_the_rollout_and_leaves_the_group_where_it_was(
    created: dict[str, Any], ops: Run, aws: Callable[[str], Any], stack: Callable[[], Any], refreshes: Any
) -> None:
    refreshes.statuses = ["InProgress", "RollbackInProgress", "RollbackSuccessful"]
    failed = ops("rollout.sh", "v2-broken")
    assert failed.returncode == 1
    assert "ended RollbackSuccessful (scripted: RollbackSuccessful)" in failed.stderr
    assert "is back on version 1" in failed.stderr
    # the group and the stack's pin stay on version 1; the failed tag's version 2 is unused
    after = stack()
    assert (
        after["Parameters"]["LaunchTemplateVersion"],
        after["Outputs"]["LatestLaunchTemplateVersion"],
    ) == ("1", "2")
    assert _group(aws)["LaunchTemplate"]["Version"] == "1"
    # a fixed release goes from version 1 again
    refreshes.reset()
    assert ops("rollout.sh", "v2-fixed").returncode == 0
    assert _refreshed_to(refreshes) == "3"


@pytest.mark.slow
@MOTO_SKIPS
def test_a_refresh_that_fails_or_overruns_fails_the_rollout(
    created: dict[str, Any], ops: Run, aws: Callable[[str], Any], refreshes: Any
) -> None:
    for number, status in enumerate(["Failed", "Cancelled", "RollbackFailed"]):
        refreshes.reset()
        refreshes.statuses = ["InProgress", status]
        result = ops("rollout.sh", f"v3-{number}")
        assert (result.returncode, refreshes.rollbacks) == (1, [])
        assert f"ended {status}" in result.stderr and "may run versions 1 and" in result.stderr
    # not done by the deadline: the rollout asks for the rollback and reports its outcome
    refreshes.reset()
    refreshes.statuses = ["InProgress"]
    overrun = ops("rollout.sh", "v3-slow", REFRESH_TIMEOUT="0")
    assert overrun.returncode == 1
    assert "not done after 0 s (InProgress): rolling back" in overrun.stderr
    assert "ended RollbackSuccessful" in overrun.stderr
    assert refreshes.rollbacks == [_group(aws)["AutoScalingGroupName"]]
    assert _group(aws)["LaunchTemplate"]["Version"] == "1"


@pytest.mark.slow
@MOTO_SKIPS
def test_a_rollout_without_the_stack_fails_clearly(ops: Run, refreshes: Any) -> None:
    missing = ops("rollout.sh", "v1", STACK_NAME="nothing-here")
    assert missing.returncode != 0
    assert "nothing-here does not exist" in missing.stderr
    assert refreshes.started == []
    assert ops("rollout.sh").returncode != 0  # no tag: usage
