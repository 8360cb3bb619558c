"""Shared pytest fixtures."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ai_image_detection import local_s3
from ai_image_detection.local_s3 import S3ServerSettings, running_server

_BENTOML_HOME = tempfile.mkdtemp(prefix="bentoml-home-")


def pytest_configure(config: pytest.Config) -> None:
    """Keep the tests' BentoML models and Bentos out of the user's ``~/bentoml``."""
    os.environ["BENTOML_HOME"] = _BENTOML_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the tests' BentoML home."""
    shutil.rmtree(_BENTOML_HOME, ignore_errors=True)


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    """A private MLflow tracking and registry store (sqlite in ``tmp_path``), global state restored after."""
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    monkeypatch.chdir(tmp_path)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


_PORT_RANGE = (20000, 30000)  # + GRPC_PORT_OFFSET stays below the usual ephemeral range


def _port_is_free(port: int) -> bool:
    for host in ("127.0.0.1", ""):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def find_free_ports(count: int, *, offset: int = local_s3.GRPC_PORT_OFFSET) -> list[int]:
    """Return ``count`` distinct free TCP ports ``p`` for which ``p + offset`` is free too.

    SeaweedFS puts each component's gRPC port at its HTTP port + 10000, so both must be free.

    Args:
        count: How many ports to return.
        offset: Distance of the companion port that must also be free.

    Returns:
        The ports, in random order.

    Raises:
        RuntimeError: If not enough free ports turn up after many attempts.
    """
    low, high = _PORT_RANGE
    chosen: list[int] = []
    for _ in range(1000):
        port = low + secrets.randbelow(high - low)
        taken = {p for c in chosen for p in (c, c + offset)}
        if {port, port + offset} & taken:
            continue
        if _port_is_free(port) and _port_is_free(port + offset):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"found only {len(chosen)} of {count} free port pairs in {_PORT_RANGE}")


def _settings_with_free_ports(data_dir: Path) -> S3ServerSettings:
    s3, master, volume, filer, admin = find_free_ports(5)
    return S3ServerSettings(
        data_dir=data_dir,
        s3_port=s3,
        master_port=master,
        volume_port=volume,
        filer_port=filer,
        admin_port=admin,
    )


def weed_pids(data_dir: Path) -> list[int]:
    """Pids of ``weed mini`` processes serving ``data_dir`` (empty when none run).

    Args:
        data_dir: The server's data directory.

    Returns:
        The matching pids.
    """
    result = subprocess.run(
        ["/usr/bin/pgrep", "-f", f"weed .*mini -dir={data_dir}( |$)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in result.stdout.split()]


@pytest.fixture(name="weed_pids")
def weed_pids_fixture() -> Callable[[Path], list[int]]:
    """The :func:`weed_pids` helper, for tests that check no server is left behind."""
    return weed_pids


@pytest.fixture
def make_s3_settings(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], S3ServerSettings]:
    """Factory of settings for a not-yet-started server: free ports, fresh data dir."""

    def make() -> S3ServerSettings:
        return _settings_with_free_ports(tmp_path_factory.mktemp("s3"))

    return make


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3ServerSettings]:
    """A real SeaweedFS S3 server on free loopback ports, shared by the session.

    Yields:
        The settings of the running server (endpoint, bucket, data dir with its keys).
    """
    settings = _settings_with_free_ports(tmp_path_factory.mktemp("s3-session"))
    with running_server(settings):
        yield settings
    assert weed_pids(settings.data_dir) == [], "weed is still running after the session"
