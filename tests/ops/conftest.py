"""A moto server for the AWS tests, in this process, taught the few things moto 5.2 does differently.

The tests run the real `ops/*.sh` scripts, and so the real `aws` CLI, against it, with fake
credentials: never real AWS. Where moto departs from AWS, the `_teach_moto_*` functions patch the server:

* `aws cloudformation deploy` works through change sets, and moto's change sets differ from
  CloudFormation's: an update without changes is refused at CreateChangeSet (CloudFormation creates
  a FAILED change set "didn't contain changes", which the CLI reports as nothing to deploy); the
  stack's outputs are not recomputed after ExecuteChangeSet; `UsePreviousValue` reuses the resolved
  value (a list for `List<...>`, the AMI id for an SSM-typed parameter) instead of the value given;
  and a resource counts as changed by a parameter only through `Ref`, not through `Fn::Sub`.
* The instance refresh API (StartInstanceRefresh, DescribeInstanceRefreshes,
  RollbackInstanceRefresh) is not implemented. `Refreshes` serves it from a script that each test
  writes: the statuses DescribeInstanceRefreshes returns, one a call; "Successful" applies the
  desired configuration to the group, as AWS does. The requests are recorded as the CLI sent them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
STACK = "ai-image-detection-test"


class Refreshes:
    """The instance refreshes that moto lacks, played from a script (reset for each test).

    `statuses` is what DescribeInstanceRefreshes answers, one a call (the last one repeats), and
    `after_rollback` replaces them after a RollbackInstanceRefresh; `started` holds the
    StartInstanceRefresh requests as moto parsed the CLI's call, `rollbacks` the groups rolled back.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A refresh that succeeds; nothing recorded."""
        self.statuses = ["Pending", "InProgress", "Successful"]
        self.after_rollback = ["RollbackInProgress", "RollbackSuccessful"]
        self.started: list[dict[str, Any]] = []
        self.rollbacks: list[str] = []


def _teach_moto_change_sets(patch: pytest.MonkeyPatch) -> None:
    """Make moto's change sets behave as CloudFormation's (see the module docstring)."""
    from moto.cloudformation import parsing  # noqa: PLC0415 - moto is only needed by these tests
    from moto.cloudformation.models import CloudFormationBackend, Stack  # noqa: PLC0415
    from moto.cloudformation.responses import CloudFormationResponse  # noqa: PLC0415

    create_change_set = CloudFormationResponse.create_change_set
    execute_change_set = CloudFormationBackend.execute_change_set
    references = parsing.get_references_from_template

    def create_change_set_like_aws(self: Any) -> Any:
        self._validate_different_update = lambda *_: None  # the backend marks the change set FAILED
        return create_change_set(self)

    def execute_change_set_like_aws(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        execute_change_set(self, change_set_name, stack_name)
        for stack in self.stacks.values():
            if stack_name in (stack.name, stack.stack_id):
                stack._parse_template()
                stack.output_map = stack._create_output_map()
                stack.parameters = stack.resource_map.input_parameters = dict(stack.stack_parameters)

    def values_given(self: Any) -> dict[str, str]:  # UsePreviousValue: the value given, or the default
        given = self.resource_map.input_parameters or {}
        declared = self.template_dict.get("Parameters", {})
        return {key: given.get(key, str(spec.get("Default", ""))) for key, spec in declared.items()}

    def substituted(node: Any) -> list[str]:  # the ${Name}s of the Fn::Subs under a node
        if isinstance(node, list):
            return [name for item in node for name in substituted(item)]
        if not isinstance(node, dict):
            return []
        text = node.get("Fn::Sub")
        names = re.findall(r"\$\{([A-Za-z0-9]+)\}", text if isinstance(text, str) else str((text or [""])[0]))
        return names + [name for value in node.values() for name in substituted(value)]

    def references_with_sub(template: Any) -> list[str]:
        return [*references(template), *substituted(template)]

    patch.setattr(CloudFormationResponse, "create_change_set", create_change_set_like_aws)
    patch.setattr(CloudFormationBackend, "execute_change_set", execute_change_set_like_aws)
    patch.setattr(Stack, "stack_parameters", property(values_given))
    patch.setattr(parsing, "get_references_from_template", references_with_sub)


def _teach_moto_instance_refreshes(patch: pytest.MonkeyPatch, refreshes: Refreshes) -> None:
    """Serve the instance refresh API from `refreshes` (see the module docstring)."""
    from moto.autoscaling.responses import AutoScalingResponse  # noqa: PLC0415 - only for these tests
    from moto.core.responses import ActionResult, EmptyResult  # noqa: PLC0415

    def start_instance_refresh(self: Any) -> Any:
        request = {
            key: self._get_param(key)
            for key in ("AutoScalingGroupName", "DesiredConfiguration", "Preferences")
        }
        self.autoscaling_backend.describe_auto_scaling_groups([request["AutoScalingGroupName"]])[
            0
        ]  # it exists
        refreshes.started.append(request)
        return ActionResult({"InstanceRefreshId": f"refresh-{len(refreshes.started)}"})

    def describe_instance_refreshes(self: Any) -> Any:
        (request,) = refreshes.started
        status = refreshes.statuses.pop(0) if len(refreshes.statuses) > 1 else refreshes.statuses[0]
        if status == "Successful":  # AWS then saves the desired configuration on the group
            group = self.autoscaling_backend.autoscaling_groups[request["AutoScalingGroupName"]]
            version = request["DesiredConfiguration"]["LaunchTemplate"]["Version"]
            group.launch_template_version = group.provided_launch_template_version = version
        refresh = {"InstanceRefreshId": self._get_param("InstanceRefreshIds")[0], "Status": status}
        return ActionResult({"InstanceRefreshes": [{**refresh, "StatusReason": f"scripted: {status}"}]})

    def rollback_instance_refresh(self: Any) -> Any:
        refreshes.rollbacks.append(self._get_param("AutoScalingGroupName"))
        refreshes.statuses = list(refreshes.after_rollback)
        return EmptyResult()

    for handler in (start_instance_refresh, describe_instance_refreshes, rollback_instance_refresh):
        patch.setattr(AutoScalingResponse, handler.__name__, handler, raising=False)


_REFRESHES = Refreshes()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port, in this process (so that the patches above apply)."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    with pytest.MonkeyPatch.context() as patch, socket.socket() as probe:
        _teach_moto_change_sets(patch)
        _teach_moto_instance_refreshes(patch, _REFRESHES)
        probe.bind(("127.0.0.1", 0))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=probe.getsockname()[1], verbose=False)
        probe.close()
        server.start()
        try:
            yield "http://{}:{}".format(*server.get_host_and_port())
        finally:
            server.stop()


