"""The ``upscalerjs`` family's pinned catalogue of UpscalerJS ESRGAN models, and their npm tarballs.

:func:`fetch_package` downloads a model's pinned tarball once (no Node needed), checks it against
the sha512 integrity the registry published, and keeps it in a cache directory; :mod:`.upscalerjs`
turns it into an up-scaler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ai_image_detection import pinned_files

logger = logging.getLogger(__name__)

NPM_REGISTRY = "https://registry.npmjs.org"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ai-image-detection" / "upscalerjs"
DOWNLOAD_TIMEOUT_SECONDS = 60.0

TrainingKind = Literal["GAN", "PSNR"]


class UpscalerJSError(RuntimeError):
    """A model package could not be fetched, verified or rebuilt."""


@dataclass(frozen=True)
class UpscalerJSModel:
    """One pinned UpscalerJS model: where its files are and how to run it.

    Attributes:
        package: npm package name, e.g. ``"@upscalerjs/esrgan-slim"``.
        version: Exact package version.
        model_json: Path of the TensorFlow.js ``model.json`` inside the tarball.
        scale: Up-scaling factor of the network.
        licence: Licence of the package (and of the weights, where they came from elsewhere).
        integrity: The tarball's Subresource-Integrity string as the registry publishes it
            (``npm view <package>@<version> dist.integrity``), ``"sha512-<base64>"``.
        training: ``"GAN"`` for adversarial/perceptual training, ``"PSNR"`` for pixel-loss only.
        value_range: Top of the pixel range the network reads and writes: ``255.0`` or ``1.0``
            (UpscalerJS's ``inputRange``/``outputRange`` for the model).
    """

    package: str
    version: str
    model_json: str
    scale: int
    licence: str
    integrity: str
    training: TrainingKind
    value_range: float

    @property
    def tarball_name(self) -> str:
        """File name of the tarball in the cache, the one ``npm pack`` writes."""
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    def tarball_url(self, registry: str = NPM_REGISTRY) -> str:
        """URL of the tarball on an npm registry (``dist.tarball`` of the package version)."""
        base_name = self.package.rsplit("/", 1)[-1]
        return f"{registry.rstrip('/')}/{self.package}/-/{base_name}-{self.version}.tgz"


_MIT = "MIT"
_MIT_IDEALO = "MIT (npm package); weights from idealo/image-super-resolution, Apache-2.0"
_INTEGRITY = {
    "@upscalerjs/esrgan-slim": (
        "sha512-DXtwn5SE71+pZKluN/hGeLaZv6ZylyFQYSvMqU08kKCEA5Y9Q1cIIk4EvPTPZw8VqGi2C6F02c8OjhtId4BK2w=="
    ),
    "@upscalerjs/esrgan-medium": (
        "sha512-Z8JnR87sgetPABKevasXST3FdnXhaoTu9zpXnu3KLaHYpYStVt0FD1VZS9c6jhSGMBC0H929gN9RbWl+MeisKA=="
    ),
    "@upscalerjs/esrgan-thick": (
        "sha512-Xt7LAEa1WYVdU8teye1A2J3T2ylb3ihlU/x01x1ieM7zZh5FzTll6fwmeUC82mkztWloGZM65KdSEWOmhlXOdw=="
    ),
    "@upscalerjs/esrgan-legacy": (
        "sha512-05gqt3U2BH/d2jq8Oy13QPk8JPZrK6ylhaqGiIThHiOtkld+0xDTXl6FavhObPwODq0hal6m/AlEaHKv35pD8Q=="
    ),
}


def _pinned(
    size: str,
    scale: int,
    value_range: float,
    directory: str | None = None,
    licence: str = _MIT,
    training: TrainingKind = "GAN",
) -> UpscalerJSModel:
    package = f"@upscalerjs/esrgan-{size}"
    return UpscalerJSModel(
        package=package,
        version="1.0.0",
        model_json=f"package/models/{directory or f'x{scale}'}/model.json",
        scale=scale,
        licence=licence,
        integrity=_INTEGRITY[package],
        training=training,
        value_range=value_range,
    )


# slim and medium are RDNs (UpscalerJS feeds them 0-255), thick is an RRDN (0-1). All three were
# trained by UpscalerJS with idealo's GAN trainer: the checkpoint names in the packages carry
# ``val_generator_*`` metrics, which only the generator+discriminator+VGG model reports.
# From the legacy package, idealo's published uint8-quantised "gans" (RRDN) and "psnr-small"
# (RDN) weights. Its three "div2k" RDNs are left out on purpose: they load and match
# UpscalerJS's own sample outputs, but tint every image (x2: -4 grey levels in green and blue;
# x3/x4: -6 to -20 in all channels), a colour shortcut a detector would learn instead of the
# up-sampling fingerprint.
UPSCALERJS_MODELS: dict[str, UpscalerJSModel] = {
    **{f"esrgan-slim-x{s}": _pinned("slim", s, 255.0) for s in (2, 3, 4, 8)},
    **{f"esrgan-medium-x{s}": _pinned("medium", s, 255.0) for s in (2, 3, 4, 8)},
    **{f"esrgan-thick-x{s}": _pinned("thick", s, 1.0) for s in (2, 3, 4, 8)},
    "esrgan-legacy-gans-x4": _pinned("legacy", 4, 1.0, "gans", licence=_MIT_IDEALO),
    "esrgan-legacy-psnr-small-x2": _pinned(
        "legacy", 2, 255.0, "psnr-small", licence=_MIT_IDEALO, training="PSNR"
    ),
}


def resolve_model(model: str | UpscalerJSModel) -> UpscalerJSModel:
    """Look a model up by name (models given as :class:`UpscalerJSModel` pass through).

    Args:
        model: A key of :data:`UPSCALERJS_MODELS`, or a model description.

    Returns:
        The model description.

    Raises:
        ValueError: If the name is not registered; the message lists the accepted names.
    """
    if isinstance(model, UpscalerJSModel):
        return model
    try:
        return UPSCALERJS_MODELS[model]
    except KeyError:
        raise ValueError(
            f"unknown UpscalerJS model {model!r}; accepted: {', '.join(sorted(UPSCALERJS_MODELS))}"
        ) from None


def fetch_package(
    model: str | UpscalerJSModel,
    cache_dir: Path | None = None,
    *,
    registry: str = NPM_REGISTRY,
    timeout: float = DOWNLOAD_TIMEOUT_SECONDS,
) -> Path:
    """Return the model's npm tarball from the cache, downloading and verifying it once.

    A cached tarball is verified again on every call; a tarball whose checksum does not match
    the pinned integrity is deleted and refused, never used.

    Args:
        model: A key of :data:`UPSCALERJS_MODELS`, or a model description.
        cache_dir: Where tarballs are kept; defaults to :data:`DEFAULT_CACHE_DIR`.
        registry: Base URL of the npm registry (``http`` or ``https``).
        timeout: Seconds to wait for the registry before giving up.

    Returns:
        Path of the verified tarball.

    Raises:
        ValueError: If the model name is unknown or the registry URL is not http(s).
        UpscalerJSError: If the registry cannot be reached or the checksum does not match.
    """
    spec = resolve_model(model)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR
    target = cache / spec.tarball_name
    checksum = pinned_files.Checksum("sha512", spec.integrity, sri=True)
    if target.is_file():
        pinned_files.check_cached(
            target, checksum, _integrity_mismatch(spec, f"cached file {target}"), delete=True
        )
        logger.debug("using cached %s", target)
        return target
    pinned_files.require_http(registry, "registry")
    url = spec.tarball_url(registry)
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s@%s from %s", spec.package, spec.version, url)
    try:
        pinned_files.download_verified(
            url, target, checksum, _integrity_mismatch(spec, f"download from {url}"), timeout=timeout
        )
    except pinned_files.NETWORK_ERRORS as error:
        raise UpscalerJSError(
            pinned_files.unreachable_message(
                url,
                error,
                target=target,
                checksum=spec.integrity,
                fetch_command=f"npm pack {spec.package}@{spec.version} --pack-destination {cache}",
                pinned_url=url,
                source="This needs the npm registry",
            )
        ) from error
    logger.info("cached %s", target)
    return target


def _integrity_mismatch(spec: UpscalerJSModel, source: str) -> Callable[[str], UpscalerJSError]:
    """The error for a tarball from ``source`` whose sha512 is not the pinned one (it is deleted)."""

    def error(actual: str) -> UpscalerJSError:
        return UpscalerJSError(
            f"checksum mismatch for {spec.package}@{spec.version} ({source}): expected "
            f"{spec.integrity}, got {actual}; the file was deleted, not kept. The pinned tarball "
            f"is {spec.tarball_url()}"
        )

    return error
