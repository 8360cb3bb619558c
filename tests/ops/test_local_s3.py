"""Tests of ``ops/local-s3.sh``: a real SeaweedFS server, and a DVC remote on it."""

from __future__ import annotations

import ipaddress
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
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from conftest import LocalS3

GIT = shutil.which("git") or "git"
LOCAL_S3_SCRIPT = Path(__file__).resolve().parents[2] / "ops" / "local-s3.sh"
# every program the script runs; a shim of each logs its argument vector
_SCRIPT_PROGRAMS = ("cat", "dirname", "grep", "mkdir", "od", "python", "rm", "sed", "seq", "setsid", "sleep")
_SCRIPT_PROGRAMS += ("tail", "tr", "weed")
_SHIM = '#!/bin/bash\nprintf "%s " "${0##*/}" "$@" >>"$ARGV_LOG"; echo >>"$ARGV_LOG"\n'
_SHIM += 'exec "$(PATH=${PATH//"${0%/*}:"/} command -v "${0##*/}")" "$@"\n'


def _listening_sockets(pid: int) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            inodes.add(os.readlink(fd).removeprefix("socket:[").removesuffix("]"))
        except OSError:  # closed meanwhile
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text(encoding="utf-8").splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)  # each 32-bit word in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.append((ipaddress.ip_address(words), int(port, 16)))
    return found


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _dvc_repo(path: Path, monkeypatch: pytest.MonkeyPatch, *, remote: str = "s3") -> Path:
    """A git + DVC repository whose committed remote points at the default local endpoint."""
    for name in [key for key in os.environ if key.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name in ("DVC_SITE_CACHE_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SYSTEM_CONFIG_DIR"):
        monkeypatch.setenv(name, str(path.parent / name.lower()))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    path.mkdir(parents=True)
    _run([GIT, "init", "-q"], path)
    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "init", "-q"], path)
    _run([*dvc, "remote", "add", "-d", remote, "s3://ai-image-detection/dvc"], path)
    _run([*dvc, "remote", "modify", remote, "endpointurl", "http://127.0.0.1:8333"], path)
    return path


def test_status_and_usage(make_local_s3: Callable[[], LocalS3]) -> None:
    """``status`` exits 1 when no server runs; an unknown action prints the usage."""
    server = make_local_s3()

    assert (server.run("status").returncode, server.run("status").stdout) == (1, "not running\n")
    assert server.run("restart").returncode == 2
    assert "usage:" in server.run("restart").stderr


def test_start_refuses_a_taken_port(
    make_local_s3: Callable[[], LocalS3], weed_pids: Callable[[Path], list[int]]
) -> None:
    """A port held by another process makes weed fail; start reports weed's reason, leaves nothing running."""
    server = make_local_s3()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.ports["LOCAL_S3_PORT"]))
        squatter.listen()

        result = server.run("start")

    assert result.returncode == 1
    assert f"port {server.ports['LOCAL_S3_PORT']}" in result.stderr
    assert "weed exited before S3 answered" in result.stderr
    assert not (server.data_dir / "weed.pid").exists()
    assert weed_pids(server.data_dir) == []


def test_start_refuses_a_credentials_file_without_keys(
    make_local_s3: Callable[[], LocalS3], weed_pids: Callable[[Path], list[int]]
) -> None:
    """Empty keys would start an open server; a broken credentials file stops start before weed runs."""
    server = make_local_s3()
    server.data_dir.mkdir(parents=True)
    (server.data_dir / "credentials").write_text("AWS_ACCESS_KEY_ID=only-an-id\n", encoding="utf-8")

    result = server.run("start")

    assert result.returncode == 1
    assert f"no keys in {server.data_dir / 'credentials'}" in result.stderr
    assert weed_pids(server.data_dir) == []


# --------------------------------------------------------------------------- the session's server


@pytest.mark.slow
def test_server_listens_on_loopback_only(s3_server: LocalS3) -> None:
    """The server listens on exactly the five configured ports and their gRPC twins, all on 127.0.0.1."""
    ports = set(s3_server.ports.values())
    expected = ports | {port + 10000 for port in ports}

    # S3 answers before the admin server's worker is up; give it a moment.
    deadline = time.monotonic() + 15
    while {port for _, port in _listening_sockets(s3_server.pid)} != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    sockets = _listening_sockets(s3_server.pid)

    assert {port for _, port in sockets} == expected
    assert all(address.is_loopback for address, _ in sockets), sockets


