"""Tests of the AWS deployment: ``deploy/cloudformation.yaml`` and ``ai_image_detection.deploy``.

Three kinds of test:

* the template read as CloudFormation reads it (cfn-lint's decoder), for the properties that the
  emulator below does not apply, and ``cfn-lint`` itself;
* the rollout script of the instances' user data, run by bash with fake ``docker``, ``aws`` and
  ``curl`` commands, including its rollback;
* ``deploy.py`` end to end against a real moto server on 127.0.0.1 (marked ``slow``), with fake
  credentials: never real AWS.

What moto 5.2's CloudFormation does not do, and how these tests get around it:

* ``AWS::S3::BucketPolicy`` and ``AWS::IAM::OIDCProvider`` are not supported: moto skips them. The
  moto stack therefore reuses an OIDC provider created through the IAM API
  (``CreateGitHubOidcProvider=false``); both resources are checked in the template instead.
* Of ``AWS::S3::Bucket`` only ``BucketEncryption`` and ``Tags`` are applied (no versioning, public
  access block, logging or lifecycle); of ``AWS::ECR::Repository`` the lifecycle policy is not
  applied and the scan and encryption settings are dropped (moto expects the API's camelCase);
  ``AWS::IAM::Role`` ignores ``ManagedPolicyArns`` and the inline ``SecurityGroupEgress`` of a
  security group is ignored; ``AWS::AutoScaling::ScalingPolicy`` is not supported; the template's
  ``Rules`` (the certificate that the default, load-balanced mode requires) are not evaluated. These
  are checked in the template.
* ``AWS::EC2::Instance`` ignores ``LaunchTemplate`` and fails without ``ImageId``, and
  ``AWS::SSM::Parameter`` reads ``Tags`` as a list where CloudFormation has a map. Two small patches
  of the in-process server (``_teach_moto``) supply what CloudFormation does: an instance launched
  from a launch template takes its image, type, security groups, instance profile and instance
  tags; the parameter's tag map is accepted. The template itself is deployed unchanged.
* Moto reports the resolved value of an SSM-typed parameter (the AMI id) as its value and can
  reuse (``UsePreviousValue``) only parameters given at creation, so the tests give ``LatestAmiId``.
* ``ssm.send_command`` without ``Targets`` adds every instance of the account to the command, and
  every invocation succeeds at once; the tests record the request that ``deploy.py`` sends, and the
  failure paths (a command that SSM ends part way, the rollback of the fleet) run against botocore's
  ``Stubber``.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.stub import Stubber
from cfnlint.decode import decode

from ai_image_detection import deploy

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "cloudformation.yaml"
RELEASE_WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
SERVICE_SOURCE = ROOT / "src" / "ai_image_detection" / "serving" / "service.py"
STATIC_DIR = SERVICE_SOURCE.parent / "static"
STACK = "ai-image-detection-test"
PROJECT = "ai-image-detection"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
REPOSITORY_ARN = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{PROJECT}"
GITHUB_ORG, GITHUB_REPO = "acme", "detector"
OIDC_URL = "https://token.actions.githubusercontent.com"
RELEASE_SUBJECT = f"repo:{GITHUB_ORG}/{GITHUB_REPO}:environment:production"  # the one the role trusts
COMMAND_ID = "6f1c2b1e-0a4e-4d55-9a53-0c2f4c1d9e11"
ECR_PUSH_ACTIONS = {
    "ecr:BatchCheckLayerAvailability",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
}
# What the SSM agent needs for Run Command and Session Manager, from AWS's AmazonSSMManagedInstanceCore
# (v2): registration and heartbeat, the ec2messages and the ssmmessages channels.
SSM_AGENT_ACTIONS = {
    "ssm:UpdateInstanceInformation",
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
}
TAG_PARAMETER_ARN = (
    "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/${ProjectName}/image-tag"
)


# ================================================================ the template as CloudFormation reads it


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, matches = decode(str(TEMPLATE))
    assert not matches, matches
    assert decoded is not None
    return decoded


def _resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == resource_type}


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return policy["PolicyDocument"]["Statement"]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_default_template_is_the_repository_template() -> None:
    assert deploy.DEFAULT_TEMPLATE == TEMPLATE
    assert TEMPLATE.is_file()


def test_cfn_lint_is_clean() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(TEMPLATE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buckets_are_private_encrypted_versioned_and_tls_only(template: dict[str, Any]) -> None:
    buckets = _resources(template, "AWS::S3::Bucket")
    assert set(buckets) == {"ArtifactBucket", "AccessLogBucket"}
    for bucket in buckets.values():
        properties = bucket["Properties"]
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
        (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"aws:kms", "AES256"}
        assert bucket["DeletionPolicy"] == "Retain"
    artifacts = buckets["ArtifactBucket"]["Properties"]
    assert artifacts["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "AccessLogBucket"}

    policies = {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]
        for p in _resources(template, "AWS::S3::BucketPolicy").values()
    }
    assert set(policies) == set(buckets)
    for name, policy in policies.items():
        (deny,) = [s for s in _statements(policy) if s["Effect"] == "Deny"]
        assert deny["Principal"] == "*"
        assert deny["Action"] == "s3:*"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert {"Fn::GetAtt": [name, "Arn"]} in deny["Resource"]
        assert {"Fn::Sub": f"${{{name}.Arn}}/*"} in deny["Resource"]


def test_repository_scans_keeps_tags_and_expires_images(template: dict[str, Any]) -> None:
    properties = template["Resources"]["Repository"]["Properties"]
    assert properties["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert properties["ImageTagMutability"] == "IMMUTABLE"
    assert properties["EncryptionConfiguration"]["EncryptionType"] == "KMS"

    text = properties["LifecyclePolicy"]["LifecyclePolicyText"]["Fn::Sub"]
    keep = template["Parameters"]["ImageRetentionCount"]["Default"]
    rules = json.loads(text.replace("${ImageRetentionCount}", str(keep)))["rules"]
    untagged, tagged = sorted(rules, key=lambda rule: rule["rulePriority"])
    assert untagged["selection"] == {
        "tagStatus": "untagged",
        "countType": "sinceImagePushed",
        "countUnit": "days",
        "countNumber": 7,
    }
    assert tagged["selection"]["tagStatus"] == "tagged"
    assert tagged["selection"]["countType"] == "imageCountMoreThan"
    assert tagged["selection"]["countNumber"] == keep
    assert all(rule["action"] == {"type": "expire"} for rule in rules)


def test_github_oidc_provider_is_conditional_and_trusted_by_the_release_role(
    template: dict[str, Any],
) -> None:
    provider = template["Resources"]["GitHubOidcProvider"]
    assert provider["Condition"] == "CreateOidcProvider"
    assert provider["Properties"]["Url"] == OIDC_URL
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]

    (trust,) = template["Resources"]["GitHubReleaseRole"]["Properties"]["AssumeRolePolicyDocument"][
        "Statement"
    ]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Principal"]["Federated"] == {
        "Fn::If": [
            "CreateOidcProvider",
            {"Ref": "GitHubOidcProvider"},
            {"Ref": "ExistingGitHubOidcProviderArn"},
        ]
    }
    # one subject, compared exactly: jobs of this repository in the deployment environment, no tags
    assert trust["Condition"] == {
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
            "token.actions.githubusercontent.com:sub": {
                "Fn::Sub": "repo:${GitHubOrg}/${GitHubRepo}:environment:${GitHubEnvironment}"
            },
        }
    }
    assert template["Parameters"]["GitHubEnvironment"]["Default"] == "production"


def test_the_job_that_assumes_the_release_role_runs_in_the_production_environment() -> None:
    workflow = yaml.safe_load(RELEASE_WORKFLOW.read_text())
    assuming = {
        name: job
        for name, job in workflow["jobs"].items()
        for step in job.get("steps", [])
        if step.get("uses", "").startswith("aws-actions/configure-aws-credentials@")
    }
    assert list(assuming) == ["release"]
    (job,) = assuming.values()
    # the only subject the role trusts is repo:ORG/REPO:environment:production
    assert job["environment"] == "production"
    assert job["permissions"]["id-token"] == "write"
    others = {name: job for name, job in workflow["jobs"].items() if name not in assuming}
    assert all("id-token" not in (job.get("permissions") or {}) for job in others.values())
    assert "id-token" not in workflow.get("permissions", {})


def test_release_role_sends_commands_only_with_the_shell_document_to_project_instances(
    template: dict[str, Any],
) -> None:
    (policy,) = template["Resources"]["GitHubReleaseRole"]["Properties"]["Policies"]
    send = [s for s in _statements(policy) if "ssm:SendCommand" in _as_list(s["Action"])]
    assert {json.dumps(s["Resource"]) for s in send} == {
        json.dumps({"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"}),
        json.dumps({"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}::document/AWS-RunShellScript"}),
    }
    (instances,) = [s for s in send if "instance/" in s["Resource"]["Fn::Sub"]]
    assert instances["Condition"] == {"StringEquals": {"ssm:resourceTag/Project": {"Ref": "ProjectName"}}}
    (stack,) = [s for s in _statements(policy) if "cloudformation:DescribeStacks" in _as_list(s["Action"])]
    assert stack["Resource"] == {"Ref": "AWS::StackId"}
    wildcard = {a for s in _statements(policy) if s["Resource"] == "*" for a in _as_list(s["Action"])}
    assert wildcard == {
        "ecr:GetAuthorizationToken",
        "ssm:GetCommandInvocation",
        "ssm:ListCommandInvocations",
        "ssm:ListCommands",  # wait_for_command reads whether SSM has ended the command
        "ec2:DescribeInstances",
    }
    (tag,) = [s for s in _statements(policy) if "ssm:PutParameter" in _as_list(s["Action"])]
    assert set(tag["Action"]) == {"ssm:GetParameter", "ssm:PutParameter"}  # read before, write after
    assert tag["Resource"] == {"Fn::Sub": TAG_PARAMETER_ARN}


def test_instance_role_is_least_privilege(template: dict[str, Any]) -> None:
    properties = template["Resources"]["InstanceRole"]["Properties"]
    assert "ManagedPolicyArns" not in properties  # AmazonSSMManagedInstanceCore reads every parameter
    (policy,) = properties["Policies"]
    statements = _statements(policy)
    assert all(s["Effect"] == "Allow" for s in statements)
    actions = {a for s in statements for a in _as_list(s["Action"])}
    ssm_actions = {a for a in actions if a.split(":")[0] in {"ssm", "ec2messages", "ssmmessages"}}
    assert ssm_actions == SSM_AGENT_ACTIONS | {"ssm:GetParameter"}
    assert not any("*" in action for action in actions)

    # parameters: only the released tag, which the user data reads at boot
    (read_tag,) = [s for s in statements if "ssm:GetParameter" in _as_list(s["Action"])]
    assert read_tag["Action"] == "ssm:GetParameter"
    assert read_tag["Resource"] == {"Fn::Sub": TAG_PARAMETER_ARN}
    assert "TAG_PARAMETER=${ReleasedImageTag}" in _user_data(template)

    # "*" only where the actions have no resource-level permissions
    wildcard = {a for s in statements if s["Resource"] == "*" for a in _as_list(s["Action"])}
    assert wildcard == (SSM_AGENT_ACTIONS - {"ssm:UpdateInstanceInformation"}) | {"ecr:GetAuthorizationToken"}
    (heartbeat,) = [s for s in statements if "ssm:UpdateInstanceInformation" in _as_list(s["Action"])]
    assert heartbeat["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"
    }

    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["EcrPullThisRepository"]["Resource"] == {"Fn::GetAtt": ["Repository", "Arn"]}
    assert not {"ecr:PutImage", "ecr:InitiateLayerUpload"} & set(by_sid["EcrPullThisRepository"]["Action"])
    assert by_sid["ReadModels"]["Action"] == "s3:GetObject"
    assert by_sid["ReadModels"]["Resource"] == {"Fn::Sub": "${ArtifactBucket.Arn}/models/*"}
    assert by_sid["ListModels"]["Condition"] == {"StringLike": {"s3:prefix": ["models/", "models/*"]}}
    s3_actions = {a for s in _statements(policy) for a in _as_list(s["Action"]) if a.startswith("s3:")}
    assert s3_actions == {"s3:GetObject", "s3:ListBucket"}


def test_every_wildcard_resource_says_why() -> None:
    lines = [line for line in TEMPLATE.read_text().splitlines() if re.match(r'\s*Resource: "\*"', line)]
    assert lines
    for line in lines:
        assert re.fullmatch(r'\s*Resource: "\*"  # .*resource-level permissions.*', line), line


def test_launch_template_requires_imdsv2_and_encrypts_gp3_root(template: dict[str, Any]) -> None:
    data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    (root,) = data["BlockDeviceMappings"]
    assert root["Ebs"]["VolumeType"] == "gp3"
    assert root["Ebs"]["Encrypted"] is True
    assert data["IamInstanceProfile"] == {"Arn": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}}
    assert {spec["ResourceType"] for spec in data["TagSpecifications"]} == {"instance", "volume"}
    assert "KeyName" not in data  # no SSH key: shell access goes through SSM
    assert template["Parameters"]["LatestAmiId"] == {
        "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
        "Default": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
        "Description": template["Parameters"]["LatestAmiId"]["Description"],
    }


def _user_data(template: dict[str, Any]) -> str:
    user_data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]["UserData"]
    return str(user_data["Fn::Base64"]["Fn::Sub"])


def test_user_data_installs_docker_and_starts_the_released_image(template: dict[str, Any]) -> None:
    script = _user_data(template)
    assert script.startswith("#!/bin/bash\n")
    assert "dnf install -y docker" in script
    assert "REPOSITORY_URI=${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/${Repository}" in script
    assert '--restart unless-stopped --memory "$MEMORY_LIMIT"' in script
    assert "-p 80:3000" in script
    assert "aws ecr get-login-password" in script
    assert "aws ssm get-parameter" in script
    assert '/usr/local/bin/ai-image-detection-rollout "$TAG"' in script
    assert deploy.ROLLOUT_COMMAND == "/usr/local/bin/ai-image-detection-rollout"
    released = template["Resources"]["ReleasedImageTag"]["Properties"]
    assert released["Name"] == {"Fn::Sub": "/${ProjectName}/image-tag"}
    assert deploy.released_tag_parameter(PROJECT) == f"/{PROJECT}/image-tag"


def test_single_instance_or_load_balanced_group(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert resources["Instance"]["Condition"] == "SingleInstance"
    for name in (
        "AutoScalingGroup",
        "LoadBalancer",
        "TargetGroup",
        "HttpListener",
        "HttpsListener",
        "ApiRule",
        "PageRule",
        "RootRule",
        "CpuTargetTracking",
        "LoadBalancerSecurityGroup",
        "InstanceIngressFromLoadBalancer",
    ):
        assert resources[name]["Condition"] == "ScalingEnabled", name
    assert resources["TargetGroup"]["Properties"]["HealthCheckPath"] == "/readyz"
    assert template["Parameters"]["InstanceType"]["Default"] == "t3.large"
    assert template["Parameters"]["SubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    assert template["Parameters"]["VpcId"]["Type"] == "AWS::EC2::VPC::Id"


def test_default_mode_is_https_with_a_required_certificate(template: dict[str, Any]) -> None:
    parameters, resources = template["Parameters"], template["Resources"]
    assert parameters["EnableAutoScaling"]["Default"] == "true"
    # the certificate has no usable default: the rule refuses the default mode without one
    assert parameters["CertificateArn"]["Default"] == ""
    rule = template["Rules"]["LoadBalancerNeedsCertificate"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "EnableAutoScaling"}, "true"]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "CertificateArn"}, ""]}]}
    assert "CertificateArn" in assertion["AssertDescription"]

    # port 80 redirects everything to HTTPS, permanently; nothing is forwarded on plain HTTP
    http = resources["HttpListener"]["Properties"]
    assert (http["Protocol"], http["Port"]) == ("HTTP", 80)
    assert http["DefaultActions"] == [
        {"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}
    ]
    https = resources["HttpsListener"]["Properties"]
    assert (https["Protocol"], https["Port"]) == ("HTTPS", 443)
    assert https["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    assert https["SslPolicy"].startswith("ELBSecurityPolicy-TLS13-")
    # every other listener forwards nowhere; only the HTTPS listener's rules forward
    listeners = _resources(template, "AWS::ElasticLoadBalancingV2::Listener")
    assert set(listeners) == {"HttpListener", "HttpsListener"}
    for rule_resource in _resources(template, "AWS::ElasticLoadBalancingV2::ListenerRule").values():
        assert rule_resource["Properties"]["ListenerArn"] == {"Ref": "HttpsListener"}

    outputs = template["Outputs"]
    assert outputs["ServiceUrl"]["Value"] == {
        "Fn::If": [
            "ScalingEnabled",
            {"Fn::Sub": "https://${LoadBalancer.DNSName}"},
            {"Fn::Sub": "http://${InstanceAddress}"},
        ]
    }
    # the single instance cannot do TLS, and its outputs say so
    warning = outputs["PlainHttpWarning"]
    assert warning["Condition"] == "SingleInstance"
    assert warning["Value"].startswith("PLAIN HTTP, NOT FOR PUBLIC USE")
    assert "PLAIN HTTP" in parameters["EnableAutoScaling"]["Description"]
    assert {"HasCertificate", "ScalingWithHttps"}.isdisjoint(template["Conditions"])


def _detector_routes() -> tuple[set[str], str]:
    """The Detector's API routes and the page's mount path, read from serving/service.py."""
    tree = ast.parse(SERVICE_SOURCE.read_text())
    (detector,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Detector"]
    apis = {
        f"/{node.name}"
        for node in detector.body
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
        and any(ast.unparse(decorator) == "bentoml.api" for decorator in node.decorator_list)
    }
    (mount,) = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "SERVICE.mount_asgi_app"
    ]
    (path,) = [keyword.value for keyword in mount.keywords if keyword.arg == "path"]
    assert isinstance(path, ast.Constant)
    return apis, str(path.value)


def _listener_rules(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each listener rule's path patterns and action, by name."""
    rules = {}
    for name, resource in _resources(template, "AWS::ElasticLoadBalancingV2::ListenerRule").items():
        properties = resource["Properties"]
        (condition,) = properties["Conditions"]
        assert condition["Field"] == "path-pattern"
        (action,) = properties["Actions"]
        rules[name] = {
            "paths": condition["PathPatternConfig"]["Values"],
            "priority": properties["Priority"],
            "action": action,
        }
    return rules


