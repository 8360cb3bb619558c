"""Shared pytest fixtures."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import mlflow
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from mlflow.tracking import MlflowClient

from ai_image_detection.session_config import SESSION_CONFIG

_BENTOML_HOME = tempfile.mkdtemp(prefix="bentoml-home-")


def pytest_configure(config: pytest.Config) -> None:
    """Keep the tests' BentoML models and Bentos out of the user's ``~/bentoml``."""
    os.environ["BENTOML_HOME"] = _BENTOML_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the tests' BentoML home."""
    shutil.rmtree(_BENTOML_HOME, ignore_errors=True)


_SESSION_EXPERIMENT_ID = os.environ.get("MLFLOW_EXPERIMENT_ID")


@pytest.fixture(autouse=True)
def _no_mlflow_experiment_left_behind() -> Iterator[None]:
    """Each test starts without an active MLflow experiment or run that an earlier one left.

    ``mlflow.set_experiment`` (kedro-mlflow calls it in every ``KedroSession``) keeps the id in a
    module global and exports it as ``MLFLOW_EXPERIMENT_ID``; a later run against another store
    would look for an experiment that does not exist there. Undone after each test, so that even
    the module-scoped fixtures of the next test (set up before its function fixtures, so possibly
    after a module fixture of this one set it) start clean: back to what the session started with.
    """
    yield
    # kedro-mlflow also leaves its `kedro run`'s run active once a session is over; forget it here
    # (ending it is its store's business: that store may be gone with the test's tmp_path)
    mlflow.tracking.fluent._active_run_stack.get().clear()
    if _SESSION_EXPERIMENT_ID is None:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    else:
        os.environ["MLFLOW_EXPERIMENT_ID"] = _SESSION_EXPERIMENT_ID
    mlflow.tracking.fluent._active_experiment_id = None


PROJECT_ROOT = Path(__file__).resolve().parents[1]
MLFLOW_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_RUN_ID",
)
"""The environment variables through which a user's shell would point MLflow somewhere else."""