@pytest.mark.slow
def test_keys_are_private_and_never_on_weeds_command_line(s3_server: LocalS3) -> None:
    """Generated keys and JWT keys live in 0600 files in a 0700 dir; weed's argv holds neither."""
    keys = s3_server.credentials
    argv = Path(f"/proc/{s3_server.pid}/cmdline").read_bytes().decode().split("\0")

    assert len(keys["AWS_ACCESS_KEY_ID"]) == 20 and len(keys["AWS_SECRET_ACCESS_KEY"]) == 40
    assert s3_server.data_dir.stat().st_mode & 0o777 == 0o700
    for name in ("credentials", "security.toml", "weed.log", "weed.pid"):
        assert (s3_server.data_dir / name).stat().st_mode & 0o777 == 0o600, name
    assert "-master.telemetry=false" in argv and "-ip.bind=127.0.0.1" in argv
    assert not [arg for arg in argv if any(key in arg for key in keys.values())]
    assert Path(f"/proc/{s3_server.pid}/environ").stat().st_mode & 0o077 == 0  # where weed reads them


@pytest.mark.slow
def test_requests_without_valid_keys_are_refused(s3_server: LocalS3) -> None:
    """Anonymous and wrongly signed requests fail; the filer port needs a JWT."""
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="probe/secret.bin", Body=b"x")
    anonymous = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    wrong_key = s3_server.client("AKIAWRONGWRONGWRONG0", "wrong-secret")

    for call in (
        anonymous.list_buckets,
        lambda: anonymous.get_object(Bucket=s3_server.bucket, Key="probe/secret.bin"),
        lambda: anonymous.put_object(Bucket=s3_server.bucket, Key="probe/anon", Body=b"x"),
        wrong_key.list_buckets,
    ):
        with pytest.raises(ClientError) as caught:
            call()
        assert _error_code(caught.value) in {"AccessDenied", "InvalidAccessKeyId"}

    filer = s3_server.ports["LOCAL_S3_FILER_PORT"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            f"http://127.0.0.1:{filer}/buckets/{s3_server.bucket}/probe/secret.bin", timeout=5
        )
    assert refused.value.code == 401


@pytest.mark.slow
def test_start_is_idempotent(s3_server: LocalS3, weed_pids: Callable[[Path], list[int]]) -> None:
    """Starting a running server reports it and launches nothing; the bucket exists."""
    pid = s3_server.pid

    result = s3_server.run("start")

    assert result.returncode == 0, result.stderr
    assert f"already running (pid {pid})" in result.stdout
    assert weed_pids(s3_server.data_dir) == [pid]
    assert s3_server.bucket in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert s3_server.run("status").stdout == f"running (pid {pid}) at {s3_server.endpoint_url}\n"


@pytest.mark.slow
def test_start_refuses_an_undefined_dvc_remote(
    s3_server: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a DVC repository without the remote ``s3`` start says so and writes no keys."""
    repo = _dvc_repo(tmp_path / "repo", monkeypatch, remote="elsewhere")

    result = s3_server.run("start", cwd=repo)

    assert result.returncode == 1
    assert "DVC remote 's3' is not defined in .dvc/config (defined: ['elsewhere'])" in result.stderr
    assert not (repo / ".dvc/config.local").exists()


@pytest.mark.slow
def test_dvc_push_and_pull_round_trip(
    s3_server: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``start`` writes the keys to a new 0600 ``.dvc/config.local``; push, then pull into an empty cache."""
    repo = _dvc_repo(tmp_path / "repo", monkeypatch)
    started = s3_server.run("start", cwd=repo)
    assert started.returncode == 0, started.stderr
    files = {
        "data/01_raw/images/a.bin": os.urandom(1024),
        "data/01_raw/images/b.bin": os.urandom(64 * 1024),
        "data/01_raw/images/nested/c.bin": os.urandom(1024 * 1024),
        "data/01_raw/images/empty.bin": b"",
    }
    for relative, content in files.items():
        (repo / relative).parent.mkdir(parents=True, exist_ok=True)
        (repo / relative).write_bytes(content)

    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "add", "data/01_raw/images"], repo)
    _run([*dvc, "push"], repo)
    shutil.rmtree(repo / "data/01_raw/images")
    shutil.rmtree(repo / ".dvc/cache")
    _run([*dvc, "pull"], repo)

    for relative, content in files.items():
        assert (repo / relative).read_bytes() == content, relative
    secret = s3_server.credentials["AWS_SECRET_ACCESS_KEY"]
    assert secret not in (repo / ".dvc/config").read_text(encoding="utf-8")
    assert secret in (repo / ".dvc/config.local").read_text(encoding="utf-8")
    assert (repo / ".dvc/config.local").stat().st_mode & 0o777 == 0o600
    assert s3_server.endpoint_url in _run([*dvc, "config", "--show-origin", "remote.s3.endpointurl"], repo)
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="dvc/")
    assert listed["KeyCount"] >= len(files)


