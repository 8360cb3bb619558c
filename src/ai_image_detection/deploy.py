r"""Create or update the AWS stack, and roll a released image out to its instances.

The stack is ``deploy/cloudformation.yaml``, the single source of truth for the deployment (S3
bucket, ECR repository, GitHub OIDC release role, EC2 service). A rollout asks every running
instance tagged ``Project=<project>``, one at a time through SSM Run Command, to run
``/usr/local/bin/ai-image-detection-rollout TAG`` (installed by the instances' user data), which
pulls the image, swaps the container, waits for ``/readyz`` and rolls back on failure. When every
instance is ready on the new tag, the tag is stored in the SSM parameter ``/<project>/image-tag``
so that instances launched later start it too.

Command line::

    python -m ai_image_detection.deploy stack --stack-name ai-image-detection \
        --param GitHubOrg=acme --param GitHubRepo=detector \
        --param VpcId=vpc-0123 --param SubnetIds=subnet-0aaa,subnet-0bbb
    python -m ai_image_detection.deploy rollout --tag 1.4.0

Both use boto3's usual credential chain. ``--endpoint-url`` (default: the ``AWS_ENDPOINT_URL``
environment variable) points them at an emulator such as a local moto server; ``--region``
defaults to ``AWS_REGION``, then ``AWS_DEFAULT_REGION``, then ``us-east-1``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import yaml
from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

logger = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"
DEFAULT_STACK_NAME = "ai-image-detection"
DEFAULT_PROJECT = "ai-image-detection"
DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "cloudformation.yaml"
"""The template in a source checkout (``<repo>/deploy/cloudformation.yaml``)."""

CAPABILITIES = ("CAPABILITY_IAM",)
"""The template creates IAM roles with generated names."""
MAX_TEMPLATE_BODY_BYTES = 51_200
"""CloudFormation's limit for a template passed inline (``TemplateBody``)."""
NO_UPDATES_MESSAGE = "No updates are to be performed"

ROLLOUT_COMMAND = "/usr/local/bin/ai-image-detection-rollout"
"""Installed on every instance by the launch template's user data."""
RUN_SHELL_SCRIPT = "AWS-RunShellScript"
PROJECT_TAG = "Project"
TAG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
"""Docker's grammar for an image tag."""
NO_RELEASE_TAG = "none"
"""Value of the released-tag parameter before the first release (see the template)."""
TERMINAL_COMMAND_STATUSES = frozenset({"Success", "Failed", "Cancelled", "TimedOut"})

_WAITER_DELAY_S = 15
_WAITER_MAX_ATTEMPTS = 240  # one hour
_ROLLOUT_TIMEOUT_S = 1200
_POLL_INTERVAL_S = 5.0
_OUTPUT_TAIL_CHARS = 4000
_FAILED_EVENTS_SHOWN = 10


class DeployError(RuntimeError):
    """A deployment step failed; the message says what and with which value."""


@dataclass(frozen=True)
class Invocation:
    """The outcome of the rollout command on one instance.

    Attributes:
        instance_id: The instance.
        status: SSM's status of the invocation (``Success``, ``Failed``, ``TimedOut``, ...).
        stdout: End of the command's standard output.
        stderr: End of the command's standard error.
    """

    instance_id: str
    status: str
    stdout: str = ""
    stderr: str = ""

    @property
    def succeeded(self) -> bool:
        """Whether the command succeeded on this instance."""
        return self.status == "Success"


# ------------------------------------------------------------------------------ settings and clients


def resolve_region(region: str | None, environ: Mapping[str, str]) -> str:
    """Choose the AWS region.

    Args:
        region: The ``--region`` option, if given.
        environ: The environment (``AWS_REGION`` and ``AWS_DEFAULT_REGION`` are read).

    Returns:
        ``region``, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else ``us-east-1``.
    """
    return region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def resolve_endpoint_url(endpoint_url: str | None, environ: Mapping[str, str]) -> str | None:
    """Choose the endpoint that replaces AWS's own (an emulator such as moto), if any.

    Args:
        endpoint_url: The ``--endpoint-url`` option, if given.
        environ: The environment (``AWS_ENDPOINT_URL`` is read).

    Returns:
        ``endpoint_url``, else ``AWS_ENDPOINT_URL``, else ``None`` for the real AWS endpoints.
    """
    return endpoint_url or environ.get("AWS_ENDPOINT_URL") or None