@pytest.fixture
def aws_env(moto_endpoint: str, tmp_path: Path) -> dict[str, str]:
    """The scripts' environment: fake credentials, moto's endpoint, no user configuration.

    Also empties moto and the refresh script, so that no state passes from one test to the next.
    """
    reset = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")  # noqa: S310 - loopback
    urllib.request.urlopen(reset, timeout=30).close()  # noqa: S310 - loopback moto server
    _REFRESHES.reset()
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "STACK_NAME": STACK,
        "POLL_SECONDS": "0",
    }


@pytest.fixture
def refreshes(aws_env: dict[str, str]) -> Refreshes:
    """The scripted instance refreshes of this test (see `Refreshes`)."""
    return _REFRESHES


@pytest.fixture
def aws(aws_env: dict[str, str]) -> Callable[[str], Any]:
    """A factory of boto3 clients of the moto server, to look at what the scripts made."""
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106
    return lambda service: session.client(
        service, region_name=REGION, endpoint_url=aws_env["AWS_ENDPOINT_URL"]
    )


@pytest.fixture
def ops(aws_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run one of the `ops/` scripts against moto (extra keywords: environment variables)."""

    def run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        command, environment = [str(ROOT / "ops" / script), *args], {**aws_env, **env}
        return subprocess.run(
            command, env=environment, capture_output=True, text=True, check=False, timeout=600
        )

    return run


@pytest.fixture
def parameters_file(aws: Callable[[str], Any], tmp_path: Path) -> Path:
    """A parameters file (deploy/parameters.example.env's format) for a fresh VPC in moto.

    It reuses an OIDC provider made through IAM (moto's CloudFormation skips AWS::IAM::OIDCProvider)
    and a certificate from moto's ACM.
    """
    ec2 = aws("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")[
            "Subnet"
        ]
        for i, zone in enumerate("ab")
    ]
    provider = aws("iam").create_open_id_connect_provider(
        Url="https://token.actions.githubusercontent.com",
        ClientIDList=["sts.amazonaws.com"],
        ThumbprintList=["0" * 40],
    )["OpenIDConnectProviderArn"]
    certificate = aws("acm").request_certificate(DomainName="detector.example.com")["CertificateArn"]
    path = tmp_path / "parameters.env"
    path.write_text(
        "# as an operator writes it (deploy/parameters.example.env)\nGitHubOrg=acme\nGitHubRepo=detector\n"
        f"VpcId={vpc}\nSubnetIds={','.join(s['SubnetId'] for s in subnets)}\nCertificateArn={certificate}\n\n"
        f"CreateGitHubOidcProvider=false\nExistingGitHubOidcProviderArn={provider}\nMinSize=2\nMaxSize=3\n"
    )
    return path


@pytest.fixture
def stack(aws: Callable[[str], Any]) -> Callable[[], dict[str, Any]]:
    """Describe the test stack: its description, with `Outputs` and `Parameters` as mappings."""

    def describe() -> dict[str, Any]:
        (found,) = aws("cloudformation").describe_stacks(StackName=STACK)["Stacks"]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in found.get("Outputs", [])}
        return {
            **found,
            "Outputs": outputs,
            "Parameters": {p["ParameterKey"]: p.get("ParameterValue") for p in found["Parameters"]},
        }

    return describe