def _forwarded(patterns: list[str], path: str) -> bool:
    """Whether an ALB path pattern (``*`` any characters, ``?`` one, case-sensitive) matches ``path``."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def test_load_balancer_forwards_only_the_api_and_the_page(template: dict[str, Any]) -> None:
    rules = _listener_rules(template)
    forward = {"Type": "forward", "TargetGroupArn": {"Ref": "TargetGroup"}}
    forwarding = [rule for rule in rules.values() if rule["action"] == forward]
    forwarded = [path for rule in forwarding for path in rule["paths"]]
    apis, page = _detector_routes()
    assert page == "/ui"
    assert sorted(forwarded) == sorted([*apis, page, f"{page}/*"])
    assert apis == {"/predict", "/predict_batch", "/annotate", "/explain", "/info"}
    # what the page calls
    api_object = re.search(r"const API = \{(.*?)\};", (STATIC_DIR / "app.js").read_text())
    assert api_object
    page_calls = set(re.findall(r'"(/[^"]*)"', api_object.group(1)))
    assert page_calls
    assert page_calls <= apis
    for path in ("/ui", "/ui/", "/ui/index.html", "/ui/app.js", "/ui/style.css", *apis):
        assert _forwarded(forwarded, path), path
    # BentoML's own routes stay behind the listener's default action (the health checks of the target
    # group reach the instances without a rule)
    for path in (
        "/metrics",
        "/metrics/",
        "/Metrics",
        "/docs.json",
        "/schema.json",
        "/static_content/index.css",
        "/livez",
        "/readyz",
        "/healthz",
        "/predict/submit",
        "/",
    ):
        assert not _forwarded(forwarded, path), path
    # the bare address opens the page
    (root,) = [rule for rule in rules.values() if rule["action"]["Type"] == "redirect"]
    assert root["paths"] == ["/"]
    assert root["action"]["RedirectConfig"]["Path"] == f"{page}/"
    # anything else: 404 from the load balancer itself
    (default,) = template["Resources"]["HttpsListener"]["Properties"]["DefaultActions"]
    assert default["Type"] == "fixed-response"
    assert default["FixedResponseConfig"]["StatusCode"] == "404"
    assert json.loads(default["FixedResponseConfig"]["MessageBody"])["error"]["code"] == "not_found"
    # ALB limits: at most five path values per rule, distinct priorities
    assert all(len(rule["paths"]) <= 5 for rule in rules.values())
    priorities = [rule["priority"] for rule in rules.values()]
    assert len(set(priorities)) == len(priorities)
    assert len(rules) == 3


def test_security_groups_open_only_the_load_balancer_or_plain_http(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    instance_rules = resources["InstanceSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    condition, when_scaling, when_single = instance_rules["Fn::If"]
    assert condition == "ScalingEnabled"
    # behind the load balancer: no CIDR reaches the instances, the service port takes its group only
    assert when_scaling == {"Ref": "AWS::NoValue"}
    ingresses = _resources(template, "AWS::EC2::SecurityGroupIngress")
    assert list(ingresses) == ["InstanceIngressFromLoadBalancer"]
    from_balancer = ingresses["InstanceIngressFromLoadBalancer"]["Properties"]
    assert from_balancer["GroupId"] == {"Ref": "InstanceSecurityGroup"}
    assert from_balancer["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
    assert "CidrIp" not in from_balancer
    service_port = resources["TargetGroup"]["Properties"]["Port"]
    assert (from_balancer["IpProtocol"], from_balancer["FromPort"], from_balancer["ToPort"]) == (
        "tcp",
        service_port,
        service_port,
    )
    assert f"-p {service_port}:3000" in _user_data(template)
    # the load balancer: 80 (redirect) and 443 from AllowedCidr, out to the instances' group only
    balancer = resources["LoadBalancerSecurityGroup"]["Properties"]
    assert sorted((r["FromPort"], r["ToPort"]) for r in balancer["SecurityGroupIngress"]) == [
        (80, 80),
        (443, 443),
    ]
    assert all(r["CidrIp"] == {"Ref": "AllowedCidr"} for r in balancer["SecurityGroupIngress"])
    (to_instances,) = balancer["SecurityGroupEgress"]
    assert to_instances["DestinationSecurityGroupId"] == {"Ref": "InstanceSecurityGroup"}
    assert (to_instances["FromPort"], to_instances["ToPort"]) == (service_port, service_port)
    # the single instance: plain HTTP only (no TLS there, so no 443)
    assert [(r["FromPort"], r["ToPort"], r["CidrIp"]) for r in when_single] == [
        (80, 80, {"Ref": "AllowedCidr"})
    ]
    (egress,) = resources["InstanceSecurityGroup"]["Properties"]["SecurityGroupEgress"]
    assert (egress["FromPort"], egress["ToPort"]) == (443, 443)


def test_metrics_are_served_only_behind_the_load_balancer(template: dict[str, Any]) -> None:
    """The single instance publishes its port to clients, so BentoML's /metrics is off there."""
    script = _user_data(template)
    assert "METRICS_ENABLED=${EnableAutoScaling}" in script
    assert '-e BENTOML_CONFIG_OVERRIDES="$BENTOML_OVERRIDES"' in script