def make_client(service: str, region: str, endpoint_url: str | None = None) -> BaseClient:
    """Create a boto3 client.

    Args:
        service: The service name (``cloudformation``, ``ec2``, ``ssm``).
        region: The AWS region.
        endpoint_url: An endpoint replacing AWS's own, or ``None``.

    Returns:
        The client.
    """
    client: BaseClient = boto3.session.Session().client(
        service,  # type: ignore[call-overload]
        region_name=region,
        endpoint_url=endpoint_url,
    )
    return client


# ------------------------------------------------------------------------------ stack


def parse_parameters(pairs: Sequence[str]) -> dict[str, str]:
    """Turn repeated ``--param Key=Value`` options into a mapping.

    Args:
        pairs: The ``Key=Value`` strings; the value may be empty or contain ``=``.

    Returns:
        The parameters by key.

    Raises:
        DeployError: If a pair has no ``=`` or no key, or a key is given twice.
    """
    parameters: dict[str, str] = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        key = key.strip()
        if not separator or not key:
            raise DeployError(f"--param expects Key=Value, got {pair!r}")
        if key in parameters:
            raise DeployError(f"--param {key} given twice ({parameters[key]!r} and {value!r})")
        parameters[key] = value
    return parameters


class _TemplateLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation's short-form tags (``!Ref``, ``!Sub``...) as plain nodes."""


def _construct_tagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_TemplateLoader.add_multi_constructor("!", _construct_tagged)


def read_template(path: Path) -> str:
    """Read a template to pass inline to CloudFormation.

    Args:
        path: The template file.

    Returns:
        The template text.

    Raises:
        DeployError: If the file is missing or larger than CloudFormation accepts inline.
    """
    if not path.is_file():
        raise DeployError(f"template not found: {path}")
    body = path.read_text(encoding="utf-8")
    size = len(body.encode("utf-8"))
    if size > MAX_TEMPLATE_BODY_BYTES:
        raise DeployError(
            f"template {path} is {size} bytes; CloudFormation accepts at most "
            f"{MAX_TEMPLATE_BODY_BYTES} bytes inline"
        )
    return body


