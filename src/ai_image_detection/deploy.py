r"""Create or update the AWS stack, and roll a released image out to its instances.

The stack is ``deploy/cloudformation.yaml``, the single source of truth for the deployment (S3
bucket, ECR repository, GitHub OIDC release role, EC2 service). A rollout asks every running
instance tagged ``Project=<project>``, one at a time through SSM Run Command, to run
``/usr/local/bin/ai-image-detection-rollout TAG`` (installed by the instances' user data), which
pulls the image, swaps the container, waits for ``/readyz`` and rolls back on failure. When every
instance is ready on the new tag, the tag is stored in the SSM parameter ``/<project>/image-tag``
so that instances launched later start it too. When the rollout fails on one instance, SSM stops
there, and the instances that had already switched are rolled back to the released tag read from
that parameter, so that the fleet runs one release.

Command line::

    python -m ai_image_detection.deploy stack --stack-name ai-image-detection \
        --param GitHubOrg=acme --param GitHubRepo=detector \
        --param VpcId=vpc-0123 --param SubnetIds=subnet-0aaa,subnet-0bbb \
        --param CertificateArn=arn:aws:acm:eu-west-1:123456789012:certificate/0123abcd-...
    python -m ai_image_detection.deploy rollout --tag 1.4.0 --instance-timeout 600

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
"""Final statuses of an SSM command and of its invocations."""
NOT_RUN_STATUS = "NotRun"
"""Status given to an instance that has no finished invocation when SSM has ended the command
(with ``MaxErrors=0`` SSM stops at the first failure, before the remaining instances)."""

DEFAULT_INSTANCE_TIMEOUT_S = 600
"""Time the rollout script may run on one instance: pull, start, ``/readyz``, and perhaps its own
rollback (twice ``ReadyTimeoutSeconds``, 180 s by default)."""
MIN_INSTANCE_TIMEOUT_S = 30
MAX_INSTANCE_TIMEOUT_S = 172_800
"""The largest ``executionTimeout`` that ``AWS-RunShellScript`` accepts (48 hours)."""
DEADLINE_MARGIN_S = 300
"""Added to the instances' total time for SSM's delivery to each instance and for the polling."""

_WAITER_DELAY_S = 15
_WAITER_MAX_ATTEMPTS = 240  # one hour
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


def validate_instance_timeout(instance_timeout_s: int) -> int:
    """Check the time allowed to the rollout script on one instance.

    Args:
        instance_timeout_s: Seconds, used as the script's ``executionTimeout``.

    Returns:
        The value, unchanged.

    Raises:
        DeployError: If it is outside what ``AWS-RunShellScript`` accepts or too short for a rollout.
    """
    if not MIN_INSTANCE_TIMEOUT_S <= instance_timeout_s <= MAX_INSTANCE_TIMEOUT_S:
        raise DeployError(
            f"invalid instance timeout {instance_timeout_s} s: expected {MIN_INSTANCE_TIMEOUT_S} to "
            f"{MAX_INSTANCE_TIMEOUT_S} s, enough for the image pull plus twice ReadyTimeoutSeconds"
        )
    return instance_timeout_s


def rollout_deadline_s(instance_count: int, instance_timeout_s: int) -> int:
    """Time allowed to a rollout on all instances, which run one after another.

    Args:
        instance_count: Number of instances the command is sent to.
        instance_timeout_s: Time allowed on one instance.

    Returns:
        ``instance_count * instance_timeout_s + DEADLINE_MARGIN_S``.
    """
    return instance_count * instance_timeout_s + DEADLINE_MARGIN_S


def read_released_tag(ssm: BaseClient, project: str) -> str | None:
    """The released tag, to roll back to when a rollout fails part way.

    Args:
        ssm: An SSM client.
        project: The project name.

    Returns:
        The tag in ``/<project>/image-tag``, or ``None`` before the first release (value ``none``) or
        when the parameter does not exist.

    Raises:
        DeployError: If the parameter holds something that is not an image tag.
    """
    name = released_tag_parameter(project)
    try:
        value: str = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ParameterNotFound":
            raise
        logger.warning("Parameter %s does not exist: no released tag to roll back to", name)
        return None
    if value == NO_RELEASE_TAG:
        logger.info("No release yet (%s is %r)", name, NO_RELEASE_TAG)
        return None
    if not TAG_PATTERN.fullmatch(value):
        raise DeployError(
            f"parameter {name} holds {value!r}, which is neither an image tag nor {NO_RELEASE_TAG!r}"
        )
    logger.info("Released tag: %s (%s)", value, name)
    return value


def send_rollout(
    ssm: BaseClient,
    instance_ids: Sequence[str],
    tag: str,
    *,
    instance_timeout_s: int,
    comment: str | None = None,
) -> str:
    """Ask the instances, one at a time, to run the rollout script for a tag.

    ``MaxConcurrency=1`` makes it a rolling update; ``MaxErrors=0`` stops at the first failure (that
    instance has rolled back by itself, the ones after it are not started). ``executionTimeout``
    bounds the script on each instance; SSM's ``TimeoutSeconds`` (how long an instance may wait
    for its turn) covers all of them, see `rollout_deadline_s`.

    Args:
        ssm: An SSM client.
        instance_ids: The instances.
        tag: The image tag to roll out.
        instance_timeout_s: Execution timeout of the script on one instance.
        comment: The command's comment in SSM; ``roll out image tag TAG`` by default.

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
            Comment=(comment or f"roll out image tag {tag}")[:100],
            Parameters={"commands": [command], "executionTimeout": [str(instance_timeout_s)]},
            TimeoutSeconds=rollout_deadline_s(len(instance_ids), instance_timeout_s),
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
            return None  # SSM has not created the invocation (yet, or ever: see wait_for_command)
        raise
    return Invocation(
        instance_id=instance_id,
        status=response["Status"],
        stdout=response.get("StandardOutputContent", "")[-_OUTPUT_TAIL_CHARS:],
        stderr=response.get("StandardErrorContent", "")[-_OUTPUT_TAIL_CHARS:],
    )


