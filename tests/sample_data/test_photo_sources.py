"""Photo sources: wheels and Debian packages read without installing, apt missing handled."""

from __future__ import annotations

import io
import logging
import tarfile
import zipfile
from pathlib import Path

import pytest

from ai_image_detection.sample_data import photo_sources
from ai_image_detection.sample_data.photo_sources import PhotoSource, PhotoSourceError, load_photos

PHOTO = b"\xff\xd8\xff\xe0 not really a jpeg, bytes are bytes here"


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def make_deb(path: Path, files: dict[str, bytes]) -> None:
    """Write a real ``.deb`` (ar archive with debian-binary, control and data tarballs)."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo("." + name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    control = io.BytesIO()
    with tarfile.open(fileobj=control, mode="w:gz"):
        pass
    path.write_bytes(
        b"!<arch>\n"
        + _ar_member("debian-binary", b"2.0\n")
        + _ar_member("control.tar.gz", control.getvalue())
        + _ar_member("data.tar.xz", data.getvalue())
    )


def debian_source(members: tuple[str, ...]) -> PhotoSource:
    return PhotoSource("debian", "photos-data", None, members, "CC0", "/usr/share/doc/photos-data/copyright")


def test_reads_members_of_a_debian_package_without_dpkg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package_dir = tmp_path / "debian" / "photos-data"
    package_dir.mkdir(parents=True)
    make_deb(
        package_dir / "photos-data_1%3a2.0-1_all.deb",
        {"/usr/share/photos/a.jpg": PHOTO, "/usr/share/x.txt": b"x"},
    )
    monkeypatch.setattr(photo_sources, "_apt_available", lambda: True)

    photos = load_photos([debian_source(("/usr/share/photos/a.jpg",))], tmp_path)

    assert [(p.photo_id, p.version, p.data) for p in photos] == [("photos-data:a.jpg", "1:2.0-1", PHOTO)]
    assert not list(package_dir.glob("*.deb")), "the .deb is removed once its members are extracted"
    again = load_photos([debian_source(("/usr/share/photos/a.jpg",))], tmp_path)
    assert again == photos, "a second load reads the extracted cache"


def test_missing_debian_member_is_skipped_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    package_dir = tmp_path / "debian" / "photos-data"
    package_dir.mkdir(parents=True)
    make_deb(package_dir / "photos-data_1.0_all.deb", {"/usr/share/photos/a.jpg": PHOTO})
    monkeypatch.setattr(photo_sources, "_apt_available", lambda: True)
    with caplog.at_level(logging.WARNING):
        photos = load_photos([debian_source(("/usr/share/photos/missing.jpg",))], tmp_path)
    assert photos == []
    assert "missing.jpg" in caplog.text


def test_without_apt_debian_sources_fall_back_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(photo_sources, "_apt_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        photos = load_photos([debian_source(("/usr/share/photos/a.jpg",))], tmp_path)
    assert photos == []
    assert "apt-get is not available" in caplog.text
    assert "falls back to the PyPI photos" in caplog.text


def _cached_wheel(cache_dir: Path, package: str, version: str, files: dict[str, bytes]) -> None:
    target = cache_dir / "pypi" / f"{package}-{version}"
    target.mkdir(parents=True)
    with zipfile.ZipFile(target / f"{package}-{version}-py3-none-any.whl", "w") as wheel:
        for name, content in files.items():
            wheel.writestr(name, content)


def test_reads_members_of_a_cached_wheel(tmp_path: Path) -> None:
    _cached_wheel(tmp_path, "photos", "1.0", {"photos/data/a.jpg": PHOTO})
    source = PhotoSource("pypi", "photos", "1.0", ("photos/data/a.jpg",), "MIT", "LICENSE")
    [photo] = load_photos([source], tmp_path)
    assert (photo.photo_id, photo.registry, photo.data) == ("photos:a.jpg", "pypi", PHOTO)


def test_a_missing_wheel_member_is_an_error(tmp_path: Path) -> None:
    _cached_wheel(tmp_path, "photos", "1.0", {"photos/data/a.jpg": PHOTO})
    source = PhotoSource("pypi", "photos", "1.0", ("photos/data/b.jpg",), "MIT", "LICENSE")
    with pytest.raises(PhotoSourceError, match=r"does not contain \['photos/data/b.jpg'\]"):
        load_photos([source], tmp_path)


def test_pypi_sources_must_be_pinned(tmp_path: Path) -> None:
    source = PhotoSource("pypi", "photos", None, ("photos/a.jpg",), "MIT", "LICENSE")
    with pytest.raises(PhotoSourceError, match="needs an exact version"):
        load_photos([source], tmp_path)
