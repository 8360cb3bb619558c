"""Nodes of the ``ingestion`` pipeline: raw files in, one validated manifest out.

The manifest (one row per usable image) is the single input of every later pipeline. No file
is dropped silently: every problem (missing, unlisted, undecodable, too small, duplicate, ...)
lands in the ingestion report with its path and reason, and the run goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from ai_image_detection.contract import UNKNOWN_GENERATOR, generator_family
from ai_image_detection.families import held_out_pairs
from ai_image_detection.image_files import INSPECTION_COLUMNS, inspect_file
from ai_image_detection.image_io import ImageLimits
from ai_image_detection.pipelines.ingestion.params import IngestionParams, KaggleLayoutParams

logger = logging.getLogger(__name__)

Issue = dict[str, Any]
CANDIDATE_COLUMNS = ["path", "label", "group", "pair", "generator", "part"]
FEEDBACK_PART = "feedback"
"""The ``part`` of a candidate from the feedback source (the raw data's are ``train`` and ``test``)."""
MANIFEST_COLUMNS = [
    "path",
    "source_path",
    "label",
    "split",
    "group",
    "pair",
    "generator",
    "width",
    "height",
    "format",
    "mode",
    "sha256",
]
"""The manifest's columns: the contract every later pipeline reads.

``group`` keeps related files on one side of the train/validation split (a pair, or all crops of
one photograph); ``pair`` ties an AI image to its content twin; ``generator`` is ``family/model``
(``unknown`` when the data does not say). Splits: ``train``, ``validation``, ``test`` and
``unseen`` (pairs of the families held out by ``ingestion.unseen_families``).
"""


def list_raw_files(params: IngestionParams) -> tuple[pd.DataFrame, list[Issue]]:
    """List the candidate files of the raw data set with their labels and groups.

    Args:
        params: Raw directory and layout.

    Returns:
        The candidates (``path, label, group, part``; ``part`` is ``train`` or ``test``) and
        the listing issues: files a table names but the disk lacks, files on disk no table
        names, and rows with an invalid label.

    Raises:
        FileNotFoundError: If the raw directory or a required table or folder is missing.
    """
    raw_dir = Path(params.raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(
            f"raw data directory {raw_dir} does not exist; run `kedro run --pipelines sample_data` "
            "for the embedded sample set, or point ingestion.raw_dir at your data"
        )
    if params.layout == "kaggle":
        candidates, issues = _list_kaggle(raw_dir, params.kaggle)
    else:
        candidates, issues = _list_folders(raw_dir)
    logger.info("listed %d candidate files (%d listing issues) in %s", len(candidates), len(issues), raw_dir)
    return candidates, issues


def _list_kaggle(raw_dir: Path, layout: KaggleLayoutParams) -> tuple[pd.DataFrame, list[Issue]]:
    """Kaggle layout: ``train.csv`` (``file_name,label``) and ``test.csv`` (``id``)."""
    train_table = _read_table(raw_dir / layout.train_csv, ["file_name", "label"])
    sidecar = _read_sidecar(raw_dir, layout.sidecar_csv)
    issues: list[Issue] = []
    labels = pd.to_numeric(train_table["label"], errors="coerce")
    bad = ~labels.isin([0, 1])
    issues += [
        {"path": str(raw_dir / f), "reason": "bad_label", "message": f"label {v!r} is not 0 or 1"}
        for f, v in zip(train_table.loc[bad, "file_name"], train_table.loc[bad, "label"], strict=True)
    ]
    if layout.pairing == "consecutive_rows":
        pair_groups = pd.Series([f"pair-{i // 2}" for i in range(len(train_table))], index=train_table.index)
    else:
        pair_groups = train_table["file_name"]
    train = pd.DataFrame(
        {
            "file_name": train_table["file_name"],
            "label": labels.where(~bad).astype("Int64"),  # bad ones (e.g. 0.5) cannot be Int64
            "group": pair_groups,
            "pair": pair_groups,
            "generator": UNKNOWN_GENERATOR,
            "part": "train",
        }
    )[~bad]
    frames = [train]
    if layout.test_csv and (raw_dir / layout.test_csv).exists():
        test_table = _read_table(raw_dir / layout.test_csv, ["id"])
        frames.append(
            pd.DataFrame(
                {
                    "file_name": test_table["id"],
                    "label": pd.Series(pd.NA, index=test_table.index, dtype="Int64"),
                    "group": test_table["id"],
                    "pair": test_table["id"],
                    "generator": UNKNOWN_GENERATOR,
                    "part": "test",
                }
            )
        )
    listed = pd.concat(frames, ignore_index=True)
    if sidecar is not None:
        listed["group"] = listed["file_name"].map(sidecar["group"]).fillna(listed["group"])
        for column in ("pair", "generator"):
            if column in sidecar:
                listed[column] = listed["file_name"].map(sidecar[column]).fillna(listed[column])
        if "label" in sidecar:
            known = listed["file_name"].map(sidecar["label"])
            listed["label"] = listed["label"].fillna(known).astype("Int64")
    listed["path"] = [str(raw_dir / name) for name in listed["file_name"]]
    badly_labelled = {str(raw_dir / name) for name in train_table.loc[bad, "file_name"]}
    return _reconcile_with_disk(listed, raw_dir, issues, badly_labelled)


def _reconcile_with_disk(
    listed: pd.DataFrame, raw_dir: Path, issues: list[Issue], reported: set[str]
) -> tuple[pd.DataFrame, list[Issue]]:
    """Report files the tables name but the disk lacks, and files on disk the tables omit."""
    exists = np.array([Path(path).is_file() for path in listed["path"]], dtype=bool)
    issues += [
        {"path": p, "reason": "missing", "message": "listed in the table but not on disk"}
        for p in listed.loc[~exists, "path"]
    ]
    listed_paths = set(listed["path"]) | reported
    folders = {Path(path).parent for path in listed["path"]} - {raw_dir}
    on_disk = sorted(  # a set: a listed folder may lie inside another one
        {str(p) for folder in folders if folder.is_dir() for p in folder.rglob("*") if p.is_file()}
    )
    issues += [
        {"path": p, "reason": "unlisted", "message": "on disk but in no table; not ingested"}
        for p in on_disk
        if p not in listed_paths
    ]
    return listed.loc[exists, CANDIDATE_COLUMNS].reset_index(drop=True), issues


def _list_folders(raw_dir: Path) -> tuple[pd.DataFrame, list[Issue]]:
    """Folder layout: ``<raw_dir>/human/**`` (label 0) and ``<raw_dir>/ai/**`` (label 1).

    Files with the same path (minus extension) under both folders form a pair group.
    """
    rows = []
    for label, folder in ((0, "human"), (1, "ai")):
        root = raw_dir / folder
        if not root.is_dir():
            raise FileNotFoundError(
                f"folders layout needs {root}/ (and {raw_dir}/{'ai' if label == 0 else 'human'}/)"
            )
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            stem = path.relative_to(root).with_suffix("").as_posix()
            group = f"stem:{stem}"
            rows.append(
                {
                    "path": str(path),
                    "label": label,
                    "group": group,
                    "pair": group,
                    "generator": UNKNOWN_GENERATOR,
                    "part": "train",
                }
            )
    candidates = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)
    candidates["label"] = candidates["label"].astype("Int64")
    return candidates, []


def _read_table(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the Kaggle layout needs it)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {missing}; it has {list(table.columns)}")
    return table


def _read_sidecar(raw_dir: Path, name: str | None) -> pd.DataFrame | None:
    """The optional ``file_name,group[,label][,pair][,generator]`` table; its groups win over pairing."""
    if not name or not (raw_dir / name).is_file():
        return None
    sidecar = _read_table(raw_dir / name, ["file_name", "group"]).set_index("file_name")
    for column in ("pair", "generator"):
        if column in sidecar:
            sidecar[column] = sidecar[column].replace("", pd.NA)
    if "label" in sidecar:
        labels = pd.to_numeric(sidecar["label"], errors="coerce")
        invalid = labels.notna() & ~labels.isin([0, 1])
        if invalid.any():
            logger.warning("%s: ignoring %d labels that are not 0 or 1", name, int(invalid.sum()))
        sidecar["label"] = labels.where(labels.isin([0, 1])).astype("Int64")
    return sidecar


def validate_files(candidates: pd.DataFrame, params: IngestionParams) -> tuple[pd.DataFrame, list[Issue]]:
    """Decode every candidate fully, in parallel, without keeping pixels in memory.

    Files a plain JPEG/PNG decoder would misread (other modes, EXIF rotation, other formats,
    animations) get a lossless RGB PNG copy in ``normalised_dir``, named by content hash, and
    the manifest points there; all other files are used as they are.

    Args:
        candidates: Output of :func:`list_raw_files`.
        params: Limits, normalised-copy folder and worker count.

    Returns:
        The valid files (candidate columns plus ``stored_path, width, height, format, mode,
        sha256``) and the rejected ones with their reasons.
    """
    limits = ImageLimits(min_side=params.min_side, max_pixels=params.max_pixels)
    tasks = [(path, limits, params.normalised_dir) for path in candidates["path"]]
    Path(params.normalised_dir).mkdir(parents=True, exist_ok=True)
    workers = params.workers or multiprocessing.cpu_count()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = list(
            tqdm(
                pool.imap(inspect_file, tasks, chunksize=64),
                total=len(tasks),
                desc="validating images",
                unit="file",
            )
        )
    inspected = pd.concat(
        [candidates.reset_index(drop=True), pd.DataFrame(results, columns=INSPECTION_COLUMNS)], axis=1
    )
    ok = inspected["reason"].isna()
    rejected = [
        {"path": p, "reason": r, "message": m}
        for p, r, m in inspected.loc[~ok, ["path", "reason", "message"]].itertuples(index=False)
    ]
    valid = inspected.loc[ok].drop(columns=["reason", "message"]).reset_index(drop=True)
    logger.info(
        "%d valid files, %d rejected, %d normalised",
        len(valid),
        len(rejected),
        int((valid["stored_path"] != valid["path"]).sum()),
    )
    return valid, rejected


def drop_duplicates(valid: pd.DataFrame) -> tuple[pd.DataFrame, list[Issue]]:
    """Keep the first file of each content hash and report the others.

    Args:
        valid: Output of :func:`validate_files`.

    Returns:
        The unique files and one issue per dropped duplicate (naming the kept file, and
        whether the labels disagree).
    """
    first = valid.drop_duplicates("sha256", keep="first")
    kept_by_hash: dict[Any, dict[Any, Any]] = first.set_index("sha256").to_dict("index")
    issues = []
    for row in valid[valid.duplicated("sha256", keep="first")].to_dict("records"):
        kept = kept_by_hash[row["sha256"]]
        conflict = not pd.isna(row["label"]) and not pd.isna(kept["label"]) and row["label"] != kept["label"]
        issues.append(
            {
                "path": row["path"],
                "reason": "duplicate_conflicting_label" if conflict else "duplicate",
                "message": f"same content as {kept['path']}"
                + (
                    f" (labelled {kept['label']} there, {row['label']} here; kept the first)"
                    if conflict
                    else ""
                ),
            }
        )
    return first.reset_index(drop=True), issues


def split_train_validation(unique: pd.DataFrame, params: IngestionParams) -> pd.DataFrame:
    """Split the labelled train part into train/validation, stratified by label, grouped.

    Every pair of the train part holding an image of a family named in ``unseen_families`` (the
    AI image and its content twin) goes to the ``unseen`` split, out of training and validation
    entirely; the test part stays ``test`` whole (every test file keeps its answer in the
    submission, and those families are unseen there too). Feedback images (part ``feedback``) go
    to ``train``, always: never to validation, test or unseen, and without moving any other
    file's split. No
    group (a real/AI pair, or all crops of one source photograph) straddles the train/validation
    split; the test part keeps ``split = "test"``. The split is one fold of a stratified group
    k-fold with ``k = round(1 / validation_fraction)``, so the validation share is ``1/k``
    of the groups (10 % for the default 0.1).

    Args:
        unique: De-duplicated valid files.
        params: Validation fraction and seed.

    Returns:
        The manifest: ``path`` (the file to read), ``source_path``, ``label``, ``split``,
        ``group``, ``pair``, ``generator``, ``width``, ``height``, ``format``, ``mode``, ``sha256``.

    Raises:
        ValueError: If there are fewer groups than the split needs, or an unseen family is not
            in the data.
    """
    manifest = unique.rename(columns={"path": "source_path", "stored_path": "path"})
    manifest["split"] = np.where(manifest["part"] == "test", "test", "train")
    held_out = held_out_pairs(manifest, params.unseen_families) & (manifest["part"] == "train")
    manifest.loc[held_out, "split"] = "unseen"
    train_index = manifest.index[(manifest["split"] == "train") & (manifest["part"] == "train")]
    n_splits = round(1 / params.validation_fraction)
    groups = manifest.loc[train_index, "group"]
    if groups.nunique() < n_splits:
        raise ValueError(
            f"{groups.nunique()} groups cannot make a {params.validation_fraction:.0%} validation split "
            f"(needs at least {n_splits}); add data or raise ingestion.validation_fraction"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=params.seed)
    _, validation = next(splitter.split(train_index, manifest.loc[train_index, "label"].astype(int), groups))
    manifest.loc[train_index[validation], "split"] = "validation"
    return manifest[MANIFEST_COLUMNS].astype({"label": "Int8", "width": "int32", "height": "int32"})


def build_report(
    listing_issues: list[Issue],
    rejected: list[Issue],
    duplicates: list[Issue],
    manifest: pd.DataFrame,
    feedback: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Summarise the ingestion: counts per split and label, and every file not ingested.

    Args:
        listing_issues: Missing, unlisted and badly labelled files (and feedback images not fetched).
        rejected: Files that failed validation.
        duplicates: Dropped duplicates.
        manifest: The ingested files.
        feedback: What the feedback source brought in and skipped
            (:func:`~ai_image_detection.pipelines.ingestion.feedback.summarise_feedback`); ``None``
            when the source is off.

    Returns:
        A JSON-ready report: ``summary``, ``splits`` (label counts), ``families`` (images per
        generator family and split), ``feedback`` (``{"enabled": false}`` when off),
        ``problems`` (path, reason, message) and ``reasons`` (counts per reason).
    """
    problems = [*listing_issues, *rejected, *duplicates]
    splits = {
        split: {str(label): int(count) for label, count in part["label"].value_counts(dropna=False).items()}
        for split, part in manifest.groupby("split")
    }
    families = manifest.assign(family=manifest["generator"].map(generator_family))
    return {
        "summary": {
            "ingested": len(manifest),
            "not_ingested": len(problems),
            "normalised_copies": int((manifest["path"] != manifest["source_path"]).sum()),
            "groups": int(manifest["group"].nunique()),
        },
        "splits": splits,
        "families": {
            split: {
                str(family): int(count)
                for family, count in part["family"].value_counts().sort_index().items()
            }
            for split, part in families.groupby("split")
        },
        "feedback": feedback if feedback is not None else {"enabled": False},
        "reasons": pd.Series([p["reason"] for p in problems], dtype=str).value_counts().to_dict(),
        "problems": problems,
    }
