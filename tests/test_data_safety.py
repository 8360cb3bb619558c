"""A user's data is never deleted: `make clean` removes only what the project generated."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
USER_FILES = {
    "data/01_raw/train.csv": b"file_name,label\ntrain_data/a.jpg,1\n",
    "data/01_raw/train_data/a.jpg": b"\xff\xd8 user photo",
    "data/01_raw/human/holiday/b.png": b"\x89PNG user photo",
    "data/01_raw/ai/c.webp": b"RIFF user image",
    "data/01_raw/sample_notes.txt": b"next to the sample folder, not in it",
}
GENERATED_FILES = [
    "data/01_raw/sample/train.csv",
    "data/01_raw/sample/train_data/x.jpg",
    "data/03_primary/image_manifest.parquet",
    "data/06_models/detector.onnx",
    "data/08_reporting/evaluation/small_cnn.json",
]


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_clean_keeps_user_raw_data_byte_identical(tmp_path: Path) -> None:
    for name, content in USER_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    for name in GENERATED_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"generated")
    for layer in ("02_intermediate", "08_reporting"):
        (tmp_path / "data" / layer).mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / layer / ".gitkeep").write_bytes(b"")

    result = subprocess.run(
        [str(shutil.which("make")), "-f", str(PROJECT_ROOT / "Makefile"), "clean"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert {name: (tmp_path / name).read_bytes() for name in USER_FILES} == USER_FILES
    assert [name for name in GENERATED_FILES if (tmp_path / name).exists()] == []
    assert (tmp_path / "data" / "08_reporting" / ".gitkeep").exists(), "the layer folders stay"