def template_parameters(body: str) -> dict[str, dict[str, Any]]:
    """The ``Parameters`` section of a YAML or JSON template.

    Args:
        body: The template text.

    Returns:
        Each declared parameter's definition, by name.

    Raises:
        DeployError: If the text is not a template (not a mapping, or invalid YAML).
    """
    try:
        template = yaml.load(body, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise DeployError(f"template is not valid YAML: {error}") from error
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise DeployError("template has no Resources section")
    parameters = template.get("Parameters") or {}
    return {str(name): dict(definition or {}) for name, definition in parameters.items()}


def stack_parameters(
    requested: Mapping[str, str],
    declared: Mapping[str, Mapping[str, Any]],
    previous: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Build CloudFormation's ``Parameters`` argument.

    On an update, a declared parameter that is not given again keeps its previous value
    (``UsePreviousValue``) instead of falling back to its default, so that an update never undoes an
    earlier choice such as ``EnableAutoScaling=true``. A previous value equal to the template's
    default is left out (the default gives the same); parameters the template no longer declares are
    dropped.

    Args:
        requested: The parameters given on the command line.
        declared: The template's parameter definitions.
        previous: The existing stack's parameter values by key; ``None`` on creation.

    Returns:
        The parameter list for ``create_stack`` or ``update_stack``.

    Raises:
        DeployError: If a requested parameter is not declared by the template.
    """
    unknown = sorted(set(requested) - set(declared))
    if unknown:
        raise DeployError(
            f"unknown template parameter(s) {unknown}; the template declares {sorted(declared)}"
        )
    parameters: list[dict[str, Any]] = [
        {"ParameterKey": key, "ParameterValue": value} for key, value in requested.items()
    ]
    for key, value in sorted((previous or {}).items()):
        if key in requested or key not in declared:
            continue
        default = declared[key].get("Default")
        if default is not None and str(default) == value:
            continue
        parameters.append({"ParameterKey": key, "UsePreviousValue": True})
    return parameters


def describe_stack(cfn: BaseClient, stack_name: str) -> dict[str, Any] | None:
    """Describe a stack.

    Args:
        cfn: A CloudFormation client.
        stack_name: The stack's name.

    Returns:
        The stack's description, or ``None`` when no such stack exists.

    Raises:
        ClientError: For errors other than a missing stack.
    """
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            return None
        raise
    return dict(stacks[0]) if stacks else None


def stack_outputs(stack: Mapping[str, Any]) -> dict[str, str]:
    """The outputs of a described stack.

    Args:
        stack: An element of ``describe_stacks()["Stacks"]``.

    Returns:
        Output values by key.
    """
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def failure_reasons(cfn: BaseClient, stack_name: str) -> list[str]:
    """The most recent resource failures of a stack, to explain a failed create or update.

    Args:
        cfn: A CloudFormation client.
        stack_name: The stack's name or id.

    Returns:
        ``"LogicalId (Type) STATUS: reason"`` lines, newest first; empty if none can be read.
    """
    try:
        events = cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
    except (ClientError, BotoCoreError):
        return []
    return [
        f"{event.get('LogicalResourceId')} ({event.get('ResourceType')}) {event['ResourceStatus']}: "
        f"{event.get('ResourceStatusReason', '')}"
        for event in events
        if str(event.get("ResourceStatus", "")).endswith("_FAILED")
    ][:_FAILED_EVENTS_SHOWN]


def _wait(cfn: BaseClient, waiter_name: str, stack_name: str, delay_s: int, max_attempts: int) -> None:
    try:
        cfn.get_waiter(waiter_name).wait(
            StackName=stack_name, WaiterConfig={"Delay": delay_s, "MaxAttempts": max_attempts}
        )
    except WaiterError as error:
        reasons = "\n  ".join(failure_reasons(cfn, stack_name)) or "(no failed resource events)"
        raise DeployError(f"stack {stack_name}: {error}\n  {reasons}") from error


def deploy_stack(
    cfn: BaseClient,
    stack_name: str,
    template_body: str,
    parameters: Mapping[str, str],
    *,
    waiter_delay_s: int = _WAITER_DELAY_S,
    waiter_max_attempts: int = _WAITER_MAX_ATTEMPTS,
) -> dict[str, str]:
    """Create the stack, or update it when it exists, and wait until CloudFormation is done.

    An update that changes nothing ("No updates are to be performed") is a success.

    Args:
        cfn: A CloudFormation client.
        stack_name: The stack's name.
        template_body: The template text.
        parameters: Parameter values; on an update, parameters not given keep their previous value.
        waiter_delay_s: Seconds between status polls.
        waiter_max_attempts: Polls before giving up.

    Returns:
        The stack's outputs by key.

    Raises:
        DeployError: If the parameters do not fit the template, the stack is in a state that
            cannot be updated, or the create or update fails (with the failed resources' reasons).
    """
    declared = template_parameters(template_body)
    existing = describe_stack(cfn, stack_name)
    if existing is None:
        logger.info("Creating stack %s", stack_name)
        cfn.create_stack(
            StackName=stack_name,
            TemplateBody=template_body,
            Parameters=stack_parameters(parameters, declared),
            Capabilities=list(CAPABILITIES),
        )
        _wait(cfn, "stack_create_complete", stack_name, waiter_delay_s, waiter_max_attempts)
        logger.info("Stack %s created", stack_name)
    else:
        status = existing["StackStatus"]
        if status == "ROLLBACK_COMPLETE":
            raise DeployError(
                f"stack {stack_name} is {status} after a failed creation and cannot be updated; delete it "
                f"(aws cloudformation delete-stack --stack-name {stack_name}) and run again"
            )
        if status.endswith("_IN_PROGRESS"):
            raise DeployError(f"stack {stack_name} is {status}; wait until it finishes and run again")
        previous = {p["ParameterKey"]: p.get("ParameterValue", "") for p in existing.get("Parameters", [])}
        logger.info("Updating stack %s (now %s)", stack_name, status)
        try:
            cfn.update_stack(
                StackName=stack_name,
                TemplateBody=template_body,
                Parameters=stack_parameters(parameters, declared, previous),
                Capabilities=list(CAPABILITIES),
            )
        except ClientError as error:
            if NO_UPDATES_MESSAGE not in str(error):
                raise DeployError(f"stack {stack_name}: update rejected: {error}") from error
            logger.info("Stack %s is already up to date", stack_name)
        else:
            _wait(cfn, "stack_update_complete", stack_name, waiter_delay_s, waiter_max_attempts)
            logger.info("Stack %s updated", stack_name)
    stack = describe_stack(cfn, stack_name)
    if stack is None:
        raise DeployError(f"stack {stack_name} disappeared after deployment")
    return stack_outputs(stack)


# ------------------------------------------------------------------------------ rollout


def validate_tag(tag: str) -> str:
    """Check an image tag before it reaches a shell command line.

    Args:
        tag: The image tag.

    Returns:
        The tag, unchanged.

    Raises:
        DeployError: If the tag does not follow Docker's tag grammar or is the "no release" marker.
    """
    if not TAG_PATTERN.fullmatch(tag) or tag == NO_RELEASE_TAG:
        raise DeployError(
            f"invalid image tag {tag!r}: expected 1-128 letters, digits, '_', '.', '-' "
            f"(not starting with '.' or '-', and not {NO_RELEASE_TAG!r})"
        )
    return tag


def released_tag_parameter(project: str) -> str:
    """Name of the SSM parameter that holds the released tag (as the template names it).

    Args:
        project: The project name (the stack's ``ProjectName``).

    Returns:
        ``/<project>/image-tag``.
    """
    return f"/{project}/image-tag"


def find_instances(ec2: BaseClient, project: str) -> list[str]:
    """Ids of the running instances tagged ``Project=<project>``.

    Args:
        ec2: An EC2 client.
        project: The value of the ``Project`` tag.

    Returns:
        The instance ids, sorted.
    """
    filters = [
        {"Name": f"tag:{PROJECT_TAG}", "Values": [project]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ]
    instance_ids = [
        instance["InstanceId"]
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters)
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    ]
    return sorted(instance_ids)


def send_rollout(ssm: BaseClient, instance_ids: Sequence[str], tag: str, *, timeout_s: int) -> str:
    """Ask the instances, one at a time, to run the rollout script for a tag.

    ``MaxConcurrency=1`` makes it a rolling update; ``MaxErrors=0`` stops at the first failure
    (that instance has rolled back by itself), so the others keep the previous release.

    Args:
        ssm: An SSM client.
        instance_ids: The instances.
        tag: The image tag to roll out.
        timeout_s: Execution timeout of the script on one instance.

    Returns:
        The SSM command id.

    Raises:
        DeployError: If SSM rejects the command (for example an instance not yet registered with SSM).
    """
    command = f"{ROLLOUT_COMMAND} {shlex.quote(validate_tag(tag))}"
    try:
        response = ssm.send_command(
            InstanceIds=list(instance_ids),
            DocumentName=RUN_SHELL_SCRIPT,
            Comment=f"roll out image tag {tag}"[:100],
            Parameters={"commands": [command], "executionTimeout": [str(timeout_s)]},
            TimeoutSeconds=max(30, timeout_s),
            MaxConcurrency="1",
            MaxErrors="0",
        )
    except ClientError as error:
        raise DeployError(
            f"SSM refused to run {command!r} on {list(instance_ids)}: {error} (a new instance needs a minute "
            "or two before its SSM agent has registered)"
        ) from error
    command_id: str = response["Command"]["CommandId"]
    logger.info("Sent %r to %s (command %s)", command, ", ".join(instance_ids), command_id)
    return command_id


def _invocation(ssm: BaseClient, command_id: str, instance_id: str) -> Invocation | None:
    try:
        response = ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "InvocationDoesNotExist":
            return None  # SSM has not created the invocation yet
        raise
    return Invocation(
        instance_id=instance_id,
        status=response["Status"],
        stdout=response.get("StandardOutputContent", "")[-_OUTPUT_TAIL_CHARS:],
        stderr=response.get("StandardErrorContent", "")[-_OUTPUT_TAIL_CHARS:],
    )


def wait_for_command(
    ssm: BaseClient,
    command_id: str,
    instance_ids: Sequence[str],
    *,
    timeout_s: float,
    poll_interval_s: float = _POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[Invocation]:
    """Poll ``get_command_invocation`` until the command has finished on every instance.

    Args:
        ssm: An SSM client.
        command_id: The command.
        instance_ids: The instances it was sent to.
        timeout_s: Give up after this many seconds.
        poll_interval_s: Seconds between polls.
        sleep: Sleeps between polls (replaceable in tests).
        clock: Monotonic clock (replaceable in tests).

    Returns:
        The finished invocations, in the order of ``instance_ids``.

    Raises:
        DeployError: If some invocation has not finished within ``timeout_s``.
    """
    deadline = clock() + timeout_s
    finished: dict[str, Invocation] = {}
    while True:
        for instance_id in instance_ids:
            if instance_id in finished:
                continue
            invocation = _invocation(ssm, command_id, instance_id)
            if invocation is not None and invocation.status in TERMINAL_COMMAND_STATUSES:
                finished[instance_id] = invocation
                logger.info("Rollout on %s: %s", instance_id, invocation.status)
        if len(finished) == len(instance_ids):
            return [finished[instance_id] for instance_id in instance_ids]
        if clock() >= deadline:
            pending = [instance_id for instance_id in instance_ids if instance_id not in finished]
            raise DeployError(f"command {command_id} still running on {pending} after {timeout_s:.0f} s")
        sleep(poll_interval_s)


def record_released_tag(ssm: BaseClient, project: str, tag: str) -> None:
    """Store the released tag where newly launched instances read it.

    Args:
        ssm: An SSM client.
        project: The project name.
        tag: The image tag every instance now runs.
    """
    name = released_tag_parameter(project)
    ssm.put_parameter(Name=name, Value=tag, Type="String", Overwrite=True)
    logger.info("Released tag %s recorded in %s", tag, name)


def rollout(
    ec2: BaseClient,
    ssm: BaseClient,
    project: str,
    tag: str,
    *,
    timeout_s: int = _ROLLOUT_TIMEOUT_S,
    poll_interval_s: float = _POLL_INTERVAL_S,
) -> list[Invocation]:
    """Roll an image tag out to every running instance of the project.

    Args:
        ec2: An EC2 client.
        ssm: An SSM client.
        project: The value of the instances' ``Project`` tag.
        tag: The image tag to roll out.
        timeout_s: Overall time allowed for all instances.
        poll_interval_s: Seconds between status polls.

    Returns:
        The successful invocations.

    Raises:
        DeployError: If no instance runs, or the rollout fails or times out on some instance (the
            message holds that instance's output).
    """
    validate_tag(tag)
    instance_ids = find_instances(ec2, project)
    if not instance_ids:
        raise DeployError(f"no running instance tagged {PROJECT_TAG}={project}")
    command_id = send_rollout(ssm, instance_ids, tag, timeout_s=timeout_s)
    invocations = wait_for_command(
        ssm, command_id, instance_ids, timeout_s=timeout_s, poll_interval_s=poll_interval_s
    )
    failed = [invocation for invocation in invocations if not invocation.succeeded]
    if failed:
        details = "\n".join(
            f"--- {invocation.instance_id}: {invocation.status}\n{invocation.stdout}{invocation.stderr}"
            for invocation in failed
        )
        raise DeployError(
            f"rollout of {tag} failed on {len(failed)} of {len(invocations)} instance(s):\n{details}"
        )
    for invocation in invocations:
        logger.info("%s: %s", invocation.instance_id, invocation.stdout.strip() or "done")
    record_released_tag(ssm, project, tag)
    return invocations


# ------------------------------------------------------------------------------ command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ai_image_detection.deploy", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION, us-east-1)")
    parser.add_argument(
        "--endpoint-url", help="replace AWS's endpoints, e.g. a local moto server (AWS_ENDPOINT_URL)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="create or update the CloudFormation stack")
    stack.add_argument("--stack-name", default=DEFAULT_STACK_NAME, help="default: %(default)s")
    stack.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE, help="default: %(default)s")
    stack.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter, repeatable; on an update, parameters not given keep their value",
    )

    release = commands.add_parser("rollout", help="roll an image tag out to the running instances")
    release.add_argument("--tag", required=True, help="image tag in the ECR repository")
    release.add_argument(
        "--project", default=DEFAULT_PROJECT, help="Project tag of the instances (default: %(default)s)"
    )
    release.add_argument(
        "--timeout",
        type=int,
        default=_ROLLOUT_TIMEOUT_S,
        help="seconds for all instances (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line interface.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The exit code: 0 on success, 1 on failure (logged with the reason).
    """
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    region = resolve_region(args.region, os.environ)
    endpoint_url = resolve_endpoint_url(args.endpoint_url, os.environ)
    try:
        if args.command == "stack":
            outputs = deploy_stack(
                make_client("cloudformation", region, endpoint_url),
                args.stack_name,
                read_template(args.template),
                parse_parameters(args.param),
            )
            for key, value in sorted(outputs.items()):
                logger.info("Output %s = %s", key, value)
        else:
            rollout(
                make_client("ec2", region, endpoint_url),
                make_client("ssm", region, endpoint_url),
                args.project,
                args.tag,
                timeout_s=args.timeout,
            )
    except (DeployError, ClientError, BotoCoreError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
