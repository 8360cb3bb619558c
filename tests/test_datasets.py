"""The catalog's own datasets: a file's bytes, written all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from kedro.io import DatasetError

from ai_image_detection.datasets import BytesDataset


def test_bytes_round_trip_and_replace_the_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "models" / "detector.onnx"
    dataset = BytesDataset(str(target))
    dataset.save(b"first version, longer than the second")
    dataset.save(b"second")
    assert dataset.load() == b"second" == target.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["detector.onnx"], "no partial file is left"


def test_a_refused_save_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "detector.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(DatasetError, match="saves bytes, got str"):
        BytesDataset(str(target)).save("not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"previous"