def _poll_invocations(
    ssm: BaseClient, command_id: str, instance_ids: Sequence[str], finished: dict[str, Invocation]
) -> dict[str, str | None]:
    """Add the newly finished invocations to ``finished``; return the others' statuses (None: none yet)."""
    pending: dict[str, str | None] = {}
    for instance_id in instance_ids:
        if instance_id in finished:
            continue
        invocation = _invocation(ssm, command_id, instance_id)
        if invocation is not None and invocation.status in TERMINAL_COMMAND_STATUSES:
            finished[instance_id] = invocation
            logger.info("Command %s on %s: %s", command_id, instance_id, invocation.status)
        else:
            pending[instance_id] = None if invocation is None else invocation.status
    return pending


def command_status(ssm: BaseClient, command_id: str) -> str | None:
    """The status of the command as a whole.

    Args:
        ssm: An SSM client.
        command_id: The command.

    Returns:
        ``Pending``, ``InProgress``, ``Success``, ``Failed``, ``Cancelled``, ``TimedOut``, ... or
        ``None`` while SSM does not list the command yet.
    """
    commands = ssm.list_commands(CommandId=command_id)["Commands"]
    return str(commands[0]["Status"]) if commands else None


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
    """Poll the command's invocations until each has finished or SSM has ended the command.

    With ``MaxErrors=0`` SSM ends the command after the first failed instance: the instances after
    it get a ``Cancelled`` invocation or none at all. So while some invocation is unfinished, the
    command's own status is read too; once it is final, an instance without a finished invocation
    is reported with status `NOT_RUN_STATUS` (never as a success).

    Args:
        ssm: An SSM client.
        command_id: The command.
        instance_ids: The instances it was sent to.
        timeout_s: Give up after this many seconds (all instances together).
        poll_interval_s: Seconds between polls.
        sleep: Sleeps between polls (replaceable in tests).
        clock: Monotonic clock (replaceable in tests).

    Returns:
        One invocation per instance, in the order of ``instance_ids``.

    Raises:
        DeployError: If the command is still running on some instance after ``timeout_s``.
    """
    deadline = clock() + timeout_s
    finished: dict[str, Invocation] = {}
    while True:
        pending = _poll_invocations(ssm, command_id, instance_ids, finished)
        if pending:
            status = command_status(ssm, command_id)
            if status in TERMINAL_COMMAND_STATUSES:
                # read once more: an invocation may have finished between the two reads above
                pending = _poll_invocations(ssm, command_id, list(pending), finished)
                for instance_id, invocation_status in pending.items():
                    reason = (
                        f"SSM ended command {command_id} ({status}) before it ran here "
                        f"(invocation: {invocation_status or 'never created'})"
                    )
                    finished[instance_id] = Invocation(instance_id, NOT_RUN_STATUS, stderr=reason)
                    logger.warning("Command %s on %s: not run, %s", command_id, instance_id, reason)
                pending = {}
        if not pending:
            return [finished[instance_id] for instance_id in instance_ids]
        if clock() >= deadline:
            raise DeployError(
                f"command {command_id} still running on {list(pending)} after {timeout_s:.0f} s"
            )
        sleep(poll_interval_s)