# --------------------------------------------------------------------------- servers of their own


@pytest.mark.slow
def test_stop_and_restart_keep_keys_and_data(
    make_local_s3: Callable[[], LocalS3], weed_pids: Callable[[Path], list[int]]
) -> None:
    """``stop`` ends weed by its pid, no socket left in /tmp; a restart reuses the keys and keeps objects."""
    server = make_local_s3()
    assert server.run("start").returncode == 0
    pid, keys = server.pid, server.credentials
    server.client().put_object(Bucket=server.bucket, Key="kept.bin", Body=b"\x00kept\xff")

    assert server.run("stop").stdout == f"stopped local S3 (pid {pid})\n"

    assert not (server.data_dir / "weed.pid").exists()
    assert weed_pids(server.data_dir) == []
    ports = {str(port) for port in server.ports.values()} | {str(p + 10000) for p in server.ports.values()}
    assert not [p for p in Path("/tmp").glob("seaweedfs-*.sock") if p.stem.rsplit("-", 1)[-1] in ports]  # noqa: S108
    assert server.run("stop").returncode == 0  # stopping a stopped server is a no-op

    assert server.run("start").returncode == 0
    assert server.pid != pid
    assert server.credentials == keys
    assert server.client().get_object(Bucket=server.bucket, Key="kept.bin")["Body"].read() == b"\x00kept\xff"
    server.run("stop")
    assert weed_pids(server.data_dir) == []


@pytest.mark.slow
def test_given_keys_reach_weed_and_dvc_but_no_command_line(
    make_local_s3: Callable[[], LocalS3], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOCAL_S3_* keys (not the caller's AWS_*) serve S3 and go to a narrowed config.local, in no argv."""
    repo = _dvc_repo(tmp_path / "repo", monkeypatch)
    config_local = repo / ".dvc/config.local"
    config_local.write_text("[core]\n    autostage = true\n", encoding="utf-8")
    config_local.chmod(0o644)
    (repo / "ops").mkdir()
    script = Path(shutil.copy2(LOCAL_S3_SCRIPT, repo / "ops"))  # its ../.venv/bin goes first on PATH
    (repo / ".venv/bin").mkdir(parents=True)
    for program in _SCRIPT_PROGRAMS:
        (repo / ".venv/bin" / program).write_text(_SHIM, encoding="utf-8")
        (repo / ".venv/bin" / program).chmod(0o755)
    argv_log = tmp_path / "argv.log"
    given = {
        "LOCAL_S3_ACCESS_KEY_ID": "LOCALKEYID0123456789",
        "LOCAL_S3_SECRET_ACCESS_KEY": "local-secret-" * 3,
    }
    caller = {"AWS_ACCESS_KEY_ID": "AKIACALLERCALLER0000", "AWS_SECRET_ACCESS_KEY": "caller-secret"}
    server = make_local_s3()
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"

    result = server.run(
        "start", cwd=repo, script=script, env={**given, **caller, "ARGV_LOG": str(argv_log), "PATH": path}
    )

    assert result.returncode == 0, result.stderr
    spawned = argv_log.read_text(encoding="utf-8")
    assert "setsid weed -config_dir=" in spawned and "python - " in spawned  # the shims saw the programs
    for secret in (*given.values(), *caller.values()):
        assert secret not in spawned
    assert not (server.data_dir / "credentials").exists()
    server.client(*given.values()).head_bucket(Bucket=server.bucket)
    with pytest.raises(ClientError):
        server.client(*caller.values()).list_buckets()
    assert config_local.stat().st_mode & 0o777 == 0o600
    local = config_local.read_text(encoding="utf-8")
    assert "autostage = true" in local
    assert all(value in local for value in (*given.values(), server.endpoint_url))
