"""Tests of the local SeaweedFS S3 server and of a DVC remote on it."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from ai_image_detection import local_s3
from ai_image_detection.local_s3 import (
    LocalS3Error,
    S3ServerSettings,
    build_command,
    configure_dvc_remote,
    load_or_create_credentials,
    running_pid,
    s3_client,
    start,
    stop,
)

GIT = shutil.which("git") or "git"
_TCP_LISTEN = "0A"


# --------------------------------------------------------------------------- helpers


def _decode_address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    # /proc/net/tcp{,6} print each 32-bit word of the address in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _listening_sockets(pid: int) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text(encoding="utf-8").splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == _TCP_LISTEN and inode in inodes:
                address, port = local.split(":")
                found.append((_decode_address(address), int(port, 16)))
    return found


def _anonymous_client(settings: S3ServerSettings) -> BaseClient:
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _isolate_dvc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep DVC away from the user's global, system and site configuration and analytics."""
    for name in [key for key in os.environ if key.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    for name in ("DVC_SITE_CACHE_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))


@pytest.fixture
def dvc_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DVC repository (no git) whose committed remote ``s3`` points at the default endpoint."""
    _isolate_dvc(monkeypatch, tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    _dvc(["init", "--no-scm", "-q"], repo)
    _dvc(["remote", "add", "-d", "s3", "s3://ai-image-detection/dvc"], repo)
    _dvc(["remote", "modify", "s3", "endpointurl", "http://127.0.0.1:8333"], repo)
    return repo


@pytest.fixture
def spawned_argvs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argument vector of every process this test spawns from now on (the spy passes them on)."""
    argvs: list[list[str]] = []
    real_popen = subprocess.Popen

    def record(args: object) -> None:
        single = isinstance(args, str | bytes | os.PathLike)
        argvs.append([os.fsdecode(arg) for arg in ([args] if single else args)])  # type: ignore[union-attr]

    class RecordingPopen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, args: object, *rest: object, **kwargs: object) -> None:
            record(args)
            super().__init__(args, *rest, **kwargs)

    def spawn_recorder(real: Callable[..., object]) -> Callable[..., object]:
        def spawn(path: object, argv: object, *rest: object, **kwargs: object) -> object:
            record(argv)
            return real(path, argv, *rest, **kwargs)

        return spawn

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)
    monkeypatch.setattr(os, "posix_spawn", spawn_recorder(os.posix_spawn))
    monkeypatch.setattr(os, "posix_spawnp", spawn_recorder(os.posix_spawnp))
    monkeypatch.setattr(os, "system", lambda command: record(command) or pytest.fail("os.system used"))
    return argvs


def _local_remote(repo: Path, remote: str = "s3") -> dict[str, str]:
    from dvc.config import Config as DvcConfig  # noqa: PLC0415 - DVC is slow to import

    return dict(DvcConfig.load_file(str(repo / ".dvc/config.local"))["remote"].get(remote, {}))


# --------------------------------------------------------------------------- settings and files


def test_settings_make_data_dir_absolute_and_derive_grpc_ports() -> None:
    """Relative data dirs become absolute; gRPC ports default to HTTP port + 10000."""
    settings = S3ServerSettings(data_dir=Path("some/dir"), s3_port=20001, master_grpc_port=20002)

    assert settings.data_dir == Path.cwd() / "some" / "dir"
    assert settings.endpoint_url == "http://127.0.0.1:20001"
    assert settings.ports["s3_grpc_port"] == 30001
    assert settings.ports["master_grpc_port"] == 20002
    assert settings.ports["admin_grpc_port"] == settings.admin_port + 10000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"s3_port": 9333}, "are both 9333"),
        ({"s3_port": 0}, "s3_port must be in 1..65535"),
        ({"admin_port": 60000}, "admin_grpc_port must be in 1..65535"),
        ({"access_key_id": "only-one"}, "give both"),
        ({"startup_timeout_s": 0}, "startup_timeout_s must be > 0"),
    ],
)
def test_settings_reject_invalid_values(kwargs: dict[str, object], message: str) -> None:
    """Bad ports, colliding ports, half a key pair and a zero timeout are clear errors."""
    with pytest.raises(ValueError, match=message):
        S3ServerSettings(**kwargs)  # type: ignore[arg-type]


