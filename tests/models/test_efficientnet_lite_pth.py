"""Reading PyTorch ``.pth`` state dicts without PyTorch: both formats, and nothing but tensors.

The ``.pth`` files here are written by the tests themselves, in PyTorch's zip and legacy formats,
with plain :mod:`pickle` and :mod:`zipfile`.
"""

from __future__ import annotations

import dataclasses
import io
import math
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from ai_image_detection.models.efficientnet_lite_architecture import LiteArchitecture, LiteStage
from ai_image_detection.models.efficientnet_lite_pth import (
    LiteWeightsError,
    UnsafePickleError,
    load_torch_state_dict,
)

TINY = LiteArchitecture(
    stem_filters=8,
    stages=(
        LiteStage(kernel_size=3, strides=1, expand_ratio=1, output_filters=8, num_repeats=1),
        LiteStage(kernel_size=5, strides=2, expand_ratio=4, output_filters=16, num_repeats=2),
    ),
    head_filters=1280,  # keras-hub 0.32 leaves num_features out of a saved preset's config
    image_size=64,
)


# --------------------------------------------------------------------------------------------
# Writing PyTorch files without PyTorch
# --------------------------------------------------------------------------------------------


class _Global:
    """A global (``module.name``) to write into a pickle; it need not be importable here."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object) -> None:
        """Never called: pickle only needs a reduce function to be callable."""
        raise TypeError(f"{self.module}.{self.name} is a stand-in")


@dataclasses.dataclass(eq=False)
class _Storage:
    key: str
    data: NDArray[Any]  # flat, little-endian

    @property
    def type_name(self) -> str:
        return {"<f4": "FloatStorage", "<i8": "LongStorage"}[self.data.dtype.str]


@dataclasses.dataclass(eq=False)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def __reduce_ex__(self, protocol: object) -> tuple[object, ...]:
        rebuild = _Global("torch._utils", "_rebuild_tensor_v2")
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, OrderedDict())


class _Evil:
    """An object whose unpickling would run a shell command."""

    def __init__(self, module: str, name: str, argument: str) -> None:
        self.function, self.argument = _Global(module, name), argument

    def __reduce_ex__(self, protocol: object) -> tuple[object, ...]:
        return self.function, (self.argument,)


class _TorchPickler(pickle._Pickler):  # the pure-Python pickler lets _Global write GLOBAL opcodes
    """Pickles like ``torch.save``: protocol 2, storages as persistent ids."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_global_stand_in(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())  # type: ignore[attr-defined]
        self.memoize(obj)  # type: ignore[attr-defined]

    dispatch[_Global] = save_global_stand_in

    def persistent_id(self, obj: object) -> tuple[object, ...] | None:
        if isinstance(obj, _Storage):
            return ("storage", _Global("torch", obj.type_name), obj.key, "cpu", obj.data.size)
        return None


def torch_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _as_tensors(state: dict[str, NDArray[Any]]) -> tuple[OrderedDict[str, _Tensor], list[_Storage]]:
    """Lay a state dict out in storages with strides and offsets, as the real files do.

    Conv kernels are kept in HWIO memory order (strided views, like the TF-converted wheels),
    each BatchNorm's four vectors share one storage (at offsets), the rest is contiguous.
    """
    tensors: OrderedDict[str, _Tensor] = OrderedDict()
    storages: list[_Storage] = []

    def new_storage(data: NDArray[Any]) -> _Storage:
        storages.append(_Storage(str(len(storages)), np.ascontiguousarray(data).ravel()))
        return storages[-1]

    for key, value in state.items():
        module, _, name = key.rpartition(".")
        if name in ("bias", "running_mean", "running_var") and f"{module}.running_mean" in state:
            continue  # written with the BatchNorm's weight, in its shared storage
        if name == "weight" and f"{module}.running_mean" in state:
            parts = [state[f"{module}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")]
            shared = new_storage(np.concatenate(parts))
            for number, name in enumerate(("weight", "bias", "running_mean", "running_var")):
                tensors[f"{module}.{name}"] = _Tensor(shared, number * value.size, value.shape, (1,))
        elif value.ndim == 4:
            out, cin, kh, kw = value.shape
            storage = new_storage(value.transpose(2, 3, 1, 0))
            tensors[key] = _Tensor(storage, 0, value.shape, (1, out, kw * cin * out, cin * out))
        else:
            contiguous = tuple(math.prod(value.shape[axis + 1 :]) for axis in range(value.ndim))
            tensors[key] = _Tensor(new_storage(value), 0, value.shape, contiguous)
    return tensors, storages


def write_torch_zip(path: Path, state: dict[str, NDArray[Any]]) -> None:
    """``torch.save(state_dict, path)`` in the zip format (PyTorch >= 1.6)."""
    tensors, storages = _as_tensors(state)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", torch_pickle(tensors))
        archive.writestr("archive/byteorder", "little")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.data.tobytes())
        archive.writestr("archive/version", "3\n")


