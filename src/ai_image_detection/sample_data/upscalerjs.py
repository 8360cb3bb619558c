"""The ``upscalerjs`` generator family: ESRGAN super-resolution models from npm, run in Keras 3.

UpscalerJS publishes its models on the npm registry as TensorFlow.js *layers* models (a
``model.json`` holding the Keras topology and a weights manifest, plus ``.bin`` weight shards),
MIT-licensed and trained with idealo's ``image-super-resolution`` code (RDN and RRDN networks).
They are taken from the registry without Node or the ``tensorflowjs`` package:

1. :func:`.upscalerjs_packages.fetch_package` downloads the pinned tarball once, checks it against
   the sha512 integrity the registry published, and keeps it in a cache directory;
2. :func:`.upscalerjs_tfjs.load_tfjs_layers_model` reads ``model.json`` and the shards straight
   from the tarball, dequantises the weights, and rebuilds the network with the Keras 3
   functional API, including UpscalerJS's two custom layers (``MultiplyBeta`` and
   ``PixelShuffle<n>x``);
3. :func:`load_upscaler` wraps the result into ``uint8 [h, w, 3] -> uint8 [s*h, s*w, 3]``, with
   the pixel range each model expects (UpscalerJS's ``inputRange``/``outputRange``: 0-255 for
   the RDN models, 0-1 for the RRDN ones).

Load a model once and call the returned up-scaler on many images; each load rebuilds the network.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
from numpy.typing import NDArray

from ai_image_detection.sample_data.upscalerjs_packages import (
    NPM_REGISTRY,
    UpscalerJSModel,
    fetch_package,
    resolve_model,
)
from ai_image_detection.sample_data.upscalerjs_tfjs import load_tfjs_layers_model

logger = logging.getLogger(__name__)


class Upscaler:
    """Callable ``uint8 [h, w, 3] -> uint8 [scale*h, scale*w, 3]`` around one rebuilt model.

    Attributes:
        spec: The model description.
        model: The Keras model (pixel range ``[0, spec.value_range]``).
    """

    def __init__(self, spec: UpscalerJSModel, model: keras.Model) -> None:
        self.spec = spec
        self.model = model

    def __call__(self, image: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Up-scale one RGB image.

        Args:
            image: Low-resolution image, ``[h, w, 3]`` uint8.

        Returns:
            The up-scaled image, ``[scale*h, scale*w, 3]`` uint8.

        Raises:
            ValueError: If the image is not a ``[h, w, 3]`` uint8 array.
        """
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            kind = image.dtype if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"image must be a uint8 numpy array; got {kind}")
        if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:  # noqa: PLR2004 - RGB
            raise ValueError(f"image must have shape [h, w, 3] (RGB); got {list(image.shape)}")
        pixels = image[np.newaxis].astype(np.float32) * np.float32(self.spec.value_range / 255.0)
        output = np.asarray(self.model.predict_on_batch(pixels))[0]
        scaled = np.clip(output, 0.0, self.spec.value_range) * np.float32(255.0 / self.spec.value_range)
        return np.rint(scaled).astype(np.uint8)


def load_upscaler(
    model: str, cache_dir: Path | None = None, *, registry: str = NPM_REGISTRY
) -> Callable[[NDArray[np.uint8]], NDArray[np.uint8]]:
    """Fetch (once) and rebuild an UpscalerJS model, returning it as an image up-scaler.

    Args:
        model: A key of :data:`.upscalerjs_packages.UPSCALERJS_MODELS`, e.g. ``"esrgan-slim-x2"``.
        cache_dir: Where npm tarballs are cached; defaults to
            :data:`.upscalerjs_packages.DEFAULT_CACHE_DIR`.
        registry: Base URL of the npm registry.

    Returns:
        A function from a ``[h, w, 3]`` uint8 image to its ``[scale*h, scale*w, 3]`` uint8
        up-scaling (an :class:`Upscaler`).

    Raises:
        ValueError: If the model name is unknown (the message lists the accepted names).
        UpscalerJSError: If the package cannot be fetched, verified or rebuilt.
    """
    spec = resolve_model(model)
    tarball = fetch_package(spec, cache_dir, registry=registry)
    network = load_tfjs_layers_model(tarball, spec.model_json)
    logger.info(
        "loaded UpscalerJS %s (%s@%s, x%d, %d parameters)",
        model,
        spec.package,
        spec.version,
        spec.scale,
        network.count_params(),
    )
    return Upscaler(spec, network)
