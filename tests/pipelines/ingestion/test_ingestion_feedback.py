"""Unit tests of the ``feedback`` source: records in, candidates out, train split only, all counted."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from kedro.io import DatasetError
from pydantic import ValidationError

from ai_image_detection.datasets import PossiblyEmptyPartitionedDataset
from ai_image_detection.families import (
    attribution_families,
    family_targets,
    trained_ai_families,
    without_family,
)
from ai_image_detection.pipelines.ingestion.feedback import (
    FEEDBACK_GENERATOR,
    add_feedback,
    fetch_feedback,
    image_partition,
    read_records,
    summarise_feedback,
)
from ai_image_detection.pipelines.ingestion.nodes import (
    CANDIDATE_COLUMNS,
    MANIFEST_COLUMNS,
    IngestionParams,
    build_report,
    split_train_validation,
)
from ai_image_detection.pipelines.ingestion.params import FeedbackParams

IMAGE_DIR = "data/02_intermediate/feedback/images"

# ---------- helpers ----------


def record(
    feedback_id: str, *, consent: bool = True, label: str = "ai", data: bytes | None = b"", **fields: Any
) -> dict[str, Any]:
    """A feedback record as the service writes it; ``data`` is the image (``None``: no image)."""
    with_image = consent and data is not None
    return {
        "feedback_id": feedback_id,
        "prediction_id": f"p-{feedback_id}",
        "received_at": "2026-12-01T10:00:00+00:00",
        "claimed_label": label,
        "note": None,
        "consent": consent,
        "image_key": f"feedback/images/{feedback_id}.jpg" if with_image else None,
        "image_sha256": hashlib.sha256(data or b"").hexdigest() if with_image else None,
        "image_format": "JPEG" if with_image else None,
        "prediction": {"probability_ai": 0.2, "label": "human", "decided_by": "pixels"},
    } | fields


def loaders(items: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """Partition loaders returning ``items``' values (an exception value is raised instead)."""

    def loader(value: Any) -> Callable[[], Any]:
        def load() -> Any:
            if isinstance(value, BaseException):
                raise value
            return value

        return load

    return {partition: loader(value) for partition, value in items.items()}


def store_error(cause: BaseException) -> DatasetError:
    """What a Kedro dataset raises when its load fails with ``cause``."""
    try:
        raise DatasetError("Failed while loading data from dataset") from cause
    except DatasetError as error:
        return error


def store(
    *feedback: tuple[dict[str, Any], bytes | None],
) -> tuple[dict[str, Callable[[], Any]], dict[str, Callable[[], Any]]]:
    """``feedback_records`` and ``feedback_images`` loaders holding each ``(record, stored bytes)``."""
    records = {f"2026-12-01/{r['feedback_id']}": r for r, _ in feedback}
    images = {f"{r['feedback_id']}.jpg": data for r, data in feedback if data is not None}
    return loaders(records), loaders(images)


def params(**overrides: Any) -> IngestionParams:
    """Ingestion parameters for in-memory frames (no files are read)."""
    values: dict[str, Any] = {
        "raw_dir": "raw",
        "layout": "kaggle",
        "min_side": 32,
        "max_pixels": 4_000_000,
        "validation_fraction": 0.1,
        "seed": 42,
        "normalised_dir": "normalised",
        "workers": 1,
        "unseen_families": ["beta"],
    }
    return IngestionParams(**(values | overrides))


