"""The ``feedback`` source of ingestion: consented, labelled images users sent, for the train split only.

The service keeps every ``POST /feedback`` as a JSON record in the feedback store (catalog
``feedback_records``: claimed label, consent, the image's key and sha256, the prediction) and,
only with the user's consent, the uploaded bytes unchanged (``feedback_images``). This source
brings the consented images into the next training run:

- the label is the one the user claims (``ai`` = 1, ``human`` = 0): that is what feedback is for;
- the generator is ``feedback/unknown``: users say *that* an image is AI, not *what* made it, so
  ``feedback`` is a family of its own, never attributed nor held out in turn
  (:func:`ai_image_detection.families.trained_ai_families`); a human image is attributed
  ``human`` by its label, like every human image;
- each image is its own group and pair (``feedback:<feedback_id>``), of part ``feedback``, which
  :func:`~ai_image_detection.pipelines.ingestion.nodes.split_train_validation` puts in ``train``
  and nowhere else, without moving any other file;
- the bytes must match the record's sha256 (the very file that was predicted); the local copies
  (``feedback_image_files``) then go through the same decoding checks and de-duplication as raw
  files, after them, so an image already in the data set stays where it is.

Every record is accounted for once in the report's ``feedback`` section: brought in, or skipped
with a reason (``no_consent``, ``no_image``, ``bad_record``, ``missing_object``,
``sha256_mismatch``, a decoding reason, ``duplicate``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any, Literal

import pandas as pd
from kedro.io import DatasetError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from ai_image_detection.contract import FEEDBACK_FAMILY, UNKNOWN_GENERATOR
from ai_image_detection.pipelines.ingestion.nodes import CANDIDATE_COLUMNS, FEEDBACK_PART, Issue
from ai_image_detection.pipelines.ingestion.params import FeedbackParams

logger = logging.getLogger(__name__)

FEEDBACK_GENERATOR = f"{FEEDBACK_FAMILY}/{UNKNOWN_GENERATOR}"
"""The ``generator`` of every feedback image: family ``feedback``, model unknown."""
LABELS = {"human": 0, "ai": 1}
Partitions = Mapping[str, Callable[[], Any]]


class FeedbackRecord(BaseModel):
    """The fields of a feedback record (``feedback/records/<date>/<id>.json``) that ingestion reads."""

    model_config = ConfigDict(extra="ignore")

    feedback_id: str = Field(min_length=1)
    received_at: AwareDatetime
    claimed_label: Literal["ai", "human"]
    consent: bool
    image_key: str | None = None
    image_sha256: str | None = None


def read_records(records: Partitions) -> tuple[list[FeedbackRecord], list[Issue]]:
    """Load and check every feedback record, oldest first.

    Args:
        records: ``feedback_records``: a loader per partition id (``<date>/<feedback_id>``).

    Returns:
        The valid records, sorted by ``received_at`` then id, and one ``bad_record`` issue per
        record that is not JSON or lacks a field (path ``feedback_records:<partition id>``).

    Raises:
        DatasetError: If a record cannot be read for another reason (the store is unreachable).
    """
    valid, issues = [], []
    for partition in sorted(records):
        path = f"feedback_records:{partition}"
        try:
            valid.append(FeedbackRecord.model_validate(records[partition]()))
        except DatasetError as error:
            if not isinstance(error.__cause__, ValueError):  # JSON and UTF-8 errors are ValueErrors
                raise
            issues.append({"path": path, "reason": "bad_record", "message": f"not JSON: {error.__cause__}"})
        except ValidationError as error:
            fields = ", ".join(".".join(map(str, e["loc"])) or "record" for e in error.errors())
            issues.append({"path": path, "reason": "bad_record", "message": f"invalid or missing: {fields}"})
    valid.sort(key=lambda record: (record.received_at, record.feedback_id))
    return valid, issues


def image_partition(image_key: str, images: Partitions) -> str | None:
    """The partition of ``feedback_images`` holding the object ``image_key`` (``feedback/images/x.jpg``).

    Partition ids are relative to the dataset's prefix, the key is relative to the bucket: the
    partition is the longest tail of the key that is a partition id.
    """
    parts = PurePosixPath(image_key).parts
    return next(("/".join(parts[i:]) for i in range(len(parts)) if "/".join(parts[i:]) in images), None)


def fetch_feedback(
    feedback_records: Partitions, feedback_images: Partitions, params: FeedbackParams
) -> tuple[dict[str, bytes], pd.DataFrame, list[Issue], dict[str, Any]]:
    """Fetch the consented images of the feedback store and describe them as ingestion candidates.

    Args:
        feedback_records: Loaders of the feedback records.
        feedback_images: Loaders of the stored images.
        params: ``ingestion.feedback``: where the local copies go.

    Returns:
        ``feedback_image_files`` (the checked bytes by partition id, saved under
        ``params.image_dir``), the candidates (:data:`CANDIDATE_COLUMNS`, part ``feedback``), the
        issues (``bad_record``, ``missing_object``, ``sha256_mismatch``) and the counts of records
        read, with consent and with an image, and of records skipped by design (``no_consent``,
        ``no_image``).

    Raises:
        DatasetError: If the store cannot be read (an error other than a missing object).
    """
    records, issues = read_records(feedback_records)
    consented = [record for record in records if record.consent]
    with_image = [record for record in consented if record.image_key]
    files: dict[str, bytes] = {}
    rows = []
    for record in with_image:
        fetched = _fetch_image(record, feedback_images)
        if isinstance(fetched, dict):
            issues.append(fetched)
            continue
        partition, data = fetched
        files[partition] = data
        rows.append(_candidate(record, f"{params.image_dir.rstrip('/')}/{partition}"))
    counts = {
        "records": len(feedback_records),
        "with_consent": len(consented),
        "with_image": len(with_image),
        "skipped": {
            "no_consent": len(records) - len(consented),
            "no_image": len(consented) - len(with_image),
        },
    }
    logger.info(
        "feedback store: %d records, %d with consent and an image, %d images fetched, %d issues",
        len(feedback_records),
        len(with_image),
        len(files),
        len(issues),
    )
    candidates = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS).astype({"label": "Int64"})
    return files, candidates, issues, counts


def _fetch_image(record: FeedbackRecord, images: Partitions) -> tuple[str, bytes] | Issue:
    """The record's image as ``(partition, bytes)``, or the issue: missing, or not the predicted file."""
    key = str(record.image_key)
    partition = image_partition(key, images)
    missing = {"path": f"feedback_images:{key}", "reason": "missing_object"}
    if partition is None:
        return missing | {"message": f"feedback {record.feedback_id} names an image the store does not hold"}
    try:
        data: bytes = images[partition]()
    except DatasetError as error:
        if not isinstance(error.__cause__, FileNotFoundError):
            raise
        return missing | {"message": f"feedback {record.feedback_id}: the image vanished while being read"}
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != record.image_sha256:
        return {
            "path": f"feedback_images:{partition}",
            "reason": "sha256_mismatch",
            "message": f"feedback {record.feedback_id}: sha256 {sha256}, recorded {record.image_sha256}",
        }
    return partition, data