def run_rollout(
    ssm: BaseClient,
    instance_ids: Sequence[str],
    tag: str,
    *,
    instance_timeout_s: int,
    poll_interval_s: float = _POLL_INTERVAL_S,
    comment: str | None = None,
) -> list[Invocation]:
    """Send the rollout of a tag to the instances and wait until it is done.

    Args:
        ssm: An SSM client.
        instance_ids: The instances, served one after another.
        tag: The image tag.
        instance_timeout_s: Time allowed on one instance; all together get `rollout_deadline_s`.
        poll_interval_s: Seconds between status polls.
        comment: The command's comment in SSM.

    Returns:
        One invocation per instance, in the order of ``instance_ids``.

    Raises:
        DeployError: If SSM refuses the command or it does not finish in time.
    """
    command_id = send_rollout(ssm, instance_ids, tag, instance_timeout_s=instance_timeout_s, comment=comment)
    return wait_for_command(
        ssm,
        command_id,
        instance_ids,
        timeout_s=rollout_deadline_s(len(instance_ids), instance_timeout_s),
        poll_interval_s=poll_interval_s,
    )


def _describe_failures(invocations: Sequence[Invocation]) -> str:
    return "\n".join(
        f"--- {invocation.instance_id}: {invocation.status}\n{invocation.stdout}{invocation.stderr}".rstrip()
        for invocation in invocations
        if not invocation.succeeded
    )