def test_command_binds_to_loopback_and_passes_every_port(tmp_path: Path) -> None:
    """The weed command binds to 127.0.0.1, disables extras and pins every port."""
    settings = S3ServerSettings(data_dir=tmp_path)

    command = build_command(settings, weed=Path("/bin/weed"))

    assert command[:4] == ["/bin/weed", "-logtostderr", f"-config_dir={tmp_path}", "mini"]
    for flag in (
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={tmp_path / 's3_identities.json'}",
        f"-filer.localSocket={tmp_path / 'filer.sock'}",
    ):
        assert flag in command
    expected_ports = {
        "-s3.port": 8333,
        "-s3.port.grpc": 18333,
        "-master.port": 9333,
        "-master.port.grpc": 19333,
        "-volume.port": 9340,
        "-volume.port.grpc": 19340,
        "-filer.port": 8888,
        "-filer.port.grpc": 18888,
        "-admin.port": 23646,
        "-admin.port.grpc": 33646,
    }
    for flag, port in expected_ports.items():
        assert f"{flag}={port}" in command
    assert not any(secret in " ".join(command) for secret in ("secret", "AWS_"))


def test_credentials_are_generated_once_and_private(tmp_path: Path) -> None:
    """Keys are generated on first use, reused afterwards and stored with mode 0600."""
    first = load_or_create_credentials(tmp_path)
    second = load_or_create_credentials(tmp_path)

    assert first == second
    assert len(first.access_key_id) == 20
    assert len(first.secret_access_key) >= 30
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600
    assert first.secret_access_key not in repr(first)


def test_invalid_credentials_file_is_a_clear_error(tmp_path: Path) -> None:
    """A broken credentials file names itself and the expected keys."""
    (tmp_path / "credentials.json").write_text(json.dumps({"access_key_id": "x"}))

    with pytest.raises(LocalS3Error, match="not a valid credentials file"):
        load_or_create_credentials(tmp_path)


def test_configure_dvc_remote_needs_a_dvc_repository(tmp_path: Path) -> None:
    """Configuring a remote outside a DVC repository says so."""
    with pytest.raises(LocalS3Error, match="not a DVC repository"):
        configure_dvc_remote(S3ServerSettings(data_dir=tmp_path / "s3"), tmp_path)


@pytest.mark.parametrize("existing_mode", [None, 0o644], ids=["new-file", "world-readable-file"])
def test_configure_dvc_remote_writes_keys_privately_and_never_on_a_command_line(
    dvc_repo: Path, tmp_path: Path, spawned_argvs: list[list[str]], existing_mode: int | None
) -> None:
    """``.dvc/config.local`` ends up mode 0600 with the keys; no spawned process saw a key."""
    config_local = dvc_repo / ".dvc/config.local"
    if existing_mode is not None:
        config_local.write_text("[core]\n    autostage = true\n", encoding="utf-8")
        config_local.chmod(existing_mode)
    settings = S3ServerSettings(data_dir=tmp_path / "s3", s3_port=18333)
    credentials = load_or_create_credentials(settings.data_dir)
    _dvc(["remote", "list"], dvc_repo)  # proves the spy sees processes spawned by this test
    spied = len(spawned_argvs)

    old_umask = os.umask(0o022)  # a plain open() would create the file world-readable
    try:
        configure_dvc_remote(settings, dvc_repo)
    finally:
        os.umask(old_umask)

    assert spied >= 1
    assert config_local.stat().st_mode & 0o777 == 0o600
    assert _local_remote(dvc_repo) == {
        "access_key_id": credentials.access_key_id,
        "secret_access_key": credentials.secret_access_key,
        "endpointurl": "http://127.0.0.1:18333",
    }
    if existing_mode is not None:
        assert "autostage = true" in config_local.read_text(encoding="utf-8")
    for argv in spawned_argvs:
        joined = " ".join(argv)
        assert credentials.access_key_id not in joined, argv
        assert credentials.secret_access_key not in joined, argv
    committed = (dvc_repo / ".dvc/config").read_text(encoding="utf-8")
    assert credentials.access_key_id not in committed
    assert credentials.secret_access_key not in committed
    # DVC itself reads the result: the merged remote has the local keys and endpoint.
    listed = _dvc(["config", "--show-origin", "remote.s3.endpointurl"], dvc_repo).stdout
    assert "config.local" in listed and "18333" in listed


