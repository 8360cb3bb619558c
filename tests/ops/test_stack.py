"""The AWS stack: `deploy/cloudformation.yaml` as CloudFormation reads it, and `ops/stack.sh` on moto.

The template tests cover what moto's CloudFormation does not apply: bucket policies, versioning,
public access blocks and lifecycles, the ECR scan and lifecycle settings, the OIDC provider, the
inline egress of security groups, the scaling policy, the launch template's data. The moto tests
(`slow`) create and update the stack through `ops/stack.sh`, the command `make stack` runs, with the
real `aws cloudformation deploy` (conftest.py says where moto is patched).
"""

from __future__ import annotations

import ast
import base64
import fnmatch
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "cloudformation.yaml"
SERVICE_SOURCE = ROOT / "src" / "ai_image_detection" / "serving" / "service.py"
PROJECT = "ai-image-detection"
REGION, ACCOUNT = "us-east-1", "123456789012"  # conftest.py's moto server
REPOSITORY_ARN = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{PROJECT}"
OIDC_HOST = "token.actions.githubusercontent.com"
SUBJECT = "repo:acme/detector:environment:production"  # the one subject the release role trusts
FORWARDED = ["/annotate", "/explain", "/feedback", "/info", "/predict", "/predict_batch", "/ui", "/ui/*"]
ECR_PUSH = {f"ecr:{a}" for a in "InitiateLayerUpload UploadLayerPart CompleteLayerUpload PutImage".split()}
# Session Manager's minimum (a shell without SSH): the agent's heartbeat and the ssmmessages channels.
# Nothing uses Run Command, so no ec2messages.
SESSION_CHANNELS = {
    f"ssmmessages:{a}"
    for a in "CreateControlChannel CreateDataChannel OpenControlChannel OpenDataChannel".split()
}
ARN_PREFIX = "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}"
LAUNCH_TEMPLATE_ARN = {"Fn::Sub": f"{ARN_PREFIX}:launch-template/${{LaunchTemplate}}"}
# moto warns about the resource types its CloudFormation skips (the template tests check those)
MOTO_SKIPS = pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS..(S3..BucketPolicy|AutoScaling..ScalingPolicy) but it.s not supported"
)


# ================================================================ the template as CloudFormation reads it


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    decoded, matches = decode(str(TEMPLATE))
    assert not matches and decoded is not None, matches
    return decoded


def _resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == resource_type}


