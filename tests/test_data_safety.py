"""A user's data is never deleted: `make clean`, DVC and the pipelines touch only what the project generated.

The session test (``test_session.py``) runs ``sample_data`` and the default ``kedro run`` next to
the same user files and checks them too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.framework.project import configure_project

from ai_image_detection.pipeline_registry import register_pipelines

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


def write_files(root: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (path relative to ``root``: content) under ``root``."""
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
def test_make_clean_keeps_user_raw_data_byte_identical(tmp_path: Path) -> None:
    write_files(tmp_path, {**USER_FILES, **dict.fromkeys(GENERATED_FILES, b"generated")})
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


def _written_paths() -> list[str]:
    """Every path a DVC stage declares as its output, and every catalog path a pipeline writes."""
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    outs = [
        next(iter(out)) if isinstance(out, dict) else out
        for stage in stages.values()
        for out in stage["outs"]
    ]
    configure_project("ai_image_detection")
    catalog = OmegaConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local")[
        "catalog"
    ]
    written = set().union(*(pipeline.all_outputs() for pipeline in register_pipelines().values()))
    for name in written & set(catalog):
        entry = catalog[name]
        entry = entry.get("dataset", entry) if isinstance(entry.get("dataset"), dict) else entry
        outs += [entry[key] for key in ("filepath", "path") if key in entry]
    return outs


def test_nothing_is_written_to_raw_data_outside_the_sample_folder() -> None:
    raw, sample = Path("data/01_raw"), Path("data/01_raw/sample")
    claimed = [path for path in _written_paths() if Path(path).is_relative_to(raw)]
    assert claimed, "the sample set is written somewhere under data/01_raw"
    assert [path for path in claimed if not Path(path).is_relative_to(sample)] == []


@pytest.mark.slow
def test_dvc_repro_and_checkout_keep_user_raw_data_byte_identical(tmp_path: Path) -> None:
    """A clone with the user's files in ``data/01_raw``: ``dvc repro sample_data``, then ``dvc checkout``."""
    tracked = (
        subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        if (PROJECT_ROOT / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, tmp_path / name)
    # the smallest sample set the stage can make: what it holds does not matter here, only where
    params = tmp_path / "conf" / "base" / "parameters_sample_data.yml"
    sample_data = yaml.safe_load(params.read_text())
    sample_data["sample_data"] |= {
        "size": "small",
        "sizes": {"small": {"pairs": 12, "registries": ["pypi"], "families": {"simulator": 1}}},
        "min_distinct_photos": 1,
    }
    params.write_text(yaml.safe_dump(sample_data))
    write_files(tmp_path, USER_FILES)
    binaries = str(Path(sys.executable).parent)
    environment = {
        **os.environ,
        "PATH": f"{binaries}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    for command in (
        ["git", "init", "--quiet"],
        ["dvc", "repro", "sample_data"],
        ["dvc", "checkout", "--force", "sample_data"],
    ):
        done = subprocess.run(
            command, cwd=tmp_path, env=environment, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        assert {name: (tmp_path / name).read_bytes() for name in USER_FILES} == USER_FILES, command
    # every stage: the later ones never ran in this clone, so their outputs are missing from the
    # cache; that is an error for them, and never a reason to touch anything else
    subprocess.run(
        ["dvc", "checkout", "--force"], cwd=tmp_path, env=environment, capture_output=True, check=False
    )
    assert {name: (tmp_path / name).read_bytes() for name in USER_FILES} == USER_FILES
    assert (tmp_path / "data" / "01_raw" / "sample" / "train.csv").exists(), "the sample set was made"