def test_configure_dvc_remote_drops_a_stale_endpoint_on_the_default_port(
    dvc_repo: Path, tmp_path: Path
) -> None:
    """On the committed default port the local endpoint override is removed, the keys kept."""
    _dvc(["remote", "modify", "--local", "s3", "endpointurl", "http://127.0.0.1:9999"], dvc_repo)
    settings = S3ServerSettings(data_dir=tmp_path / "s3")

    configure_dvc_remote(settings, dvc_repo)

    local = _local_remote(dvc_repo)
    assert "endpointurl" not in local
    assert local["secret_access_key"] == load_or_create_credentials(settings.data_dir).secret_access_key
    assert (dvc_repo / ".dvc/config.local").stat().st_mode & 0o777 == 0o600


def test_configure_dvc_remote_refuses_an_undefined_remote(dvc_repo: Path, tmp_path: Path) -> None:
    """An unknown remote is a clear error and leaves no ``config.local`` behind."""
    with pytest.raises(LocalS3Error, match=r"remote 'elsewhere' is not defined.*\['s3'\]"):
        configure_dvc_remote(S3ServerSettings(data_dir=tmp_path / "s3"), dvc_repo, remote="elsewhere")
    assert not (dvc_repo / ".dvc/config.local").exists()


def test_start_refuses_a_taken_port(make_s3_settings: Callable[[], S3ServerSettings]) -> None:
    """A port held by another process stops start() before weed is launched."""
    settings = make_s3_settings()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.s3_port))
        squatter.listen()

        with pytest.raises(LocalS3Error, match=f"s3_port={settings.s3_port}"):
            start(settings)

    assert not settings.pid_file.exists()


def test_start_reports_weed_failing_with_its_log(
    make_s3_settings: Callable[[], S3ServerSettings],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """When weed exits during start-up, the error carries the tail of its log."""
    settings = make_s3_settings()
    not_a_dir = tmp_path / "not-a-directory"
    not_a_dir.write_bytes(b"")
    real_command = local_s3.build_command

    def broken_command(settings: S3ServerSettings) -> list[str]:
        return [f"-dir={not_a_dir}" if arg.startswith("-dir=") else arg for arg in real_command(settings)]

    monkeypatch.setattr(local_s3, "build_command", broken_command)

    with pytest.raises(LocalS3Error, match=r"(?s)weed exited with code \d+.*Not a valid folder"):
        start(settings)

    assert not settings.pid_file.exists()
    assert running_pid(settings) is None


def test_cli_status_reports_a_stopped_server(tmp_path: Path) -> None:
    """``status`` exits with 1 when no server runs."""
    assert local_s3.main(["status", "--dir", str(tmp_path), "--s3-port", "20999"]) == 1


# --------------------------------------------------------------------------- a real server


@pytest.mark.slow
def test_server_listens_on_loopback_only(s3_server: S3ServerSettings) -> None:
    """Every listening TCP socket of weed is on a loopback address."""
    pid = running_pid(s3_server)
    assert pid is not None
    expected = set(s3_server.ports.values())

    # S3 answers before the admin server and its worker are up; give those a moment.
    deadline = time.monotonic() + 15
    sockets = _listening_sockets(pid)
    while {port for _, port in sockets} != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        sockets = _listening_sockets(pid)

    assert {port for _, port in sockets} == expected
    assert all(address.is_loopback for address, _ in sockets), sockets


@pytest.mark.slow
def test_requests_without_valid_keys_are_refused(s3_server: S3ServerSettings) -> None:
    """Anonymous and wrongly signed requests fail; the filer port needs a JWT."""
    s3_client(s3_server).put_object(Bucket=s3_server.bucket, Key="probe/secret.bin", Body=b"x")
    anonymous = _anonymous_client(s3_server)
    wrong_key = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="AKIAWRONGWRONGWRONG0",
        aws_secret_access_key="wrong-secret",  # noqa: S106 - deliberately wrong
        config=Config(retries={"max_attempts": 1}),
    )

    for call in (
        anonymous.list_buckets,
        lambda: anonymous.get_object(Bucket=s3_server.bucket, Key="probe/secret.bin"),
        lambda: anonymous.put_object(Bucket=s3_server.bucket, Key="probe/anon", Body=b"x"),
        wrong_key.list_buckets,
    ):
        with pytest.raises(ClientError) as caught:
            call()
        assert _error_code(caught.value) in {"AccessDenied", "InvalidAccessKeyId"}

    # The filer's own HTTP port must not serve the object around the S3 gateway either.
    url = f"http://127.0.0.1:{s3_server.filer_port}/buckets/{s3_server.bucket}/probe/secret.bin"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code == 401


