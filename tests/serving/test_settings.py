"""Serving settings come from the environment, validated."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ai_image_detection.serving.settings import ServingSettings


def test_defaults_and_environment_overrides() -> None:
    assert ServingSettings.from_env({}).max_bytes == 10_000_000
    settings = ServingSettings.from_env({"AIID_MAX_BYTES": "123", "AIID_BATCHING": "false", "OTHER": "x"})
    assert (settings.max_bytes, settings.batching) == (123, False)


def test_bad_values_name_the_setting() -> None:
    with pytest.raises(ValidationError, match="max_batch_size"):
        ServingSettings.from_env({"AIID_MAX_BATCH_SIZE": "1"})