def _statements(template: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    """The statements of a role's one inline policy, by Sid."""
    (policy,) = template["Resources"][role]["Properties"]["Policies"]
    return {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}


def _actions(statements: Any) -> set[str]:
    return {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}


def _handler_permissions(resource_type: str) -> set[str]:
    """What CloudFormation's update handler of a type calls (registry schemas, shipped by cfn-lint)."""
    schemas = Path(sys.modules["cfnlint"].__file__ or "").parent / "data" / "schemas" / "resources"
    for path in schemas.glob("*.json"):
        schema = json.loads(path.read_text())
        if schema.get("typeName") == resource_type:
            return set(schema["handlers"]["update"]["permissions"])
    raise AssertionError(f"no schema of {resource_type} in {schemas}")


def _user_data(template: dict[str, Any]) -> str:
    data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    return str(data["UserData"]["Fn::Base64"]["Fn::Sub"])


def test_cfn_lint_is_clean() -> None:
    command = [str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buckets_are_private_encrypted_versioned_and_tls_only(template: dict[str, Any]) -> None:
    buckets = _resources(template, "AWS::S3::Bucket")
    assert set(buckets) == {"ArtifactBucket", "AccessLogBucket"}
    blocks = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    for bucket in buckets.values():
        properties = bucket["Properties"]
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
        assert properties["PublicAccessBlockConfiguration"] == dict.fromkeys(blocks, True)
        (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"aws:kms", "AES256"}
        assert bucket["DeletionPolicy"] == "Retain"
    logging = buckets["ArtifactBucket"]["Properties"]["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": "AccessLogBucket"}
    policies = {
        p["Properties"]["Bucket"]["Ref"]: p for p in _resources(template, "AWS::S3::BucketPolicy").values()
    }
    assert set(policies) == set(buckets)
    for name, policy in policies.items():
        (deny,) = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert (deny["Principal"], deny["Action"]) == ("*", "s3:*")
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert deny["Resource"] == [{"Fn::GetAtt": [name, "Arn"]}, {"Fn::Sub": f"${{{name}.Arn}}/*"}]


def test_repository_scans_keeps_tags_and_expires_images(template: dict[str, Any]) -> None:
    properties = template["Resources"]["Repository"]["Properties"]
    assert properties["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert properties["ImageTagMutability"] == "IMMUTABLE"
    assert properties["EncryptionConfiguration"]["EncryptionType"] == "KMS"
    text = properties["LifecyclePolicy"]["LifecyclePolicyText"]["Fn::Sub"]
    keep = template["Parameters"]["ImageRetentionCount"]["Default"]
    rules = json.loads(text.replace("${ImageRetentionCount}", str(keep)))["rules"]
    untagged, tagged = sorted(rules, key=lambda rule: rule["rulePriority"])
    expire_untagged = {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days"}
    assert untagged["selection"] == {**expire_untagged, "countNumber": 7}
    keep_tagged = {"tagStatus": "tagged", "countType": "imageCountMoreThan", "countNumber": keep}
    assert keep_tagged.items() <= tagged["selection"].items()
    assert all(rule["action"] == {"type": "expire"} for rule in rules)


def test_github_oidc_provider_is_conditional_and_trusted_by_the_release_role(
    template: dict[str, Any],
) -> None:
    provider = template["Resources"]["GitHubOidcProvider"]
    assert provider["Condition"] == "CreateOidcProvider"
    assert provider["Properties"]["Url"] == f"https://{OIDC_HOST}"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]
    role = template["Resources"]["GitHubReleaseRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    federated = [
        "CreateOidcProvider",
        {"Ref": "GitHubOidcProvider"},
        {"Ref": "ExistingGitHubOidcProviderArn"},
    ]
    assert trust["Principal"]["Federated"] == {"Fn::If": federated}
    # one subject, compared exactly: jobs of this repository in the deployment environment, no tags
    subject = {"Fn::Sub": "repo:${GitHubOrg}/${GitHubRepo}:environment:${GitHubEnvironment}"}
    assert trust["Condition"] == {
        "StringEquals": {f"{OIDC_HOST}:aud": "sts.amazonaws.com", f"{OIDC_HOST}:sub": subject}
    }
    assert template["Parameters"]["GitHubEnvironment"]["Default"] == "production"


def test_release_role_may_roll_out_this_stack_and_nothing_else(template: dict[str, Any]) -> None:
    release = _statements(template, "GitHubReleaseRole")
    assert all(s["Effect"] == "Allow" for s in release.values())
    # ops/rollout.sh: `aws cloudformation deploy` of this stack only ...
    deploy = release["DeployThisStack"]
    assert deploy["Resource"] == {"Ref": "AWS::StackId"}
    assert (
        {a for a in _actions(release.values()) if a.startswith("cloudformation:")}
        == set(deploy["Action"])
        == {
            f"cloudformation:{a}"
            for a in ("DescribeStacks", "CreateChangeSet", "DescribeChangeSet", "ExecuteChangeSet")
        }
    )
    # ... which may make a new launch template version and move the group to it, no more
    assert release["NewLaunchTemplateVersion"]["Resource"] == LAUNCH_TEMPLATE_ARN
    assert release["NewLaunchTemplateVersion"]["Action"] in _handler_permissions("AWS::EC2::LaunchTemplate")
    group = release["RefreshThisGroup"]
    assert group["Condition"] == {"StringEquals": {"autoscaling:ResourceTag/Project": {"Ref": "ProjectName"}}}
    assert set(group["Action"]) == {
        f"autoscaling:{a}"
        for a in ("UpdateAutoScalingGroup", "StartInstanceRefresh", "RollbackInstanceRefresh")
    }
    # moving the group to a version needs the rights to launch from that template, and from it only
    needed = {"autoscaling:UpdateAutoScalingGroup", "ec2:RunInstances", "iam:PassRole"}
    assert needed <= _handler_permissions("AWS::AutoScaling::AutoScalingGroup")
    launch = release["LaunchFromThisTemplateOnly"]
    assert launch["Action"] == "ec2:RunInstances"
    assert launch["Condition"] == {"ArnLike": {"ec2:LaunchTemplate": LAUNCH_TEMPLATE_ARN}}
    assert release["TagAtLaunchOnly"]["Condition"] == {"StringEquals": {"ec2:CreateAction": "RunInstances"}}
    passing = release["PassInstanceRoleToEc2"]
    assert passing["Resource"] == {"Fn::GetAtt": ["InstanceRole", "Arn"]}
    to_ec2 = {"iam:PassedToService": {"Fn::Sub": "ec2.${AWS::URLSuffix}"}}
    assert passing["Condition"] == {"StringEquals": to_ec2}
    # "*" without a condition only for actions that have no resource-level permissions
    unconditional = [s for s in release.values() if s["Resource"] == "*" and "Condition" not in s]
    reads = {"autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeInstanceRefreshes"}
    reads |= {"ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions"}
    reads |= {"ecr:GetAuthorizationToken"}
    assert _actions(unconditional) == reads
    ami = release["ResolveAmiParameter"]  # CloudFormation resolves LatestAmiId with the caller's rights
    assert ami["Action"] == "ssm:GetParameters"
    assert ami["Resource"]["Fn::Sub"].endswith("::parameter/aws/service/ami-amazon-linux-latest/*")
    assert not [
        a for a in _actions(release.values()) if "*" in a or a.startswith(("ssm:Send", "iam:Create", "s3:"))
    ]


def test_the_container_keeps_feedback_in_the_bucket_and_its_prediction_log_on_the_host(
    template: dict[str, Any],
) -> None:
    """Feedback goes to the bucket with the instance role (no endpoint, no keys); the log outlives it."""
    user_data = _user_data(template)
    bento = yaml.safe_load((ROOT / "bentofile.yaml").read_text(encoding="utf-8"))
    log_dir = next(env["value"] for env in bento["envs"] if env["name"] == "AIID_PREDICTION_LOG_DIR")
    assert "-e AIID_FEEDBACK_BUCKET=${ArtifactBucket} -e AIID_FEEDBACK_ENDPOINT_URL= " in user_data
    assert f"-v /var/lib/${{ProjectName}}/predictions:{log_dir} " in user_data
    assert "AWS_ACCESS_KEY_ID" not in user_data


def test_instance_role_is_least_privilege(template: dict[str, Any]) -> None:
    properties = template["Resources"]["InstanceRole"]["Properties"]
    assert "ManagedPolicyArns" not in properties  # AmazonSSMManagedInstanceCore reads every parameter
    statements = _statements(template, "InstanceRole")
    actions = _actions(statements.values())
    assert all(s["Effect"] == "Allow" for s in statements.values())
    assert {
        a for a in actions if a.split(":")[0] in {"ssm", "ec2messages", "ssmmessages"}
    } == SESSION_CHANNELS | {"ssm:UpdateInstanceInformation"}
    assert not [a for a in actions if "*" in a]
    # "*" only where the actions have no resource-level permissions
    wildcard = _actions(s for s in statements.values() if s["Resource"] == "*")
    assert wildcard == SESSION_CHANNELS | {"ecr:GetAuthorizationToken"}
    assert statements["SsmAgentRegistration"]["Resource"] == {"Fn::Sub": f"{ARN_PREFIX}:instance/*"}
    pull = statements["EcrPullThisRepository"]
    assert pull["Resource"] == {"Fn::GetAtt": ["Repository", "Arn"]}
    assert not {"ecr:PutImage", "ecr:InitiateLayerUpload"} & set(pull["Action"])
    assert statements["ReadModels"]["Action"] == "s3:GetObject"
    assert statements["ReadModels"]["Resource"] == {"Fn::Sub": "${ArtifactBucket.Arn}/models/*"}
    assert statements["ListModels"]["Condition"] == {"StringLike": {"s3:prefix": ["models/", "models/*"]}}
    assert {a for a in actions if a.startswith("s3:")} == {"s3:GetObject", "s3:ListBucket", "s3:PutObject"}
    assert statements["KeepFeedback"]["Action"] == "s3:PutObject"
    assert statements["KeepFeedback"]["Resource"] == {"Fn::Sub": "${ArtifactBucket.Arn}/feedback/*"}


def test_every_wildcard_resource_says_why() -> None:
    lines = [line for line in TEMPLATE.read_text().splitlines() if re.match(r'\s*Resource: "\*"', line)]
    assert lines
    for line in lines:
        assert re.fullmatch(r'\s*Resource: "\*"  # .*resource-level permissions.*', line), line


def test_launch_template_requires_imdsv2_and_encrypts_gp3_root(template: dict[str, Any]) -> None:
    data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    (root,) = data["BlockDeviceMappings"]
    assert (root["Ebs"]["VolumeType"], root["Ebs"]["Encrypted"]) == ("gp3", True)
    assert data["IamInstanceProfile"] == {"Arn": {"Fn::GetAtt": ["InstanceProfile", "Arn"]}}
    assert {spec["ResourceType"] for spec in data["TagSpecifications"]} == {"instance", "volume"}
    assert "KeyName" not in data  # no SSH key: shell access goes through Session Manager
    ami = template["Parameters"]["LatestAmiId"]
    assert ami["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert ami["Default"] == "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


@pytest.mark.parametrize("tag", [".hidden", "-x", "a b", "v1;rm", "v1/../x", "x" * 129])
def test_image_tag_parameter_takes_docker_tags_only(template: dict[str, Any], tag: str) -> None:
    pattern = template["Parameters"]["ImageTag"]["AllowedPattern"]
    assert re.fullmatch(pattern, tag) is None
    for good in ("", "v1.4.0", "v1.4.0-rc-1", "x" * 128):  # empty: before the first release
        assert re.fullmatch(pattern, good)


def test_the_group_is_rolled_out_by_instance_refresh_only(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    group = resources["AutoScalingGroup"]
    assert "UpdatePolicy" not in group  # a stack update never replaces instances: no double replacement
    # the group launches the version pinned by ops/rollout.sh (before any rollout: the newest)
    newest = {"Fn::GetAtt": ["LaunchTemplate", "LatestVersionNumber"]}
    assert group["Properties"]["LaunchTemplate"] == {
        "LaunchTemplateId": {"Ref": "LaunchTemplate"},
        "Version": {"Fn::If": ["HasLaunchTemplateVersion", {"Ref": "LaunchTemplateVersion"}, newest]},
    }
    assert template["Outputs"]["LatestLaunchTemplateVersion"]["Value"] == newest
    # health: the target group's /readyz, which the refresh waits for and rolls back without
    assert group["Properties"]["HealthCheckType"] == "ELB"
    assert group["Properties"]["TargetGroupARNs"] == [{"Ref": "TargetGroup"}]
    assert resources["TargetGroup"]["Properties"]["HealthCheckPath"] == "/readyz"
    assert "${ImageTag}" in _user_data(template)  # each tag is a new launch template version
    assert [name for name, r in resources.items() if "Condition" in r] == ["GitHubOidcProvider"]
    assert not _resources(template, "AWS::EC2::Instance")  # no single instance outside the group
    parameters = template["Parameters"]
    assert parameters["InstanceType"]["Default"] == "t3.large"
    assert (parameters["SubnetIds"]["Type"], parameters["VpcId"]["Type"]) == (
        "List<AWS::EC2::Subnet::Id>",
        "AWS::EC2::VPC::Id",
    )


def test_https_only_with_a_required_certificate(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    # no default and no empty value: CloudFormation refuses a stack without a certificate
    certificate = template["Parameters"]["CertificateArn"]
    assert "Default" not in certificate
    assert re.fullmatch(certificate["AllowedPattern"], "") is None
    assert re.fullmatch(certificate["AllowedPattern"], f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/0123-ab")
    # port 80 redirects everything to HTTPS, permanently; nothing is forwarded on plain HTTP
    http = resources["HttpListener"]["Properties"]
    assert (http["Protocol"], http["Port"]) == ("HTTP", 80)
    redirect = {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}
    assert http["DefaultActions"] == [{"Type": "redirect", "RedirectConfig": redirect}]
    https = resources["HttpsListener"]["Properties"]
    assert (https["Protocol"], https["Port"]) == ("HTTPS", 443)
    assert https["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    assert https["SslPolicy"].startswith("ELBSecurityPolicy-TLS13-")
    # every other listener forwards nowhere; only the HTTPS listener's rules forward
    assert set(_resources(template, "AWS::ElasticLoadBalancingV2::Listener")) == {
        "HttpListener",
        "HttpsListener",
    }
    for rule in _resources(template, "AWS::ElasticLoadBalancingV2::ListenerRule").values():
        assert rule["Properties"]["ListenerArn"] == {"Ref": "HttpsListener"}
    assert template["Outputs"]["ServiceUrl"]["Value"] == {"Fn::Sub": "https://${LoadBalancer.DNSName}"}


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
    mount = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and ast.unparse(n.func) == "SERVICE.mount_asgi_app"
    ]
    (path,) = [keyword.value for keyword in mount[0].keywords if keyword.arg == "path"]
    assert len(mount) == 1 and isinstance(path, ast.Constant)
    return apis, str(path.value)


def _listener_rules(template: dict[str, Any]) -> list[tuple[list[str], int, dict[str, Any]]]:
    """Each listener rule's path patterns, priority and action."""
    rules = []
    for resource in _resources(template, "AWS::ElasticLoadBalancingV2::ListenerRule").values():
        properties = resource["Properties"]
        ((condition,), (action,)) = properties["Conditions"], properties["Actions"]
        assert condition["Field"] == "path-pattern"
        rules.append((condition["PathPatternConfig"]["Values"], properties["Priority"], action))
    return rules


def _forwarded(patterns: list[str], path: str) -> bool:
    """Whether an ALB path pattern (``*`` any characters, ``?`` one, case-sensitive) matches ``path``."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def test_load_balancer_forwards_only_the_api_and_the_page(template: dict[str, Any]) -> None:
    rules = _listener_rules(template)
    forward = {"Type": "forward", "TargetGroupArn": {"Ref": "TargetGroup"}}
    forwarded = [path for paths, _, action in rules if action == forward for path in paths]
    apis, page = _detector_routes()
    assert page == "/ui"
    assert sorted(forwarded) == sorted([*apis, page, f"{page}/*"]) == FORWARDED
    # what the page calls
    page_script = (SERVICE_SOURCE.parent / "static" / "api.js").read_text()
    api_object = re.search(r"const API = \{(.*?)\};", page_script)
    assert api_object
    page_calls = set(re.findall(r'"(/[^"]*)"', api_object.group(1)))
    assert page_calls and page_calls <= apis
    for path in ("/ui", "/ui/", "/ui/index.html", "/ui/main.js", "/ui/api.js", "/ui/style.css", *apis):
        assert _forwarded(forwarded, path), path
    # BentoML's own routes stay behind the listener's default action (the target group's health checks
    # reach the instances without a rule); the instances take the load balancer's group only (below),
    # so BentoML's /metrics is reachable from an instance itself alone
    hidden = "/metrics /metrics/ /Metrics /docs.json /schema.json /static_content/index.css /livez /readyz"
    for path in [*hidden.split(), "/healthz", "/predict/submit", "/"]:
        assert not _forwarded(forwarded, path), path
    # the bare address opens the page
    (root,) = [(paths, action) for paths, _, action in rules if action["Type"] == "redirect"]
    assert root == (["/"], {"Type": "redirect", "RedirectConfig": {"Path": "/ui/", "StatusCode": "HTTP_302"}})
    # anything else: 404 from the load balancer itself
    (default,) = template["Resources"]["HttpsListener"]["Properties"]["DefaultActions"]
    assert (default["Type"], default["FixedResponseConfig"]["StatusCode"]) == ("fixed-response", "404")
    assert json.loads(default["FixedResponseConfig"]["MessageBody"])["error"]["code"] == "not_found"
    # ALB limits: at most five path values per rule, distinct priorities
    assert all(len(paths) <= 5 for paths, _, _ in rules)
    assert len({priority for _, priority, _ in rules}) == len(rules) == 4


def test_security_groups_open_only_the_load_balancer(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    instances = resources["InstanceSecurityGroup"]["Properties"]
    # no address range reaches the instances: the service port takes the load balancer's group only
    assert "SecurityGroupIngress" not in instances
    ingresses = _resources(template, "AWS::EC2::SecurityGroupIngress")
    assert list(ingresses) == ["InstanceIngressFromLoadBalancer"]
    rule = ingresses["InstanceIngressFromLoadBalancer"]["Properties"]
    port = resources["TargetGroup"]["Properties"]["Port"]
    assert rule["GroupId"] == {"Ref": "InstanceSecurityGroup"}
    assert rule["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"], "CidrIp" in rule) == (
        "tcp",
        port,
        port,
        False,
    )
    assert f"-p {port}:3000" in _user_data(template)
    # the load balancer: 80 (redirect) and 443 from AllowedCidr, out to the instances' group only
    balancer = resources["LoadBalancerSecurityGroup"]["Properties"]
    ingress = balancer["SecurityGroupIngress"]
    assert sorted((r["FromPort"], r["ToPort"], r["CidrIp"]["Ref"]) for r in ingress) == [
        (80, 80, "AllowedCidr"),
        (443, 443, "AllowedCidr"),
    ]
    (to_instances,) = balancer["SecurityGroupEgress"]
    assert to_instances["DestinationSecurityGroupId"] == {"Ref": "InstanceSecurityGroup"}
    assert (to_instances["FromPort"], to_instances["ToPort"]) == (port, port)
    (egress,) = instances["SecurityGroupEgress"]
    assert (egress["FromPort"], egress["ToPort"]) == (443, 443)


def test_checkov_skips_are_justified(template: dict[str, Any]) -> None:
    skips = [
        (name, skip)
        for name, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    for name, skip in skips:
        assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]) and len(skip["comment"]) > 40, (name, skip)


def test_the_example_parameters_are_the_templates(template: dict[str, Any]) -> None:
    lines = (ROOT / "deploy" / "parameters.example.env").read_text().splitlines()
    pairs = [line.lstrip("# ") for line in lines if re.fullmatch(r"(# )?[A-Za-z0-9]+=\S*", line)]
    keys = {pair.split("=", 1)[0] for pair in pairs}
    assert keys <= set(template["Parameters"])
    required = {name for name, spec in template["Parameters"].items() if "Default" not in spec}
    assert required <= {pair.split("=", 1)[0] for pair in pairs if pair in lines}  # not commented out
    assert not {"ImageTag", "LaunchTemplateVersion"} & keys  # the rollout's


# ================================================================ ops/stack.sh against a real moto server


def test_make_stack_runs_ops_stack_with_the_parameters_file() -> None:
    command = ["make", "-n", "-C", str(ROOT), "stack", "STACK_NAME=s1", "STACK_PARAMETERS=deploy/p.env"]
    dry_run = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert "STACK_NAME=s1 ops/stack.sh deploy/p.env" in dry_run


def _policy(response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An inline policy's statements by Sid (moto returns CloudFormation's as a Python repr, AWS as JSON)."""
    document = response["PolicyDocument"]
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError:
            document = ast.literal_eval(document)
    return {s["Sid"]: s for s in document["Statement"]}


def _user_data_of(aws: Callable[[str], Any], template_id: str, version: str) -> tuple[str, dict[str, Any]]:
    """A launch template version's user data, decoded, and its data."""
    (found,) = aws("ec2").describe_launch_template_versions(LaunchTemplateId=template_id, Versions=[version])[
        "LaunchTemplateVersions"
    ]
    return base64.b64decode(found["LaunchTemplateData"]["UserData"]).decode(), found["LaunchTemplateData"]


@pytest.mark.slow
@MOTO_SKIPS
def test_stack_creates_the_resources_of_the_template(
    ops: Callable[..., subprocess.CompletedProcess[str]],
    parameters_file: Path,
    aws: Callable[[str], Any],
    stack: Callable[[], dict[str, Any]],
) -> None:
    created = ops("stack.sh", str(parameters_file))
    assert created.returncode == 0, created.stderr
    assert "ServiceUrl" in created.stdout  # the outputs are printed
    outputs = stack()["Outputs"]
    assert outputs["BucketName"] == f"{PROJECT}-{ACCOUNT}-{REGION}"
    assert outputs["RepositoryUri"] == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{PROJECT}"
    assert outputs["ServiceUrl"] == f"https://{outputs['LoadBalancerDnsName']}"
    assert outputs["LatestLaunchTemplateVersion"] == "1"
    # what moto applies of the bucket and the repository (the rest: the template tests)
    encryption = aws("s3").get_bucket_encryption(Bucket=outputs["BucketName"])
    (rule,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    (repository,) = aws("ecr").describe_repositories(repositoryNames=[PROJECT])["repositories"]
    assert (repository["repositoryArn"], repository["imageTagMutability"]) == (REPOSITORY_ARN, "IMMUTABLE")

    # the release role: this repository's production environment only; its resources resolved
    iam = aws("iam")
    role = outputs["GitHubRoleArn"].rsplit("/", 1)[-1]
    (trust,) = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{OIDC_HOST}"}
    conditions = {f"{OIDC_HOST}:aud": "sts.amazonaws.com", f"{OIDC_HOST}:sub": SUBJECT}
    assert trust["Condition"] == {"StringEquals": conditions}
    assert iam.list_role_policies(RoleName=role)["PolicyNames"] == ["release"]
    release = _policy(iam.get_role_policy(RoleName=role, PolicyName="release"))
    assert {s["Resource"] for s in release.values() if ECR_PUSH & _actions([s])} == {REPOSITORY_ARN}
    assert release["DeployThisStack"]["Resource"] == stack()["StackId"]
    template_arn = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/{outputs['LaunchTemplateId']}"
    assert release["NewLaunchTemplateVersion"]["Resource"] == template_arn
    assert release["LaunchFromThisTemplateOnly"]["Condition"] == {
        "ArnLike": {"ec2:LaunchTemplate": template_arn}
    }

    # the group: two instances of launch template version 1 (no image yet), with the instance profile
    (group,) = aws("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    assert group["AutoScalingGroupName"] == outputs["AutoScalingGroupName"]
    assert (group["MinSize"], group["MaxSize"], len(group["Instances"])) == (2, 3, 2)
    assert (group["HealthCheckType"], group["LaunchTemplate"]["LaunchTemplateId"]) == (
        "ELB",
        outputs["LaunchTemplateId"],
    )
    assert {"Key": "Project", "Value": PROJECT} in [
        {k: t[k] for k in ("Key", "Value")} for t in group["Tags"]
    ]
    user_data, data = _user_data_of(aws, outputs["LaunchTemplateId"], "1")
    assert 'if [ -z "" ]; then' in user_data
    profile = data["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1]
    (instance_role,) = iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]
    service = _policy(iam.get_role_policy(RoleName=instance_role["RoleName"], PolicyName="service"))
    assert service["EcrPullThisRepository"]["Resource"] == REPOSITORY_ARN
    assert iam.list_attached_role_policies(RoleName=instance_role["RoleName"])["AttachedPolicies"] == []
    assert release["PassInstanceRoleToEc2"]["Resource"] == instance_role["Arn"]
    _check_load_balancer(aws, group, re.findall(r"^CertificateArn=(.*)$", parameters_file.read_text(), re.M))


def _check_load_balancer(aws: Callable[[str], Any], group: dict[str, Any], certificates: list[str]) -> None:
    """Behind the load balancer: HTTPS with the certificate given, only the API and the page forwarded."""
    elbv2 = aws("elbv2")
    (target_group,) = elbv2.describe_target_groups()["TargetGroups"]
    assert (group["TargetGroupARNs"], target_group["HealthCheckPath"]) == (
        [target_group["TargetGroupArn"]],
        "/readyz",
    )
    (balancer,) = elbv2.describe_load_balancers()["LoadBalancers"]
    listeners = elbv2.describe_listeners(LoadBalancerArn=balancer["LoadBalancerArn"])["Listeners"]
    http, https = sorted(listeners, key=lambda listener: listener["Port"])
    assert (http["Port"], https["Port"], https["Protocol"]) == (80, 443, "HTTPS")
    (redirect,) = http["DefaultActions"]
    assert (redirect["RedirectConfig"]["Protocol"], redirect["RedirectConfig"]["StatusCode"]) == (
        "HTTPS",
        "HTTP_301",
    )
    assert [c["CertificateArn"] for c in https["Certificates"]] == certificates
    forwarded = [
        (path, action["TargetGroupArn"])
        for rule in elbv2.describe_rules(ListenerArn=https["ListenerArn"])["Rules"]
        for action in rule["Actions"]
        if action["Type"] == "forward"
        for path in rule["Conditions"][0]["PathPatternConfig"]["Values"]
    ]
    assert sorted(forwarded) == [(path, target_group["TargetGroupArn"]) for path in FORWARDED]
    # the instances take the service port from the load balancer's security group, no address range
    groups = aws("ec2").describe_security_groups(
        Filters=[{"Name": "tag:Name", "Values": [f"{PROJECT}-instances"]}]
    )
    ((permission,),) = [g["IpPermissions"] for g in groups["SecurityGroups"]]
    assert (permission["FromPort"], permission["ToPort"], permission["IpRanges"]) == (80, 80, [])
    assert [pair["GroupId"] for pair in permission["UserIdGroupPairs"]] == balancer["SecurityGroups"]


@pytest.mark.slow
@MOTO_SKIPS
def test_updates_keep_the_parameters_not_given_and_a_tag_is_a_new_launch_template_version(
    ops: Callable[..., subprocess.CompletedProcess[str]],
    parameters_file: Path,
    aws: Callable[[str], Any],
    stack: Callable[[], dict[str, Any]],
) -> None:
    assert ops("stack.sh", str(parameters_file)).returncode == 0
    first = stack()
    # unchanged: CloudFormation's empty change set, which is no error
    unchanged = ops("stack.sh", str(parameters_file))
    assert unchanged.returncode == 0, unchanged.stderr
    assert "No changes to deploy" in unchanged.stdout
    # one parameter: the others keep their values (MinSize=2 and MaxSize=3 from the file too)
    tagged = ops("stack.sh", "ImageTag=v2")
    assert tagged.returncode == 0, tagged.stderr
    second = stack()
    assert second["StackStatus"] == "UPDATE_COMPLETE"
    assert second["Parameters"] == {**first["Parameters"], "ImageTag": "v2"}
    assert (second["Parameters"]["GitHubOrg"], second["Parameters"]["MinSize"]) == ("acme", "2")
    # the tag is a new launch template version; the group stays on the version it had
    assert second["Outputs"] == {**first["Outputs"], "LatestLaunchTemplateVersion": "2"}
    assert f"/{PROJECT}:v2" in _user_data_of(aws, second["Outputs"]["LaunchTemplateId"], "2")[0]
    (group,) = aws("autoscaling").describe_auto_scaling_groups()["AutoScalingGroups"]
    assert (group["LaunchTemplate"]["Version"], group["MinSize"], group["MaxSize"]) == ("1", 2, 3)
    # one stack, one of each resource
    assert [s["StackName"] for s in aws("cloudformation").describe_stacks()["Stacks"]] == [first["StackName"]]
    assert len(aws("s3").list_buckets()["Buckets"]) == 2
    assert len(aws("ecr").describe_repositories()["repositories"]) == 1


@pytest.mark.slow
@MOTO_SKIPS
def test_an_unknown_parameter_fails_before_touching_aws(
    ops: Callable[..., subprocess.CompletedProcess[str]], aws: Callable[[str], Any], tmp_path: Path
) -> None:
    typo = ops("stack.sh", "GithubOrg=acme")
    assert typo.returncode == 2
    assert "unknown template parameter 'GithubOrg'" in typo.stderr
    assert "GitHubOrg" in typo.stderr  # what the template declares
    missing = ops("stack.sh", str(tmp_path / "parameters.env"))
    assert missing.returncode == 2
    assert "copy deploy/parameters.example.env" in missing.stderr
    assert aws("cloudformation").describe_stacks()["Stacks"] == []
