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


def test_a_write_that_fails_half_way_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "detector.onnx"
    target.write_bytes(b"previous")
    dataset = BytesDataset(str(target))
    real_open = dataset._fs.open

    def open_then_fail(path: str, mode: str = "rb", **kwargs: object) -> object:
        handle = real_open(path, mode, **kwargs)
        if "w" in mode:
            handle.write(b"half of the new ")  # the disk fills up here
            raise OSError(28, "No space left on device")
        return handle

    monkeypatch.setattr(dataset._fs, "open", open_then_fail)
    with pytest.raises(DatasetError, match="No space left"):
        dataset.save(b"half of the new model, never finished")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detector.onnx"], "no partial file is left"


def test_a_refused_save_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "detector.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(DatasetError, match="saves bytes, got str"):
        BytesDataset(str(target)).save("not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"previous"
