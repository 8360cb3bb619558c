"""Serving settings come from the environment, validated."""

from __future__ import annotations

import pytest
from conftest import settings_from
from pydantic import ValidationError


def test_defaults_and_environment_overrides() -> None:
    assert settings_from({}).max_bytes == 10_000_000
    assert settings_from({}).max_batch_size is None, "unset: measured when the service starts"
    assert settings_from({"AIID_MAX_BATCH_SIZE": "1"}).max_batch_size == 1
    settings = settings_from({"AIID_MAX_BYTES": "123", "AIID_BATCHING": "false", "OTHER": "x"})
    assert (settings.max_bytes, settings.batching) == (123, False)
    assert settings.model_fields_set == {"max_bytes", "batching"}, "what the environment set, and only that"


def test_bad_values_name_the_setting() -> None:
    with pytest.raises(ValidationError, match="max_batch_size"):
        settings_from({"AIID_MAX_BATCH_SIZE": "0"})
    with pytest.raises(ValidationError, match=r"max_bytes[\s\S]*valid integer[\s\S]*'ten'"):
        settings_from({"AIID_MAX_BYTES": "ten"})