def test_checkov_skips_are_justified(template: dict[str, Any]) -> None:
    skips = [
        (name, skip)
        for name, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    for name, skip in skips:
        assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), (name, skip)
        assert len(skip["comment"]) > 40, (name, skip)


# ================================================================ the rollout script, run with fake commands


_FAKE_DOCKER = """#!/bin/bash
echo "$*" >> "$FAKE_STATE/docker.log"
case "$1" in
  login) cat > /dev/null ;;
  pull) [[ "$*" != *:missing* ]] ;;
  run) echo "${@: -1}" > "$FAKE_STATE/running" ;;
  images) printf '%s\\n' v0 v1 v2 ;;
esac
"""
# The service is ready unless it runs a tag whose name starts with "bad".
_FAKE_CURL = """#!/bin/bash
[ -f "$FAKE_STATE/running" ] && ! grep -q ':bad' "$FAKE_STATE/running"
"""
_FAKE_AWS = "#!/bin/bash\necho fake-token\n"
_REPOSITORY_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{PROJECT}"


@pytest.fixture
def run_rollout(template: dict[str, Any], tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Write the template's rollout script and fake docker/aws/curl; return a runner."""
    user_data = _user_data(template)
    match = re.search(r"<<'ROLLOUT'\n(.*?)\nROLLOUT\n", user_data, re.DOTALL)
    assert match, "rollout script not found in the user data"
    script_text = match.group(1)
    assert re.findall(r"\$\{(?!!)", script_text) == [], "the script must not use Fn::Sub references"
    script = tmp_path / "ai-image-detection-rollout"
    script.write_text(script_text.replace("${!", "${"))

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_sleep = shutil.which("sleep")
    assert real_sleep
    fakes = {
        "docker": _FAKE_DOCKER,
        "curl": _FAKE_CURL,
        "aws": _FAKE_AWS,
        "sleep": f"#!/bin/bash\nexec {real_sleep} 0.1\n",
    }
    for name, text in [*fakes.items(), (script.name, script.read_text())]:
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "rollout.env").write_text(
        f"REGION={REGION}\nREGISTRY={_REPOSITORY_URI.split('/', maxsplit=1)[0]}\n"
        f"REPOSITORY_URI={_REPOSITORY_URI}\n"
        f"CONTAINER_NAME={PROJECT}\nMEMORY_LIMIT=6g\nREADY_TIMEOUT=1\nLOG_GROUP=/{PROJECT}/service\n"
    )
    state = tmp_path / "state"
    state.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "ROLLOUT_CONFIG_DIR": str(config_dir),
            "FAKE_STATE": str(state),
        }
        return subprocess.run(
            ["/bin/bash", str(bin_dir / script.name), *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=60,
        )

    return run


def _state(tmp_path: Path, name: str) -> str:
    path = tmp_path / "state" / name
    return path.read_text() if path.exists() else ""


def test_rollout_script_runs_the_new_tag_and_records_it(
    run_rollout: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    result = run_rollout("v1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "etc" / "image-tag").read_text().strip() == "v1"
    docker_log = _state(tmp_path, "docker.log")
    assert f"pull --quiet {_REPOSITORY_URI}:v1" in docker_log
    assert f"rm -f {PROJECT}" in docker_log
    run_line = next(line for line in docker_log.splitlines() if line.startswith("run "))
    assert run_line.startswith(f"run -d --name {PROJECT} --restart unless-stopped --memory 6g -p 80:3000 ")
    assert run_line.endswith(f" {_REPOSITORY_URI}:v1")
    # images other than the new and the previous tag are removed
    assert f"rmi {_REPOSITORY_URI}:v0" in docker_log
    assert f"rmi {_REPOSITORY_URI}:v1" not in docker_log


@pytest.mark.parametrize(
    ("setting", "enabled"),
    [
        (None, "false"),  # not set: off
        ("METRICS_ENABLED=false", "false"),  # the single instance (EnableAutoScaling=false)
        ("METRICS_ENABLED=true", "true"),  # behind the load balancer
        ("METRICS_ENABLED=yes", "false"),  # anything but "true": off
    ],
)
def test_rollout_script_serves_metrics_only_when_told_the_port_is_private(
    run_rollout: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    setting: str | None,
    enabled: str,
) -> None:
    if setting:
        with (tmp_path / "etc" / "rollout.env").open("a") as config:
            config.write(f"{setting}\n")
    assert run_rollout("v1").returncode == 0
    run_line = next(line for line in _state(tmp_path, "docker.log").splitlines() if line.startswith("run "))
    overrides = re.search(r" -e BENTOML_CONFIG_OVERRIDES=(\S+) ", run_line)
    assert overrides, run_line
    assert json.loads(overrides.group(1)) == {"services": {"metrics": {"enabled": json.loads(enabled)}}}


def test_rollout_script_rolls_back_when_not_ready(
    run_rollout: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    assert run_rollout("v1").returncode == 0
    result = run_rollout("bad-2")
    assert result.returncode == 1
    assert "rolling back to v1" in result.stderr
    assert "rolled back" in result.stderr
    assert (tmp_path / "etc" / "image-tag").read_text().strip() == "v1"
    assert _state(tmp_path, "running").strip() == f"{_REPOSITORY_URI}:v1"


def test_rollout_script_keeps_the_running_container_when_the_pull_fails(
    run_rollout: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    assert run_rollout("v1").returncode == 0
    runs_before = _state(tmp_path, "docker.log").count("\nrun ")
    result = run_rollout("missing")
    assert result.returncode == 1
    assert "cannot pull" in result.stderr
    assert _state(tmp_path, "docker.log").count("\nrun ") == runs_before
    assert (tmp_path / "etc" / "image-tag").read_text().strip() == "v1"


@pytest.mark.parametrize("args", [(), ("../etc",), ("v1", "v2"), ("-rf",)])
def test_rollout_script_rejects_bad_arguments(
    run_rollout: Callable[..., subprocess.CompletedProcess[str]], args: tuple[str, ...], tmp_path: Path
) -> None:
    result = run_rollout(*args)
    assert result.returncode == 2
    assert "usage" in result.stderr
    assert _state(tmp_path, "docker.log") == ""


# ================================================================ deploy.py without AWS


def test_parse_parameters() -> None:
    assert deploy.parse_parameters(["A=1", "B=", "C=x=y", "SubnetIds=s-1,s-2"]) == {
        "A": "1",
        "B": "",
        "C": "x=y",
        "SubnetIds": "s-1,s-2",
    }
    with pytest.raises(deploy.DeployError, match="Key=Value, got 'A'"):
        deploy.parse_parameters(["A"])
    with pytest.raises(deploy.DeployError, match="given twice"):
        deploy.parse_parameters(["A=1", "A=2"])


def test_stack_parameters_keep_previous_values_and_reject_unknown_keys() -> None:
    declared = deploy.template_parameters(TEMPLATE.read_text())
    assert {"ProjectName", "GitHubOrg", "GitHubRepo", "ImageTag", "EnableAutoScaling"} <= set(declared)
    assert deploy.stack_parameters({"ImageTag": "v1"}, declared) == [
        {"ParameterKey": "ImageTag", "ParameterValue": "v1"}
    ]
    previous = {
        "ImageTag": "v1",  # given again: the new value
        "GitHubOrg": "acme",  # no default: kept
        "EnableAutoScaling": "false",  # an earlier choice (the single instance, once the default): kept
        "InstanceType": "t3.large",  # equal to the default: left to the default
        "RootVolumeSize": "30",  # equal to the (numeric) default
        "Gone": "x",  # no longer in the template: dropped
    }
    assert deploy.stack_parameters({"ImageTag": "v2"}, declared, previous) == [
        {"ParameterKey": "ImageTag", "ParameterValue": "v2"},
        {"ParameterKey": "EnableAutoScaling", "UsePreviousValue": True},
        {"ParameterKey": "GitHubOrg", "UsePreviousValue": True},
    ]
    with pytest.raises(deploy.DeployError, match=r"unknown template parameter\(s\) \['GithubOrg'\]"):
        deploy.stack_parameters({"GithubOrg": "acme"}, declared)


def test_read_template_errors(tmp_path: Path) -> None:
    with pytest.raises(deploy.DeployError, match="template not found"):
        deploy.read_template(tmp_path / "missing.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("#" * (deploy.MAX_TEMPLATE_BODY_BYTES + 1))
    with pytest.raises(deploy.DeployError, match="at most 51200 bytes"):
        deploy.read_template(big)
    with pytest.raises(deploy.DeployError, match="no Resources"):
        deploy.template_parameters("Parameters: {}\n")


def test_region_and_endpoint_resolution() -> None:
    assert deploy.resolve_region("eu-west-1", {"AWS_REGION": "x"}) == "eu-west-1"
    assert (
        deploy.resolve_region(None, {"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "x"})
        == "eu-central-1"
    )
    assert deploy.resolve_region(None, {"AWS_DEFAULT_REGION": "ap-south-1"}) == "ap-south-1"
    assert deploy.resolve_region(None, {}) == "us-east-1"
    assert (
        deploy.resolve_endpoint_url(None, {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}) == "http://127.0.0.1:1"
    )
    assert deploy.resolve_endpoint_url("http://a", {"AWS_ENDPOINT_URL": "http://b"}) == "http://a"
    assert deploy.resolve_endpoint_url(None, {}) is None


@pytest.mark.parametrize("tag", ["", "none", ".hidden", "-x", "a b", "v1;rm", "x" * 129])
def test_validate_tag_rejects(tag: str) -> None:
    with pytest.raises(deploy.DeployError, match="invalid image tag"):
        deploy.validate_tag(tag)


def _offline_client(service: str) -> Any:
    return boto3.session.Session().client(
        service,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - fake credentials for a stubbed client
    )


def test_update_without_changes_is_success() -> None:
    cfn = _offline_client("cloudformation")
    existing = {
        "StackName": STACK,
        "StackStatus": "UPDATE_COMPLETE",
        "CreationTime": "2026-01-01T00:00:00Z",
        "Parameters": [{"ParameterKey": "GitHubOrg", "ParameterValue": GITHUB_ORG}],
        "Outputs": [{"OutputKey": "BucketName", "OutputValue": "the-bucket"}],
    }
    with Stubber(cfn) as stub:
        stub.add_response("describe_stacks", {"Stacks": [existing]}, {"StackName": STACK})
        stub.add_client_error(
            "update_stack",
            service_error_code="ValidationError",
            service_message="No updates are to be performed.",
        )
        stub.add_response("describe_stacks", {"Stacks": [existing]}, {"StackName": STACK})
        outputs = deploy.deploy_stack(cfn, STACK, TEMPLATE.read_text(), {})
        stub.assert_no_pending_responses()
    assert outputs == {"BucketName": "the-bucket"}


def test_stack_after_failed_creation_is_a_clear_error() -> None:
    cfn = _offline_client("cloudformation")
    stack = {"StackName": STACK, "StackStatus": "ROLLBACK_COMPLETE", "CreationTime": "2026-01-01T00:00:00Z"}
    with Stubber(cfn) as stub:
        stub.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": STACK})
        with pytest.raises(deploy.DeployError, match="ROLLBACK_COMPLETE.*delete-stack --stack-name"):
            deploy.deploy_stack(cfn, STACK, TEMPLATE.read_text(), {})


def _describe_instances(*instance_ids: str) -> dict[str, Any]:
    return {"Reservations": [{"Instances": [{"InstanceId": i} for i in instance_ids]}]}


def _released_tag(value: str) -> dict[str, Any]:
    return {"Parameter": {"Name": f"/{PROJECT}/image-tag", "Type": "String", "Value": value}}


def _send_command_params(
    instance_ids: list[str], tag: str, instance_timeout_s: int, comment: str | None = None
) -> dict[str, Any]:
    """The send_command request ``deploy.py`` must make (checked by the Stubber)."""
    return {
        "InstanceIds": instance_ids,
        "DocumentName": "AWS-RunShellScript",
        "Comment": comment or f"roll out image tag {tag}",
        "Parameters": {
            "commands": [f"/usr/local/bin/ai-image-detection-rollout {tag}"],
            "executionTimeout": [str(instance_timeout_s)],  # per instance
        },
        # instances run one after another: each may wait for all before it
        "TimeoutSeconds": len(instance_ids) * instance_timeout_s + deploy.DEADLINE_MARGIN_S,
        "MaxConcurrency": "1",
        "MaxErrors": "0",
    }


def _invocation_response(
    command_id: str, instance_id: str, status: str, stdout: str = "", stderr: str = ""
) -> dict[str, Any]:
    return {
        "CommandId": command_id,
        "InstanceId": instance_id,
        "Status": status,
        "StandardOutputContent": stdout,
        "StandardErrorContent": stderr,
    }


def _command_response(command_id: str, status: str) -> dict[str, Any]:
    return {"Commands": [{"CommandId": command_id, "Status": status}]}


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"no poll should wait here (asked to sleep {seconds} s)")


def test_rollout_deadline_grows_with_the_instances() -> None:
    assert deploy.rollout_deadline_s(1, 600) == 600 + deploy.DEADLINE_MARGIN_S
    assert deploy.rollout_deadline_s(3, 600) == 1800 + deploy.DEADLINE_MARGIN_S
    assert deploy.DEFAULT_INSTANCE_TIMEOUT_S == 600


@pytest.mark.parametrize("instance_timeout_s", [0, 29, 172_801])
def test_rollout_rejects_an_instance_timeout_before_touching_aws(instance_timeout_s: int) -> None:
    ec2, ssm = _offline_client("ec2"), _offline_client("ssm")
    with Stubber(ec2), Stubber(ssm):  # no responses: any call would raise
        with pytest.raises(deploy.DeployError, match=rf"invalid instance timeout {instance_timeout_s} s"):
            deploy.rollout(ec2, ssm, PROJECT, "v2", instance_timeout_s=instance_timeout_s)


def test_released_tag_is_read_as_a_tag_or_none() -> None:
    ssm = _offline_client("ssm")
    name = {"Name": f"/{PROJECT}/image-tag"}
    with Stubber(ssm) as stub:
        stub.add_response("get_parameter", _released_tag("v1"), name)
        stub.add_response("get_parameter", _released_tag("none"), name)
        stub.add_client_error("get_parameter", service_error_code="ParameterNotFound", expected_params=name)
        stub.add_response("get_parameter", _released_tag("v1; rm -rf /"), name)
        assert deploy.read_released_tag(ssm, PROJECT) == "v1"
        assert deploy.read_released_tag(ssm, PROJECT) is None
        assert deploy.read_released_tag(ssm, PROJECT) is None
        with pytest.raises(deploy.DeployError, match="holds 'v1; rm -rf /', which is neither an image tag"):
            deploy.read_released_tag(ssm, PROJECT)
        stub.assert_no_pending_responses()


def test_failed_rollout_reports_the_instance_output_and_keeps_the_released_tag() -> None:
    ec2, ssm = _offline_client("ec2"), _offline_client("ssm")
    with Stubber(ec2) as ec2_stub, Stubber(ssm) as ssm_stub:
        ec2_stub.add_response("describe_instances", _describe_instances("i-0123456789abcdef0"))
        ssm_stub.add_response("get_parameter", _released_tag("v1"), {"Name": f"/{PROJECT}/image-tag"})
        ssm_stub.add_response(
            "send_command",
            {"Command": {"CommandId": COMMAND_ID}},
            _send_command_params(["i-0123456789abcdef0"], "v2", 600),
        )
        ssm_stub.add_client_error("get_command_invocation", service_error_code="InvocationDoesNotExist")
        ssm_stub.add_response("list_commands", _command_response(COMMAND_ID, "Pending"))
        ssm_stub.add_response(
            "get_command_invocation", _invocation_response(COMMAND_ID, "i-0123456789abcdef0", "InProgress")
        )
        ssm_stub.add_response("list_commands", _command_response(COMMAND_ID, "InProgress"))
        ssm_stub.add_response(
            "get_command_invocation",
            _invocation_response(
                COMMAND_ID,
                "i-0123456789abcdef0",
                "Failed",
                stderr="v2 was not ready within 180 s\nrolling back to v1\n",
            ),
        )
        # no put_parameter response is stubbed: recording the tag after a failure would raise here
        with pytest.raises(deploy.DeployError) as raised:
            deploy.rollout(ec2, ssm, PROJECT, "v2", instance_timeout_s=600, poll_interval_s=0)
        ssm_stub.assert_no_pending_responses()
    message = str(raised.value)
    assert "rollout of v2 failed on 1 of 1 instance(s)" in message
    assert "i-0123456789abcdef0: Failed" in message
    assert "rolling back to v1" in message
    assert "rollback: no instance had switched to v2: nothing to roll back" in message
    assert f"the released tag in /{PROJECT}/image-tag stays v1" in message


ROLLBACK_ID = "0b7e6a52-3c1d-4f7e-8d6a-51c0f2a4b9d3"


def _stub_partial_rollout(ssm_stub: Stubber, released: str) -> None:
    """i-1 takes v2, i-2 fails, SSM ends the command (MaxErrors=0): i-3 never gets an invocation."""
    ssm_stub.add_response("get_parameter", _released_tag(released), {"Name": f"/{PROJECT}/image-tag"})
    ssm_stub.add_response(
        "send_command",
        {"Command": {"CommandId": COMMAND_ID}},
        _send_command_params(["i-1", "i-2", "i-3"], "v2", 600),
    )
    ssm_stub.add_response(
        "get_command_invocation", _invocation_response(COMMAND_ID, "i-1", "Success", "ready on v2\n")
    )
    ssm_stub.add_response(
        "get_command_invocation",
        _invocation_response(COMMAND_ID, "i-2", "Failed", stderr="v2 was not ready within 180 s\n"),
    )
    ssm_stub.add_client_error("get_command_invocation", service_error_code="InvocationDoesNotExist")
    ssm_stub.add_response("list_commands", _command_response(COMMAND_ID, "Failed"), {"CommandId": COMMAND_ID})
    ssm_stub.add_client_error("get_command_invocation", service_error_code="InvocationDoesNotExist")


def _stub_rollback_of_i1(ssm_stub: Stubber, invocation: dict[str, Any]) -> None:
    """The rollback of i-1 to v1 after v2 failed, its invocation answered by ``invocation``."""
    ssm_stub.add_response(
        "send_command",
        {"Command": {"CommandId": ROLLBACK_ID}},
        _send_command_params(["i-1"], "v1", 600, comment="roll back to image tag v1 after v2 failed"),
    )
    ssm_stub.add_response("get_command_invocation", invocation)


def test_partly_failed_rollout_rolls_the_switched_instances_back(caplog: pytest.LogCaptureFixture) -> None:
    ec2, ssm = _offline_client("ec2"), _offline_client("ssm")
    with Stubber(ec2) as ec2_stub, Stubber(ssm) as ssm_stub:
        ec2_stub.add_response("describe_instances", _describe_instances("i-2", "i-1", "i-3"))
        _stub_partial_rollout(ssm_stub, released="v1")
        # only i-1 had switched to v2: it alone gets the released tag again
        _stub_rollback_of_i1(ssm_stub, _invocation_response(ROLLBACK_ID, "i-1", "Success", "ready on v1\n"))
        # no put_parameter response is stubbed: the released tag must stay v1
        with (
            caplog.at_level(logging.INFO, logger="ai_image_detection.deploy"),
            pytest.raises(deploy.DeployError) as raised,
        ):
            deploy.rollout(ec2, ssm, PROJECT, "v2", instance_timeout_s=600, poll_interval_s=0)
        ssm_stub.assert_no_pending_responses()
    message = str(raised.value)
    assert "rollout of v2 failed on 2 of 3 instance(s)" in message
    assert "--- i-2: Failed\nv2 was not ready within 180 s" in message
    assert "--- i-3: NotRun\nSSM ended command" in message
    assert "(Failed) before it ran here (invocation: never created)" in message
    assert "--- i-1" not in message
    assert "rollback: rolled back ['i-1'] to v1" in message
    assert f"the released tag in /{PROJECT}/image-tag stays v1" in message
    assert "Rolling i-1 back to v1" in caplog.text
    assert "rolled back ['i-1'] to v1" in caplog.text


def test_failed_rollback_is_reported_with_the_failure() -> None:
    ec2, ssm = _offline_client("ec2"), _offline_client("ssm")
    with Stubber(ec2) as ec2_stub, Stubber(ssm) as ssm_stub:
        ec2_stub.add_response("describe_instances", _describe_instances("i-1", "i-2", "i-3"))
        _stub_partial_rollout(ssm_stub, released="v1")
        _stub_rollback_of_i1(
            ssm_stub, _invocation_response(ROLLBACK_ID, "i-1", "Failed", stderr="cannot pull v1; unchanged\n")
        )
        with pytest.raises(deploy.DeployError) as raised:
            deploy.rollout(ec2, ssm, PROJECT, "v2", instance_timeout_s=600, poll_interval_s=0)
        ssm_stub.assert_no_pending_responses()
    message = str(raised.value)
    assert "rollout of v2 failed on 2 of 3 instance(s)" in message
    assert (
        "rollback: rollback to v1 failed on 1 of 1 instance(s):\n--- i-1: Failed\ncannot pull v1" in message
    )
    assert "stays v1" in message


def test_failed_first_release_has_nothing_to_roll_back_to() -> None:
    ec2, ssm = _offline_client("ec2"), _offline_client("ssm")
    with Stubber(ec2) as ec2_stub, Stubber(ssm) as ssm_stub:
        ec2_stub.add_response("describe_instances", _describe_instances("i-1", "i-2", "i-3"))
        _stub_partial_rollout(ssm_stub, released="none")  # then no send_command: nothing to roll back to
        with pytest.raises(deploy.DeployError) as raised:
            deploy.rollout(ec2, ssm, PROJECT, "v2", instance_timeout_s=600, poll_interval_s=0)
        ssm_stub.assert_no_pending_responses()
    message = str(raised.value)
    assert "rollback: no previous release to roll back to: ['i-1'] stay on v2" in message
    assert "stays none" in message


def test_wait_for_command_stops_when_ssm_has_ended_the_command() -> None:
    ssm = _offline_client("ssm")
    with Stubber(ssm) as stub:
        stub.add_response("get_command_invocation", _invocation_response(COMMAND_ID, "i-1", "Success"))
        stub.add_response("get_command_invocation", _invocation_response(COMMAND_ID, "i-2", "Failed"))
        stub.add_response("get_command_invocation", _invocation_response(COMMAND_ID, "i-3", "Pending"))
        stub.add_client_error("get_command_invocation", service_error_code="InvocationDoesNotExist")
        stub.add_response("list_commands", _command_response(COMMAND_ID, "Failed"), {"CommandId": COMMAND_ID})
        # the second read finds i-3 cancelled (a final status) and i-4 still without an invocation
        stub.add_response("get_command_invocation", _invocation_response(COMMAND_ID, "i-3", "Cancelled"))
        stub.add_client_error("get_command_invocation", service_error_code="InvocationDoesNotExist")
        invocations = deploy.wait_for_command(
            ssm, COMMAND_ID, ["i-1", "i-2", "i-3", "i-4"], timeout_s=60, sleep=_no_sleep
        )
        stub.assert_no_pending_responses()
    assert [(i.instance_id, i.status) for i in invocations] == [
        ("i-1", "Success"),
        ("i-2", "Failed"),
        ("i-3", "Cancelled"),
        ("i-4", deploy.NOT_RUN_STATUS),
    ]
    assert [i.succeeded for i in invocations] == [True, False, False, False]
    assert "invocation: never created" in invocations[3].stderr


def test_wait_for_command_reports_a_pending_invocation_of_an_ended_command_as_not_run() -> None:
    ssm = _offline_client("ssm")
    with Stubber(ssm) as stub:
        pending = _invocation_response(COMMAND_ID, "i-1", "Pending")
        stub.add_response("get_command_invocation", pending)
        stub.add_response("list_commands", _command_response(COMMAND_ID, "TimedOut"))
        stub.add_response("get_command_invocation", pending)  # read again after the command's status
        (invocation,) = deploy.wait_for_command(ssm, COMMAND_ID, ["i-1"], timeout_s=60, sleep=_no_sleep)
        stub.assert_no_pending_responses()
    assert invocation.status == deploy.NOT_RUN_STATUS
    assert not invocation.succeeded
    assert "(TimedOut) before it ran here (invocation: Pending)" in invocation.stderr


def test_wait_for_command_times_out() -> None:
    ssm = _offline_client("ssm")
    now = [0.0]
    with Stubber(ssm) as stub:
        for _ in range(3):
            stub.add_response("get_command_invocation", _invocation_response(COMMAND_ID, "i-1", "InProgress"))
            stub.add_response("list_commands", _command_response(COMMAND_ID, "InProgress"))

        def sleep(seconds: float) -> None:
            now[0] += seconds

        with pytest.raises(deploy.DeployError, match=r"still running on \['i-1'\] after 10 s"):
            deploy.wait_for_command(
                ssm, COMMAND_ID, ["i-1"], timeout_s=10, poll_interval_s=5, sleep=sleep, clock=lambda: now[0]
            )
        stub.assert_no_pending_responses()


def test_rollout_command_line_passes_the_instance_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = []

    def fake_rollout(ec2: Any, ssm: Any, project: str, tag: str, **kwargs: Any) -> list[Any]:
        calls.append((project, tag, kwargs))
        return []

    monkeypatch.setattr(deploy, "make_client", lambda service, region, endpoint_url=None: service)
    monkeypatch.setattr(deploy, "rollout", fake_rollout)
    assert deploy.main(["--region", REGION, "rollout", "--tag", "v3", "--instance-timeout", "900"]) == 0
    assert deploy.main(["--region", REGION, "rollout", "--tag", "v3", "--project", "p"]) == 0
    assert calls == [
        (PROJECT, "v3", {"instance_timeout_s": 900}),
        ("p", "v3", {"instance_timeout_s": deploy.DEFAULT_INSTANCE_TIMEOUT_S}),
    ]
    with pytest.raises(SystemExit):
        deploy.main(["rollout", "--tag", "v3", "--timeout", "900"])  # renamed: a clear usage error


# ================================================================ deploy.py against a real moto server


# moto warns about the resource types its CloudFormation skips (see the module docstring)
_MOTO_SKIPS = pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS..(S3..BucketPolicy|AutoScaling..ScalingPolicy) but it.s not supported"
)


def _teach_moto(patch: pytest.MonkeyPatch) -> None:
    """Patch moto's CloudFormation where it departs from CloudFormation (see the module docstring)."""
    from moto.ec2.models import ec2_backends  # noqa: PLC0415 - moto is only needed by these tests
    from moto.ec2.models.instances import Instance  # noqa: PLC0415
    from moto.ssm.models import Parameter  # noqa: PLC0415

    create_instance = Instance.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    create_parameter = Parameter.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def instance_from_launch_template(
        cls: type, name: str, cfn_json: dict[str, Any], account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        properties = cfn_json["Properties"]
        reference = properties.get("LaunchTemplate")
        if reference and "ImageId" not in properties:
            launch_template = ec2_backends[account_id][region_name].get_launch_template(
                reference["LaunchTemplateId"]
            )
            data = launch_template.get_version(reference.get("Version", "$Default")).data
            properties["ImageId"] = data["ImageId"]
            properties.setdefault("InstanceType", data.get("InstanceType"))
            properties.setdefault("SecurityGroups", data.get("SecurityGroupIds", []))  # moto reads ids here
            if "IamInstanceProfile" in data:
                properties.setdefault(
                    "IamInstanceProfile", data["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1]
                )
            for spec in data.get("TagSpecifications", []):
                if spec["ResourceType"] == "instance":
                    properties["Tags"] = [*properties.get("Tags", []), *spec["Tags"]]
        return create_instance(cls, name, cfn_json, account_id, region_name, **kwargs)

    def parameter_with_tag_map(
        cls: type, name: str, cfn_json: dict[str, Any], account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        tags = cfn_json["Properties"].get("Tags")
        if isinstance(tags, dict):
            cfn_json["Properties"]["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        return create_parameter(cls, name, cfn_json, account_id, region_name, **kwargs)

    patch.setattr(Instance, "create_from_cloudformation_json", classmethod(instance_from_launch_template))
    patch.setattr(Parameter, "create_from_cloudformation_json", classmethod(parameter_with_tag_map))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """A moto server on a free loopback port, in this process (so that ``_teach_moto`` applies)."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    with pytest.MonkeyPatch.context() as patch:
        _teach_moto(patch)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], Any]:
    """Fake credentials and the moto endpoint in the environment, moto reset; returns a client factory."""
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    reset = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")  # noqa: S310 - loopback
    with urllib.request.urlopen(reset, timeout=30):  # noqa: S310 - loopback moto server
        pass

    def client(service: str) -> Any:
        return deploy.make_client(service, REGION, moto_endpoint)

    return client


@pytest.fixture
def stack_params(aws: Callable[[str], Any]) -> list[str]:
    """``--param`` options for a stack in a fresh VPC, reusing an OIDC provider made through IAM.

    The default mode (the load balancer) needs a certificate: one requested from moto's ACM.
    """
    ec2 = aws("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet_ids = [
        ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")[
            "Subnet"
        ]["SubnetId"]
        for i, zone in enumerate("ab")
    ]
    provider_arn = aws("iam").create_open_id_connect_provider(
        Url=OIDC_URL,
        ClientIDList=["sts.amazonaws.com"],
        ThumbprintList=["6938fd4d98bab03faadb97b34396831e3780aea1"],
    )["OpenIDConnectProviderArn"]
    certificate_arn = aws("acm").request_certificate(DomainName="detector.example.com")["CertificateArn"]
    params = {
        # Given explicitly because moto reports the resolved AMI id as the parameter's value (AWS
        # reports the SSM name) and can reuse ("UsePreviousValue") only parameters given at creation.
        "LatestAmiId": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
        "GitHubOrg": GITHUB_ORG,
        "GitHubRepo": GITHUB_REPO,
        "VpcId": vpc_id,
        "SubnetIds": ",".join(subnet_ids),
        "CreateGitHubOidcProvider": "false",
        "ExistingGitHubOidcProviderArn": provider_arn,
        "CertificateArn": certificate_arn,
    }
    return [f"{key}={value}" for key, value in params.items()]


SINGLE_INSTANCE = "EnableAutoScaling=false"


def _deploy(params: list[str], *extra: str) -> int:
    args = ["stack", "--stack-name", STACK]
    for param in [*params, *extra]:
        args += ["--param", param]
    return deploy.main(args)


def _outputs(aws: Callable[[str], Any]) -> dict[str, str]:
    (stack,) = aws("cloudformation").describe_stacks(StackName=STACK)["Stacks"]
    return deploy.stack_outputs(stack)


def _policy_document(document: Any) -> dict[str, Any]:
    """Moto returns CloudFormation-made inline policies as a Python repr, AWS as JSON."""
    if isinstance(document, dict):
        return document
    try:
        return dict(json.loads(document))
    except json.JSONDecodeError:
        return dict(ast.literal_eval(document))


@pytest.mark.slow
@_MOTO_SKIPS
def test_single_instance_stack_creates_the_resources_of_the_template(
    aws: Callable[[str], Any], stack_params: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ai_image_detection.deploy"):
        assert _deploy(stack_params, SINGLE_INSTANCE) == 0
    assert f"Creating stack {STACK}" in caplog.text
    outputs = _outputs(aws)
    assert outputs["StackName"] == STACK
    assert outputs["BucketName"] == f"{PROJECT}-{ACCOUNT}-{REGION}"
    assert outputs["RepositoryUri"] == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{PROJECT}"
    assert "LoadBalancerDnsName" not in outputs
    # plain HTTP, and the outputs (which deploy.py logs) say so
    assert outputs["ServiceUrl"].startswith("http://")
    assert outputs["PlainHttpWarning"].startswith("PLAIN HTTP, NOT FOR PUBLIC USE")
    assert "Output PlainHttpWarning = PLAIN HTTP, NOT FOR PUBLIC USE" in caplog.text

    # bucket: encryption is what moto applies (versioning and public access block: template tests)
    encryption = aws("s3").get_bucket_encryption(Bucket=outputs["BucketName"])
    (rule,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"

    # repository: tag immutability is what moto applies (scan on push and lifecycle: template tests)
    (repository,) = aws("ecr").describe_repositories(repositoryNames=[PROJECT])["repositories"]
    assert repository["repositoryArn"] == REPOSITORY_ARN
    assert repository["imageTagMutability"] == "IMMUTABLE"

    # the release role: federated through the OIDC provider, for this repository's environment only
    iam = aws("iam")
    role_name = outputs["GitHubRoleArn"].rsplit("/", 1)[-1]
    (trust,) = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == {
        "Effect": "Allow",
        "Principal": {
            "Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
        },
        "Action": "sts:AssumeRoleWithWebIdentity",
        "Condition": {
            "StringEquals": {
                "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                "token.actions.githubusercontent.com:sub": RELEASE_SUBJECT,
            }
        },
    }
    assert iam.list_role_policies(RoleName=role_name)["PolicyNames"] == ["release"]
    policy = _policy_document(iam.get_role_policy(RoleName=role_name, PolicyName="release")["PolicyDocument"])
    push = [s for s in policy["Statement"] if ECR_PUSH_ACTIONS & set(_as_list(s["Action"]))]
    assert push
    assert {resource for s in push for resource in _as_list(s["Resource"])} == {REPOSITORY_ARN}
    ecr_on_any = {a for s in policy["Statement"] if s["Resource"] == "*" for a in _as_list(s["Action"])}
    assert {a for a in ecr_on_any if a.startswith("ecr:")} == {"ecr:GetAuthorizationToken"}

    # the instance: launched from the launch template with the instance profile, tagged with the project
    ec2 = aws("ec2")
    (reservation,) = ec2.describe_instances(InstanceIds=[outputs["InstanceId"]])["Reservations"]
    (instance,) = reservation["Instances"]
    assert {"Key": "Project", "Value": PROJECT} in instance["Tags"]
    profile_name = instance["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1]
    (profile_role,) = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]["Roles"]
    instance_policy = _policy_document(
        iam.get_role_policy(RoleName=profile_role["RoleName"], PolicyName="service")["PolicyDocument"]
    )
    ecr_pull = [s for s in instance_policy["Statement"] if s["Sid"] == "EcrPullThisRepository"]
    assert [s["Resource"] for s in ecr_pull] == [REPOSITORY_ARN]
    read_tag = [s for s in instance_policy["Statement"] if "ssm:GetParameter" in _as_list(s["Action"])]
    assert [s["Resource"] for s in read_tag] == [
        f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{PROJECT}/image-tag"
    ]
    assert iam.list_attached_role_policies(RoleName=profile_role["RoleName"])["AttachedPolicies"] == []

    # security group: plain HTTP from AllowedCidr, nothing else (no TLS here, no SSH)
    (group_id,) = [group["GroupId"] for group in instance["SecurityGroups"]]
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert [(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in group["IpPermissions"]] == [
        ("tcp", 80, 80)
    ]
    assert all(p["IpRanges"] == [{"CidrIp": "0.0.0.0/0"}] for p in group["IpPermissions"])

    released = aws("ssm").get_parameter(Name=outputs["ImageTagParameterName"])["Parameter"]["Value"]
    assert released == "none"


@pytest.mark.slow
@_MOTO_SKIPS
def test_second_deploy_updates_the_same_stack(aws: Callable[[str], Any], stack_params: list[str]) -> None:
    assert _deploy(stack_params, SINGLE_INSTANCE) == 0
    first = _outputs(aws)
    assert _deploy(stack_params, SINGLE_INSTANCE) == 0  # unchanged: "No updates are to be performed"
    # only one parameter: the others keep their values, EnableAutoScaling=false (not the default) too
    assert _deploy([], "ImageTag=v2") == 0

    stacks = [s for s in aws("cloudformation").describe_stacks()["Stacks"] if s["StackName"] == STACK]
    assert len(stacks) == 1
    (stack,) = stacks
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert parameters["GitHubOrg"] == GITHUB_ORG
    assert parameters["ImageTag"] == "v2"
    assert parameters["EnableAutoScaling"] == "false"
    assert deploy.stack_outputs(stack) == first
    buckets = [b["Name"] for b in aws("s3").list_buckets()["Buckets"]]
    assert sorted(buckets) == sorted([first["BucketName"], first["AccessLogBucketName"]])
    assert len(aws("ecr").describe_repositories()["repositories"]) == 1
    assert aws("ssm").get_parameter(Name=first["ImageTagParameterName"])["Parameter"]["Value"] == "v2"


@pytest.mark.slow
@_MOTO_SKIPS
def test_rollout_sends_the_rollout_command_to_the_tagged_instance(
    aws: Callable[[str], Any], stack_params: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _deploy(stack_params, SINGLE_INSTANCE) == 0
    outputs = _outputs(aws)
    # an instance of another project must not receive the command
    other = aws("ec2").run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Project", "Value": "other"}]}],
    )["Instances"][0]["InstanceId"]
    # moto adds every instance to a command sent without Targets, so record what deploy.py sends
    sent: list[dict[str, Any]] = []
    make_client = deploy.make_client

    def recording_client(service: str, region: str, endpoint_url: str | None = None) -> Any:
        client = make_client(service, region, endpoint_url)
        client.meta.events.register(
            "provide-client-params.ssm.SendCommand", lambda params, **_: sent.append(dict(params))
        )
        return client

    monkeypatch.setattr(deploy, "make_client", recording_client)

    assert deploy.main(["rollout", "--tag", "v1.2.0", "--project", PROJECT, "--instance-timeout", "300"]) == 0

    (request,) = sent
    assert request["InstanceIds"] == [outputs["InstanceId"]]
    assert other not in request["InstanceIds"]
    assert request["DocumentName"] == "AWS-RunShellScript"
    assert request["Parameters"]["commands"] == ["/usr/local/bin/ai-image-detection-rollout v1.2.0"]
    assert request["Parameters"]["executionTimeout"] == ["300"]
    assert request["TimeoutSeconds"] == 300 + deploy.DEADLINE_MARGIN_S
    assert (request["MaxConcurrency"], request["MaxErrors"]) == ("1", "0")
    ssm = aws("ssm")
    (command,) = ssm.list_commands()["Commands"]
    assert command["DocumentName"] == "AWS-RunShellScript"
    assert command["Parameters"]["commands"] == ["/usr/local/bin/ai-image-detection-rollout v1.2.0"]
    # moto reports every invocation as Success at once; the failure path is tested with a stub above
    invocation = ssm.get_command_invocation(CommandId=command["CommandId"], InstanceId=outputs["InstanceId"])
    assert invocation["Status"] == "Success"
    assert ssm.get_parameter(Name=outputs["ImageTagParameterName"])["Parameter"]["Value"] == "v1.2.0"


@pytest.mark.slow
@_MOTO_SKIPS
def test_rollout_without_instances_fails_clearly(
    aws: Callable[[str], Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="ai_image_detection.deploy"):
        assert deploy.main(["rollout", "--tag", "v1", "--project", "nothing-here"]) == 1
    assert "no running instance tagged Project=nothing-here" in caplog.text
    assert aws("ssm").list_commands()["Commands"] == []


@pytest.mark.slow
@_MOTO_SKIPS
def test_unknown_parameter_fails_before_touching_aws(
    aws: Callable[[str], Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="ai_image_detection.deploy"):
        assert _deploy(["GithubOrg=acme"]) == 1
    assert "unknown template parameter(s) ['GithubOrg']" in caplog.text
    assert aws("cloudformation").describe_stacks()["Stacks"] == []


@pytest.mark.slow
@_MOTO_SKIPS
def test_default_stack_serves_https_behind_the_load_balancer(
    aws: Callable[[str], Any], stack_params: list[str]
) -> None:
    certificate_arn = next(p.split("=", 1)[1] for p in stack_params if p.startswith("CertificateArn="))
    assert _deploy(stack_params, "MinSize=2", "MaxSize=3", "DesiredCapacity=2") == 0  # no EnableAutoScaling
    outputs = _outputs(aws)
    assert "InstanceId" not in outputs
    assert "PlainHttpWarning" not in outputs
    assert outputs["ServiceUrl"] == f"https://{outputs['LoadBalancerDnsName']}"

    (group,) = aws("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (2, 3, 2)
    assert group["HealthCheckType"] == "ELB"
    elbv2 = aws("elbv2")
    (target_group,) = elbv2.describe_target_groups()["TargetGroups"]
    assert target_group["HealthCheckPath"] == "/readyz"
    assert group["TargetGroupARNs"] == [target_group["TargetGroupArn"]]
    (balancer,) = elbv2.describe_load_balancers()["LoadBalancers"]
    assert balancer["DNSName"] == outputs["LoadBalancerDnsName"]
    listeners = {
        listener["Port"]: listener
        for listener in elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    }
    assert sorted(listeners) == [80, 443]
    # HTTP: a 301 to HTTPS for every path
    http = listeners[80]
    assert http["Protocol"] == "HTTP"
    (redirect,) = http["DefaultActions"]
    assert redirect["Type"] == "redirect"
    assert redirect["RedirectConfig"]["Protocol"] == "HTTPS"
    assert redirect["RedirectConfig"]["Port"] == "443"
    assert redirect["RedirectConfig"]["StatusCode"] == "HTTP_301"
    assert [
        r for r in elbv2.describe_rules(ListenerArn=http["ListenerArn"])["Rules"] if not r["IsDefault"]
    ] == []
    # HTTPS: the certificate, the API and the page forwarded, everything else 404
    https = listeners[443]
    assert https["Protocol"] == "HTTPS"
    assert [c["CertificateArn"] for c in https["Certificates"]] == [certificate_arn]
    (not_found,) = https["DefaultActions"]
    assert not_found["Type"] == "fixed-response"
    assert not_found["FixedResponseConfig"]["StatusCode"] == "404"
    forwarded = sorted(
        path
        for rule in elbv2.describe_rules(ListenerArn=https["ListenerArn"])["Rules"]
        if not rule["IsDefault"] and rule["Actions"][0]["Type"] == "forward"
        for condition in rule["Conditions"]
        for path in condition["PathPatternConfig"]["Values"]
    )
    assert forwarded == ["/annotate", "/explain", "/info", "/predict", "/predict_batch", "/ui", "/ui/*"]
    assert {
        a["TargetGroupArn"]
        for r in elbv2.describe_rules(ListenerArn=https["ListenerArn"])["Rules"]
        for a in r["Actions"]
        if a["Type"] == "forward"
    } == {target_group["TargetGroupArn"]}

    # the instances' group: the service port from the load balancer's group, no address range
    ec2 = aws("ec2")
    (balancer_group_id,) = balancer["SecurityGroups"]
    (instance_group,) = ec2.describe_security_groups(
        Filters=[{"Name": "tag:Name", "Values": [f"{PROJECT}-instances"]}]
    )["SecurityGroups"]
    (permission,) = instance_group["IpPermissions"]
    assert (permission["IpProtocol"], permission["FromPort"], permission["ToPort"]) == ("tcp", 80, 80)
    assert [pair["GroupId"] for pair in permission["UserIdGroupPairs"]] == [balancer_group_id]
    assert permission["IpRanges"] == []

    # the group's instances carry the project tag, so a rollout finds them all
    running = deploy.find_instances(aws("ec2"), PROJECT)
    assert len(running) == 2