def scratch_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project's settings and configuration (not ``conf/local``) in ``root``, its working directory.

    A ``KedroSession`` of ``root`` writes only there (data, ``mlflow.db``); the package itself is
    the one installed (editable) in the environment. Nothing of the user's shell (MLflow's
    variables, ``KEDRO_ENV``) or of an earlier session in this process (its configuration) leaks in.

    Args:
        root: An empty folder.
        monkeypatch: Undoes the environment and the working directory afterwards.

    Returns:
        ``root``.
    """
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "src").mkdir()
    for variable in (*MLFLOW_VARIABLES, "KEDRO_ENV"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(SESSION_CONFIG, "_loader", None)
    monkeypatch.setattr(SESSION_CONFIG, "_project", None)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    """A private MLflow tracking and registry store (sqlite in ``tmp_path``), global state restored after.

    Runs start in its ``Default`` experiment, whatever experiment an earlier test (or session) made
    active in another store.
    """
    for variable in MLFLOW_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)  # not an earlier store's
    monkeypatch.chdir(tmp_path)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


LOCAL_S3_SCRIPT = PROJECT_ROOT / "ops" / "local-s3.sh"
_GRPC_PORT_OFFSET = 10000  # weed puts each component's gRPC port at its HTTP port + 10000
_PORT_RANGE = (20000, 30000)  # + _GRPC_PORT_OFFSET stays below the usual ephemeral range


def _port_is_free(port: int) -> bool:
    for host in ("127.0.0.1", ""):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def find_free_ports(count: int, *, offset: int = _GRPC_PORT_OFFSET) -> list[int]:
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


@dataclass(frozen=True)
class LocalS3:
    """A SeaweedFS server run by ``ops/local-s3.sh``: its data directory, ports and bucket.

    Attributes:
        data_dir: The server's data directory (``LOCAL_S3_DIR``), created by the script.
        ports: The HTTP port of each component, by the script's variable (``LOCAL_S3_PORT``, ...).
        bucket: The bucket weed creates on start.
    """

    data_dir: Path
    ports: dict[str, int]
    bucket: str = "ai-image-detection"

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint, ``http://127.0.0.1:<LOCAL_S3_PORT>``."""
        return f"http://127.0.0.1:{self.ports['LOCAL_S3_PORT']}"

    @property
    def credentials(self) -> dict[str, str]:
        """The generated keys, ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``."""
        lines = (self.data_dir / "credentials").read_text(encoding="utf-8").splitlines()
        return dict(line.split("=", 1) for line in lines)

    @property
    def pid(self) -> int:
        """The pid in the script's pid file."""
        return int((self.data_dir / "weed.pid").read_text(encoding="utf-8"))

    def run(
        self,
        action: str,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        script: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ops/local-s3.sh <action>`` for this server (from its data dir's parent, not a DVC repo).

        Args:
            action: ``start``, ``stop`` or ``status``.
            cwd: Working directory; ``start`` writes DVC keys when it holds ``.dvc/``.
            env: Extra environment variables.
            script: Another copy of the script.

        Returns:
            The finished process, output captured.
        """
        settings = {"LOCAL_S3_DIR": str(self.data_dir), "LOCAL_S3_BUCKET": self.bucket}
        settings |= {name: str(port) for name, port in self.ports.items()}
        return subprocess.run(
            [str(script or LOCAL_S3_SCRIPT), action],
            cwd=cwd or self.data_dir.parent,
            env={**os.environ, **settings, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )

    def client(self, access_key_id: str | None = None, secret_access_key: str | None = None) -> BaseClient:
        """A boto3 S3 client for this server, signed with the generated keys unless others are given.

        Args:
            access_key_id: Another access key id.
            secret_access_key: Another secret key.

        Returns:
            The client.
        """
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=access_key_id or self.credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=secret_access_key or self.credentials["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
        )


def new_local_s3(data_dir: Path) -> LocalS3:
    """A not-yet-started server in ``data_dir`` on free loopback ports.

    Args:
        data_dir: Its data directory (need not exist).

    Returns:
        The server's settings.
    """
    names = ("PORT", "MASTER_PORT", "VOLUME_PORT", "FILER_PORT", "ADMIN_PORT")
    return LocalS3(
        data_dir, {f"LOCAL_S3_{name}": port for name, port in zip(names, find_free_ports(5), strict=True)}
    )


def weed_pids(data_dir: Path) -> list[int]:
    """Pids of live ``weed mini`` processes serving ``data_dir`` (empty when none run).

    Args:
        data_dir: The server's data directory.

    Returns:
        The matching pids.
    """
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process has gone
            continue
        if b"mini" in argv and f"-dir={data_dir}".encode() in argv:
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.fixture(name="weed_pids")
def weed_pids_fixture() -> Callable[[Path], list[int]]:
    """The :func:`weed_pids` helper, for tests that check no server is left behind."""
    return weed_pids


@pytest.fixture
def make_local_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], LocalS3]]:
    """Factory of not-yet-started servers (free ports, fresh data dir); stops them all afterwards."""
    made: list[LocalS3] = []

    def make() -> LocalS3:
        made.append(new_local_s3(tmp_path_factory.mktemp("s3") / "data"))
        return made[-1]

    yield make
    for server in made:
        server.run("stop")
        leaked = weed_pids(server.data_dir)
        for pid in leaked:
            os.kill(pid, signal.SIGKILL)
        assert not leaked, f"weed {leaked} of {server.data_dir} outlived its pid file"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """A real SeaweedFS S3 server started by ``ops/local-s3.sh`` on free loopback ports, for the session.

    Yields:
        The running server (endpoint, bucket, data dir with its generated keys).
    """
    server = new_local_s3(tmp_path_factory.mktemp("s3-session") / "data")
    try:
        started = server.run("start")
        assert started.returncode == 0, f"{started.stdout}\n{started.stderr}"
        yield server
    finally:
        stopped = server.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert weed_pids(server.data_dir) == [], "weed is still running after the session"