def unique_rows(n_pairs: int, feedback: list[tuple[str, int]]) -> pd.DataFrame:
    """``drop_duplicates``-shaped rows: human/AI pairs of alpha/beta (8 in test), then ``feedback`` ones."""
    rows = []
    for pair in range(n_pairs):
        for label, generator in ((0, "camera/original"), (1, ("alpha/a1", "beta/b1")[pair % 2])):
            part = "test" if pair >= n_pairs - 8 else "train"
            rows.append(
                (f"raw/{pair}-{label}.jpg", label, f"photo-{pair // 2}", f"pair-{pair}", generator, part)
            )
    rows += [
        (f"{IMAGE_DIR}/{f}.jpg", label, f"feedback:{f}", f"feedback:{f}", FEEDBACK_GENERATOR, "feedback")
        for f, label in feedback
    ]
    frame = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)
    return frame.assign(
        label=pd.array(frame["label"], dtype="Int64"),
        sha256=[f"sha-{i}" for i in range(len(frame))],
        stored_path=frame["path"],
        width=64,
        height=64,
        format="JPEG",
        mode="RGB",
    )


# ---------- read_records ----------


def test_records_are_read_oldest_first_and_bad_ones_reported() -> None:
    newer = record("f-2", received_at="2026-12-02T08:00:00Z")
    older = record("f-1", received_at="2026-12-01T23:00:00-03:00")  # 2026-12-02T02:00Z
    records, issues = read_records(
        loaders(
            {
                "2026-12-02/f-2": newer,
                "2026-12-01/f-1": older,
                "2026-12-01/not-json": store_error(ValueError("Expecting value: line 1 column 1")),
                "2026-12-01/bad-label": record("f-3", claimed_label="maybe"),
                "2026-12-01/no-consent-field": {k: v for k, v in record("f-4").items() if k != "consent"},
                "2026-12-01/naive-time": record("f-5", received_at="2026-12-01T10:00:00"),
            }
        )
    )

    assert [r.feedback_id for r in records] == ["f-1", "f-2"]
    assert {i["path"]: i["reason"] for i in issues} == {
        "feedback_records:2026-12-01/not-json": "bad_record",
        "feedback_records:2026-12-01/bad-label": "bad_record",
        "feedback_records:2026-12-01/no-consent-field": "bad_record",
        "feedback_records:2026-12-01/naive-time": "bad_record",
    }
    messages = {i["path"].rsplit("/", 1)[1]: i["message"] for i in issues}
    assert "claimed_label" in messages["bad-label"]
    assert "consent" in messages["no-consent-field"]
    assert "not JSON" in messages["not-json"]


def test_a_store_that_fails_is_an_error_not_a_bad_record() -> None:
    failing = loaders({"2026-12-01/f-1": store_error(ConnectionError("endpoint unreachable"))})

    with pytest.raises(DatasetError):
        read_records(failing)


# ---------- fetch_feedback ----------


def test_consented_images_become_train_candidates_with_the_claimed_label() -> None:
    ai, human = b"ai image bytes", b"human image bytes"
    records, images = store(
        (record("f-ai", label="ai", data=ai), ai), (record("f-human", label="human", data=human), human)
    )

    files, candidates, issues, counts = fetch_feedback(
        records, images, FeedbackParams(image_dir=IMAGE_DIR + "/")
    )

    assert files == {"f-ai.jpg": ai, "f-human.jpg": human}
    assert issues == []
    assert list(candidates.columns) == CANDIDATE_COLUMNS
    assert candidates.to_dict("records") == [
        {
            "path": f"{IMAGE_DIR}/f-ai.jpg",
            "label": 1,
            "group": "feedback:f-ai",
            "pair": "feedback:f-ai",
            "generator": "feedback/unknown",
            "part": "feedback",
        },
        {
            "path": f"{IMAGE_DIR}/f-human.jpg",
            "label": 0,
            "group": "feedback:f-human",
            "pair": "feedback:f-human",
            "generator": "feedback/unknown",
            "part": "feedback",
        },
    ]
    assert str(candidates["label"].dtype) == "Int64"
    assert counts == {
        "records": 2,
        "with_consent": 2,
        "with_image": 2,
        "skipped": {"no_consent": 0, "no_image": 0},
    }