def legacy_bytes(obj: object, storages: list[_Storage]) -> bytes:
    """The legacy stream: magic, protocol, sys info, the object, storage keys, raw storages."""
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    parts = [
        torch_pickle(0x1950A86A20F9469CFC6C),
        torch_pickle(1001),
        torch_pickle(sys_info),
        torch_pickle(obj),
    ]
    parts.append(torch_pickle([storage.key for storage in storages]))
    for storage in storages:
        parts += [np.int64(storage.data.size).astype("<i8").tobytes(), storage.data.tobytes()]
    return b"".join(parts)


def write_torch_legacy(path: Path, state: dict[str, NDArray[Any]]) -> None:
    """``torch.save(..., _use_new_zipfile_serialization=False)``: the format of the PyPI wheels."""
    path.write_bytes(legacy_bytes(*_as_tensors(state)))


def tiny_state_dict(
    architecture: LiteArchitecture, classes: int = 5, seed: int = 0
) -> dict[str, NDArray[Any]]:
    """Random lukemelas-layout weights for ``architecture`` (BatchNorm statistics included)."""
    rng = np.random.default_rng(seed)
    state: dict[str, NDArray[Any]] = {}

    def conv(key: str, out: int, cin: int, kernel: int) -> None:
        scale = np.sqrt(2.0 / (cin * kernel * kernel))
        state[f"{key}.weight"] = (rng.normal(size=(out, cin, kernel, kernel)) * scale).astype("<f4")

    def batch_norm(key: str, channels: int) -> None:
        state[f"{key}.weight"] = rng.uniform(0.5, 1.5, channels).astype("<f4")
        state[f"{key}.bias"] = rng.normal(0, 0.2, channels).astype("<f4")
        state[f"{key}.running_mean"] = rng.normal(0, 0.2, channels).astype("<f4")
        state[f"{key}.running_var"] = rng.uniform(0.5, 2.0, channels).astype("<f4")
        state[f"{key}.num_batches_tracked"] = np.array(1000, dtype="<i8")

    conv("_conv_stem", architecture.stem_filters, 3, 3)
    batch_norm("_bn0", architecture.stem_filters)
    channels, index = architecture.stem_filters, 0
    for stage in architecture.stages:
        for _ in range(stage.num_repeats):
            key, hidden = f"_blocks.{index}", channels * stage.expand_ratio
            if stage.expand_ratio != 1:
                conv(f"{key}._expand_conv", hidden, channels, 1)
                batch_norm(f"{key}._bn0", hidden)
            state[f"{key}._depthwise_conv.weight"] = rng.normal(
                0, 0.4, (hidden, 1, stage.kernel_size, stage.kernel_size)
            ).astype("<f4")
            batch_norm(f"{key}._bn1", hidden)
            conv(f"{key}._project_conv", stage.output_filters, hidden, 1)
            batch_norm(f"{key}._bn2", stage.output_filters)
            channels, index = stage.output_filters, index + 1
    conv("_conv_head", architecture.head_filters, channels, 1)
    batch_norm("_bn1", architecture.head_filters)
    state["_fc.weight"] = (rng.normal(size=(classes, architecture.head_filters)) * 0.05).astype("<f4")
    state["_fc.bias"] = rng.normal(0, 0.1, classes).astype("<f4")
    return state


# --------------------------------------------------------------------------------------------
# Reading PyTorch files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [write_torch_zip, write_torch_legacy], ids=["zip", "legacy"])
def test_state_dict_reads_back_exactly_from_both_formats(tmp_path: Path, writer: Any) -> None:
    state = tiny_state_dict(TINY)
    writer(tmp_path / "tiny.pth", state)

    loaded = load_torch_state_dict((tmp_path / "tiny.pth").read_bytes())

    assert list(loaded) == list(state)
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@pytest.mark.parametrize(
    ("writer", "module", "name"),
    [(write_torch_zip, "os", "system"), (write_torch_legacy, "builtins", "exec")],
    ids=["zip-os.system", "legacy-builtins.exec"],
)
def test_unpickler_refuses_unexpected_globals(tmp_path: Path, writer: Any, module: str, name: str) -> None:
    marker = tmp_path / "pwned"
    payload = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w').close()"
    path = tmp_path / "evil.pth"
    if writer is write_torch_zip:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", torch_pickle({"weight": _Evil(module, name, payload)}))
    else:
        path.write_bytes(legacy_bytes({"weight": _Evil(module, name, payload)}, []))

    with pytest.raises(UnsafePickleError, match=rf"refusing to load global {module}\.{name}"):
        load_torch_state_dict(path.read_bytes(), source="evil.pth")
    assert not marker.exists()


def test_unpickler_refuses_a_tensor_reaching_past_its_storage(tmp_path: Path) -> None:
    storage = _Storage("0", np.zeros(4, dtype="<f4"))
    path = tmp_path / "bad.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", torch_pickle(OrderedDict(w=_Tensor(storage, 2, (4,), (1,)))))
        archive.writestr("archive/data/0", storage.data.tobytes())

    with pytest.raises(LiteWeightsError, match="reaches element 5 of storage 0, which has 4"):
        load_torch_state_dict(path.read_bytes())