def roll_back(
    ssm: BaseClient,
    instance_ids: Sequence[str],
    failed_tag: str,
    previous_tag: str | None,
    *,
    instance_timeout_s: int,
    poll_interval_s: float = _POLL_INTERVAL_S,
) -> str:
    """Put the instances that took a failed release back on the previous one.

    Args:
        ssm: An SSM client.
        instance_ids: The instances on which the rollout of ``failed_tag`` succeeded.
        failed_tag: The tag whose rollout failed elsewhere.
        previous_tag: The released tag (`read_released_tag`), ``None`` if there is none.
        instance_timeout_s: Time allowed on one instance.
        poll_interval_s: Seconds between status polls.

    Returns:
        The outcome, one line, or more with the output of instances whose rollback failed. It is
        logged too; errors of the rollback are part of it rather than raised, so that the caller
        can report the original failure together with it.
    """
    ids = list(instance_ids)
    if not ids:
        outcome = f"no instance had switched to {failed_tag}: nothing to roll back"
        logger.info("%s", outcome)
        return outcome
    if previous_tag is None:
        outcome = f"no previous release to roll back to: {ids} stay on {failed_tag}"
        logger.error("%s", outcome)
        return outcome
    if previous_tag == failed_tag:
        outcome = f"{ids} run {failed_tag}, which is the released tag already: nothing to roll back"
        logger.info("%s", outcome)
        return outcome
    logger.warning("Rolling %s back to %s", ", ".join(ids), previous_tag)
    try:
        invocations = run_rollout(
            ssm,
            ids,
            previous_tag,
            instance_timeout_s=instance_timeout_s,
            poll_interval_s=poll_interval_s,
            comment=f"roll back to image tag {previous_tag} after {failed_tag} failed",
        )
    except (DeployError, ClientError, BotoCoreError) as error:
        outcome = f"rollback of {ids} to {previous_tag} failed: {error}"
        logger.error("%s", outcome)
        return outcome
    failed = [invocation for invocation in invocations if not invocation.succeeded]
    if failed:
        outcome = (
            f"rollback to {previous_tag} failed on {len(failed)} of {len(invocations)} instance(s):\n"
            f"{_describe_failures(invocations)}"
        )
        logger.error("%s", outcome)
        return outcome
    outcome = f"rolled back {ids} to {previous_tag}"
    logger.info("%s", outcome)
    return outcome


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
    instance_timeout_s: int = DEFAULT_INSTANCE_TIMEOUT_S,
    poll_interval_s: float = _POLL_INTERVAL_S,
) -> list[Invocation]:
    """Roll an image tag out to every running instance of the project, one after another.

    On success the tag becomes the released tag. When it fails on some instance, SSM stops there;
    the instances before it, already on the new tag, are rolled back to the released tag, which
    stays unchanged, and the error reports both the failure and the rollback.

    Args:
        ec2: An EC2 client.
        ssm: An SSM client.
        project: The value of the instances' ``Project`` tag.
        tag: The image tag to roll out.
        instance_timeout_s: Time allowed on one instance; the whole rollout may take the number of
            instances times this, plus `DEADLINE_MARGIN_S`.
        poll_interval_s: Seconds between status polls.

    Returns:
        The successful invocations.

    Raises:
        DeployError: If the arguments are invalid, no instance runs, or the rollout fails or times out
            on some instance (the message holds that instance's output and the rollback's outcome).
    """
    validate_tag(tag)
    validate_instance_timeout(instance_timeout_s)
    instance_ids = find_instances(ec2, project)
    if not instance_ids:
        raise DeployError(f"no running instance tagged {PROJECT_TAG}={project}")
    previous_tag = read_released_tag(ssm, project)
    invocations = run_rollout(
        ssm, instance_ids, tag, instance_timeout_s=instance_timeout_s, poll_interval_s=poll_interval_s
    )
    failed = [invocation for invocation in invocations if not invocation.succeeded]
    if failed:
        logger.error("Rollout of %s failed on %s", tag, ", ".join(i.instance_id for i in failed))
        switched = [invocation.instance_id for invocation in invocations if invocation.succeeded]
        outcome = roll_back(
            ssm,
            switched,
            tag,
            previous_tag,
            instance_timeout_s=instance_timeout_s,
            poll_interval_s=poll_interval_s,
        )
        raise DeployError(
            f"rollout of {tag} failed on {len(failed)} of {len(invocations)} instance(s):\n"
            f"{_describe_failures(invocations)}\n"
            f"rollback: {outcome}\n"
            f"the released tag in {released_tag_parameter(project)} stays {previous_tag or NO_RELEASE_TAG}"
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
        "--instance-timeout",
        type=int,
        default=DEFAULT_INSTANCE_TIMEOUT_S,
        metavar="SECONDS",
        help=(
            "seconds the rollout script may take on one instance (default: %(default)s); instances run "
            "one after another, so the whole rollout may take their number times this plus "
            f"{DEADLINE_MARGIN_S} s"
        ),
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
                instance_timeout_s=args.instance_timeout,
            )
    except (DeployError, ClientError, BotoCoreError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