def test_without_consent_nothing_is_fetched_even_if_an_object_exists() -> None:
    leaked = b"an object that should not be there"
    records, images = store(
        (record("f-no", consent=False, data=None), None),
        (record("f-no-image", consent=True, data=None), None),
        (record("f-leaked", consent=False, data=leaked), leaked),  # the store holds it anyway: not used
    )

    files, candidates, issues, counts = fetch_feedback(records, images, FeedbackParams())

    assert files == {}
    assert candidates.empty
    assert list(candidates.columns) == CANDIDATE_COLUMNS
    assert issues == []
    assert counts == {
        "records": 3,
        "with_consent": 1,
        "with_image": 0,
        "skipped": {"no_consent": 2, "no_image": 1},
    }


def test_missing_objects_and_sha256_mismatches_are_reported_not_fetched() -> None:
    good = b"the predicted file"
    records, images = store(
        (record("f-gone", data=b"never stored"), None),
        (record("f-swapped", data=good), b"another file under its key"),
        (record("f-good", data=good), good),
    )

    files, candidates, issues, _ = fetch_feedback(records, images, FeedbackParams())

    assert list(files) == ["f-good.jpg"]
    assert candidates["group"].tolist() == ["feedback:f-good"]
    assert {i["path"]: i["reason"] for i in issues} == {
        "feedback_images:feedback/images/f-gone.jpg": "missing_object",
        "feedback_images:f-swapped.jpg": "sha256_mismatch",
    }
    assert all(i["message"] for i in issues)


def test_an_object_that_vanishes_while_read_is_missing_but_other_errors_stop_the_run() -> None:
    records, _ = store((record("f-1", data=b"x"), None))

    _, _, issues, _ = fetch_feedback(
        records, loaders({"f-1.jpg": store_error(FileNotFoundError("gone"))}), FeedbackParams()
    )
    assert [i["reason"] for i in issues] == ["missing_object"]

    with pytest.raises(DatasetError):
        fetch_feedback(
            records, loaders({"f-1.jpg": store_error(PermissionError("denied"))}), FeedbackParams()
        )


def test_the_image_key_is_matched_to_the_partition_by_its_tail() -> None:
    images = {"f-1.jpg": None, "2026/f-2.png": None}

    assert image_partition("feedback/images/f-1.jpg", images) == "f-1.jpg"
    assert image_partition("feedback/images/2026/f-2.png", images) == "2026/f-2.png"
    assert image_partition("f-1.jpg", images) == "f-1.jpg"
    assert image_partition("feedback/images/f-3.jpg", images) is None


# ---------- the split: train only ----------


def test_feedback_goes_to_train_only_and_moves_no_other_file() -> None:
    feedback = [(f"f-{i}", i % 2) for i in range(30)]
    without = split_train_validation(unique_rows(100, []), params())

    manifest = split_train_validation(unique_rows(100, feedback), params())

    is_feedback = manifest["generator"] == FEEDBACK_GENERATOR
    assert set(manifest.loc[is_feedback, "split"]) == {"train"}
    assert manifest.loc[is_feedback, "label"].tolist() == [label for _, label in feedback]
    pd.testing.assert_frame_equal(manifest[~is_feedback], without)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert {"validation", "test", "unseen"} <= set(without["split"])


def test_feedback_cannot_be_held_out_as_an_unseen_family() -> None:
    with pytest.raises(ValidationError, match="train split only"):
        params(unseen_families=["alpha", "feedback"])


def test_feedback_is_no_family_to_attribute_or_hold_out_in_turn() -> None:
    manifest = split_train_validation(
        unique_rows(40, [("f-ai", 1), ("f-human", 0)]), params(unseen_families=[])
    )

    assert trained_ai_families(manifest) == ["alpha", "beta"]
    families = attribution_families(manifest)
    assert families == ["human", "alpha", "beta"]
    targets = pd.Series(family_targets(manifest, families), index=manifest.index)
    feedback = manifest["generator"] == FEEDBACK_GENERATOR
    assert dict(zip(manifest.loc[feedback, "label"], targets[feedback], strict=True)) == {1: -1, 0: 0}
    fold = without_family(manifest, "alpha")
    assert set(fold.loc[fold["generator"] == FEEDBACK_GENERATOR, "split"]) == {"train"}