@pytest.mark.slow
def test_start_is_idempotent(s3_server: S3ServerSettings, weed_pids: Callable[[Path], list[int]]) -> None:
    """Starting a running server returns its pid and launches nothing."""
    pid = running_pid(s3_server)

    assert start(s3_server) == pid
    assert weed_pids(s3_server.data_dir) == [pid]
    buckets = [b["Name"] for b in s3_client(s3_server).list_buckets()["Buckets"]]
    assert s3_server.bucket in buckets


@pytest.mark.slow
def test_stop_and_restart_keep_keys_and_data(
    make_s3_settings: Callable[[], S3ServerSettings], weed_pids: Callable[[Path], list[int]]
) -> None:
    """stop() ends the process; a restart reuses the keys and keeps objects."""
    settings = make_s3_settings()
    pid = start(settings)
    credentials = load_or_create_credentials(settings.data_dir)
    s3_client(settings).put_object(Bucket=settings.bucket, Key="kept.bin", Body=b"\x00kept\xff")

    stop(settings)

    assert running_pid(settings) is None
    assert not settings.pid_file.exists()
    assert not Path(f"/proc/{pid}").exists()
    assert weed_pids(settings.data_dir) == []
    grpc_ports = [port for name, port in settings.ports.items() if "grpc" in name]
    assert not [
        p
        for p in Path(local_s3.GRPC_SOCKET_DIR).glob("seaweedfs-*.sock")
        if int(p.stem.split("-")[-1]) in grpc_ports
    ]
    stop(settings)  # stopping a stopped server is a no-op

    try:
        assert start(settings) != pid
        assert load_or_create_credentials(settings.data_dir) == credentials
        body = s3_client(settings).get_object(Bucket=settings.bucket, Key="kept.bin")["Body"]
        assert body.read() == b"\x00kept\xff"
    finally:
        stop(settings)
    assert weed_pids(settings.data_dir) == []


@pytest.mark.slow
def test_dvc_push_and_pull_round_trip(
    s3_server: S3ServerSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``dvc push`` then ``dvc pull`` from an empty cache restores identical bytes."""
    _isolate_dvc(monkeypatch, tmp_path)
    repo = tmp_path / "repo"
    repo.mkdir()
    _run([GIT, "init", "-q"], repo)
    _dvc(["init", "-q"], repo)
    _dvc(["config", "core.analytics", "false"], repo)
    _dvc(["remote", "add", "-d", "s3", f"s3://{s3_server.bucket}/dvc"], repo)
    _dvc(["remote", "modify", "s3", "endpointurl", "http://127.0.0.1:8333"], repo)
    configure_dvc_remote(s3_server, repo)
    files = {
        "data/01_raw/images/a.bin": os.urandom(1024),
        "data/01_raw/images/b.bin": os.urandom(64 * 1024),
        "data/01_raw/images/nested/c.bin": os.urandom(1024 * 1024),
        "data/01_raw/images/empty.bin": b"",
    }
    for relative, content in files.items():
        (repo / relative).parent.mkdir(parents=True, exist_ok=True)
        (repo / relative).write_bytes(content)

    _dvc(["add", "data/01_raw/images"], repo)
    _dvc(["push"], repo)
    shutil.rmtree(repo / "data/01_raw/images")
    shutil.rmtree(repo / ".dvc/cache")
    _dvc(["pull"], repo)

    for relative, content in files.items():
        assert (repo / relative).read_bytes() == content, relative
    committed = (repo / ".dvc/config").read_text(encoding="utf-8")
    local = (repo / ".dvc/config.local").read_text(encoding="utf-8")
    credentials = load_or_create_credentials(s3_server.data_dir)
    assert credentials.secret_access_key not in committed
    assert credentials.secret_access_key in local
    assert (repo / ".dvc/config.local").stat().st_mode & 0o777 == 0o600
    assert s3_server.endpoint_url in local
    listed = s3_client(s3_server).list_objects_v2(Bucket=s3_server.bucket, Prefix="dvc/")
    assert listed["KeyCount"] >= len(files)
