"""The prediction log: one JSON line per verdict, written off the request path, bounded on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_image_detection.serving.prediction_log import LOG_FILE_NAME, PredictionLog, PredictionRecord, utc_now


def record(number: int) -> PredictionRecord:
    """A verdict's line, numbered through its id."""
    return PredictionRecord(
        time=utc_now(),
        prediction_id=f"p-{number:06d}",
        endpoint="predict",
        model_name="ai-image-detector",
        model_version="7",
        probability_ai=0.25,
        label="human",
        decided_by="pixels",
        threshold_human=0.4,
        threshold_ai=0.6,
        closest_family=None,
        closest_family_probability=None,
        width=640,
        height=480,
        format="JPEG",
        bytes=51_200,
        tiles=4,
        mean_luma=120.5,
        std_luma=40.25,
        latency_ms=35.0,
        provenance_sources=["exif"],
        declares_ai=False,
    )


def test_every_verdict_is_one_json_line_in_order(tmp_path: Path) -> None:
    written = [record(number) for number in range(5)]
    log = PredictionLog(str(tmp_path / "predictions"), max_bytes=1_000_000, backups=2)
    for line in written:
        log.write(line)
    log.close()
    lines = (tmp_path / "predictions" / LOG_FILE_NAME).read_text(encoding="utf-8").splitlines()
    assert [PredictionRecord.model_validate_json(line) for line in lines] == written


def test_the_log_rotates_and_never_holds_more_than_its_backups(tmp_path: Path) -> None:
    line_bytes = len(record(0).model_dump_json()) + 1
    log = PredictionLog(str(tmp_path), max_bytes=10 * line_bytes, backups=2)
    for number in range(100):
        log.write(record(number))
    log.close()
    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == [LOG_FILE_NAME, f"{LOG_FILE_NAME}.1", f"{LOG_FILE_NAME}.2"]
    assert all((tmp_path / name).stat().st_size <= 10 * line_bytes for name in files)
    newest = (tmp_path / LOG_FILE_NAME).read_text(encoding="utf-8").splitlines()
    assert PredictionRecord.model_validate_json(newest[-1]).prediction_id == "p-000099"


def test_an_empty_directory_setting_logs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    log = PredictionLog("", max_bytes=1_000, backups=1)
    log.write(record(0))
    log.close()
    assert log.path is None
    assert list(tmp_path.iterdir()) == []