def _candidate(record: FeedbackRecord, path: str) -> dict[str, Any]:
    """The candidate row of a fetched feedback image: its own group, family and part ``feedback``."""
    group = f"feedback:{record.feedback_id}"
    return {
        "path": path,
        "label": LABELS[record.claimed_label],
        "group": group,
        "pair": group,
        "generator": FEEDBACK_GENERATOR,
        "part": FEEDBACK_PART,
    }


def add_feedback(
    raw_candidates: pd.DataFrame,
    listing_issues: list[Issue],
    feedback_candidates: pd.DataFrame,
    feedback_issues: list[Issue],
) -> tuple[pd.DataFrame, list[Issue]]:
    """Append the feedback candidates after the raw ones (so a raw file wins a duplicate), and their issues.

    Args:
        raw_candidates: Output of :func:`~ai_image_detection.pipelines.ingestion.nodes.list_raw_files`.
        listing_issues: Its listing issues.
        feedback_candidates: Output of :func:`fetch_feedback`.
        feedback_issues: Its issues.

    Returns:
        All candidates, and all listing issues.
    """
    candidates = pd.concat([raw_candidates, feedback_candidates], ignore_index=True)
    return candidates.astype({"label": "Int64"}), [*listing_issues, *feedback_issues]


def summarise_feedback(
    counts: dict[str, Any],
    feedback_issues: list[Issue],
    feedback_candidates: pd.DataFrame,
    rejected: list[Issue],
    duplicates: list[Issue],
    manifest: pd.DataFrame,
) -> dict[str, Any]:
    """The ``feedback`` section of the ingestion report: every record brought in or skipped, with why.

    Args:
        counts: The counts of :func:`fetch_feedback`.
        feedback_issues: Its issues.
        feedback_candidates: Its candidates.
        rejected: Files that failed validation (some may be feedback images).
        duplicates: Dropped duplicates (some may be feedback images).
        manifest: The ingested files.

    Returns:
        ``enabled``, ``records``, ``with_consent``, ``with_image``, ``ingested`` (images in the
        manifest), ``labels`` and ``splits`` of those, and ``skipped`` (records per reason);
        ``records`` is ``ingested`` plus the skipped ones.
    """
    local = set(feedback_candidates["path"])
    dropped = [issue for issue in [*rejected, *duplicates] if issue["path"] in local]
    skipped = Counter(counts["skipped"]) + Counter(issue["reason"] for issue in [*feedback_issues, *dropped])
    ingested = manifest[manifest["source_path"].isin(local)]
    labels = ingested["label"].map({value: name for name, value in LABELS.items()})
    return {
        "enabled": True,
        "records": counts["records"],
        "with_consent": counts["with_consent"],
        "with_image": counts["with_image"],
        "ingested": len(ingested),
        "labels": {str(label): int(n) for label, n in labels.value_counts().sort_index().items()},
        "splits": {str(split): int(n) for split, n in ingested["split"].value_counts().items()},
        "skipped": {reason: int(n) for reason, n in sorted(skipped.items()) if n},
    }