# ---------- the report ----------


def test_every_record_is_brought_in_or_skipped_with_its_reason() -> None:
    data = {name: name.encode() for name in ("f-ai", "f-human", "f-dup", "f-broken")}
    feedback_ids = [("f-ai", 1), ("f-human", 0), ("f-dup", 1), ("f-broken", 1)]
    records, images = store(
        *((record(f, data=data[f]), data[f]) for f, _ in feedback_ids),
        (record("f-none", consent=False, data=None), None),
        (record("f-gone", data=b"lost"), None),
    )
    _, candidates, issues, counts = fetch_feedback(records, images, FeedbackParams(image_dir=IMAGE_DIR))
    unique = unique_rows(40, [("f-ai", 1), ("f-human", 0)])
    manifest = split_train_validation(unique, params(unseen_families=[]))
    rejected = [{"path": f"{IMAGE_DIR}/f-broken.jpg", "reason": "not_an_image", "message": "not an image"}]
    duplicates = [
        {"path": "raw/9-1.jpg", "reason": "duplicate", "message": "same content as raw/1-1.jpg"},
        {"path": f"{IMAGE_DIR}/f-dup.jpg", "reason": "duplicate", "message": "same content as raw/0-1.jpg"},
    ]

    summary = summarise_feedback(counts, issues, candidates, rejected, duplicates, manifest)

    assert summary == {
        "enabled": True,
        "records": 6,
        "with_consent": 5,
        "with_image": 5,
        "ingested": 2,
        "labels": {"ai": 1, "human": 1},
        "splits": {"train": 2},
        "skipped": {"duplicate": 1, "missing_object": 1, "no_consent": 1, "not_an_image": 1},
    }
    assert summary["records"] == summary["ingested"] + sum(summary["skipped"].values())
    report = build_report(issues, rejected, duplicates, manifest, summary)
    assert report["feedback"] == summary
    assert report["families"]["train"]["feedback"] == 2
    assert "feedback" not in report["families"].get("validation", {})


def test_the_report_says_when_the_source_is_off() -> None:
    manifest = split_train_validation(unique_rows(40, []), params(unseen_families=[]))

    assert build_report([], [], [], manifest)["feedback"] == {"enabled": False}


def test_raw_candidates_come_first_so_a_raw_file_wins_a_duplicate() -> None:
    raw = unique_rows(2, [])[CANDIDATE_COLUMNS]
    feedback = unique_rows(0, [("f-1", 1)])[CANDIDATE_COLUMNS]
    listing = [{"path": "raw/x.jpg", "reason": "missing", "message": "m"}]
    fetched = [{"path": "feedback_images:f-2.jpg", "reason": "sha256_mismatch", "message": "m"}]

    candidates, issues = add_feedback(raw, listing, feedback, fetched)

    assert candidates["path"].tolist() == [*raw["path"], f"{IMAGE_DIR}/f-1.jpg"]
    assert str(candidates["label"].dtype) == "Int64"
    assert issues == [*listing, *fetched]


# ---------- the store's dataset ----------


def test_an_empty_store_loads_as_no_partitions(tmp_path: Path) -> None:
    empty = PossiblyEmptyPartitionedDataset(path=str(tmp_path / "records"), dataset="json.JSONDataset")
    assert empty.load() == {}

    (tmp_path / "records" / "2026-12-01").mkdir(parents=True)
    (tmp_path / "records" / "2026-12-01" / "f-1.json").write_text('{"feedback_id": "f-1"}')
    partitions = empty.load()
    assert list(partitions) == ["2026-12-01/f-1.json"]
    assert partitions["2026-12-01/f-1.json"]() == {"feedback_id": "f-1"}
