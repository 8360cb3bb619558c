"""Tests of the ``ingestion`` nodes on small raw directories built in ``tmp_path``."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ai_image_detection.image_files import inspect_file
from ai_image_detection.image_io import EXIF_ORIENTATION_TAG, ImageLimits, decode_image
from ai_image_detection.pipelines.ingestion.nodes import (
    CANDIDATE_COLUMNS,
    MANIFEST_COLUMNS,
    IngestionParams,
    KaggleLayoutParams,
    build_report,
    drop_duplicates,
    list_raw_files,
    split_train_validation,
    validate_files,
)

# ---------- helpers ----------


def _params(tmp_path: Path, **overrides: Any) -> IngestionParams:
    """Ingestion parameters rooted in ``tmp_path``, with ``overrides`` applied."""
    values: dict[str, Any] = {
        "raw_dir": str(tmp_path / "raw"),
        "layout": "kaggle",
        "kaggle": KaggleLayoutParams(sidecar_csv="sources.csv"),
        "min_side": 32,
        "max_pixels": 4_000_000,
        "validation_fraction": 0.1,
        "seed": 42,
        "normalised_dir": str(tmp_path / "normalised"),
        "workers": 1,
    }
    return IngestionParams(**{**values, **overrides})


def _noise(width: int, height: int, seed: int) -> np.ndarray:
    """Seeded random RGB pixels of shape ``(height, width, 3)``."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **save_args: Any) -> bytes:
    """The bytes of ``image`` saved in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path``, creating its folder, and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _jpeg(seed: int, width: int = 48, height: int = 40) -> bytes:
    """A plain RGB JPEG of seeded noise."""
    return _encode(Image.fromarray(_noise(width, height, seed)), "JPEG", quality=90)


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Write ``rows`` as a CSV table with ``columns`` (a header even when empty), without index."""
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny, structurally valid RGB PNG whose header declares ``width`` x ``height``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _make_kaggle_raw(raw: Path, train_names: list[str], test_names: list[str]) -> None:
    """A Kaggle-layout raw dir: images on disk, ``train.csv`` alternating labels 0/1, ``test.csv``."""
    for seed, name in enumerate([*train_names, *test_names]):
        _write(raw / name, _jpeg(seed))
    rows = [{"file_name": n, "label": i % 2} for i, n in enumerate(train_names)]
    _write_csv(raw / "train.csv", rows, ["file_name", "label"])
    _write_csv(raw / "test.csv", [{"id": n} for n in test_names], ["id"])


def _issues_by_path(issues: list[dict[str, Any]]) -> dict[str, str]:
    """``{path: reason}`` of a list of issues, checking no path is reported twice."""
    paths = [issue["path"] for issue in issues]
    assert len(paths) == len(set(paths)), f"a path is reported twice: {paths}"
    return {issue["path"]: issue["reason"] for issue in issues}


# ---------- list_raw_files: Kaggle layout ----------


def test_kaggle_listing_pairs_consecutive_rows(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    train = [f"train_data/{i}.jpg" for i in range(6)]
    _make_kaggle_raw(raw, train, ["test_data_v2/t0.jpg", "test_data_v2/t1.jpg"])

    candidates, issues = list_raw_files(_params(tmp_path))

    assert issues == []
    assert list(candidates.columns) == CANDIDATE_COLUMNS
    assert candidates["path"].tolist() == [
        str(raw / name) for name in [*train, "test_data_v2/t0.jpg", "test_data_v2/t1.jpg"]
    ]
    train_rows = candidates[candidates["part"] == "train"]
    assert train_rows["group"].tolist() == ["pair-0", "pair-0", "pair-1", "pair-1", "pair-2", "pair-2"]
    assert train_rows["label"].tolist() == [0, 1, 0, 1, 0, 1]
    assert str(candidates["label"].dtype) == "Int64"
    test_rows = candidates[candidates["part"] == "test"]
    assert test_rows["label"].isna().all()
    assert test_rows["group"].tolist() == ["test_data_v2/t0.jpg", "test_data_v2/t1.jpg"]


def test_kaggle_listing_without_pairing_makes_each_file_its_own_group(tmp_path: Path) -> None:
    _make_kaggle_raw(tmp_path / "raw", [f"train_data/{i}.jpg" for i in range(4)], [])
    params = _params(tmp_path, kaggle=KaggleLayoutParams(pairing="none", test_csv=None))

    candidates, _ = list_raw_files(params)

    assert candidates["group"].nunique() == 4


def test_kaggle_listing_reports_missing_unlisted_and_bad_labels(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    present = ["train_data/a.jpg", "train_data/b.jpg", "train_data/c.jpg", "train_data/d.jpg"]
    _make_kaggle_raw(raw, present, ["test_data_v2/t0.jpg"])
    for seed, name in enumerate(["train_data/two.jpg", "train_data/half.jpg", "train_data/word.jpg"]):
        _write(raw / name, _jpeg(100 + seed))
    _write(raw / "train_data/extra.jpg", _jpeg(200))
    _write(raw / "test_data_v2/extra_test.jpg", _jpeg(201))
    rows = [{"file_name": n, "label": i % 2} for i, n in enumerate(present)]
    rows += [
        {"file_name": "train_data/gone.jpg", "label": 1},
        {"file_name": "train_data/two.jpg", "label": "2"},
        {"file_name": "train_data/half.jpg", "label": "0.5"},
        {"file_name": "train_data/word.jpg", "label": "ai"},
    ]
    _write_csv(raw / "train.csv", rows, ["file_name", "label"])
    _write_csv(raw / "test.csv", [{"id": "test_data_v2/t0.jpg"}, {"id": "test_data_v2/lost.jpg"}], ["id"])

    candidates, issues = list_raw_files(_params(tmp_path))

    assert _issues_by_path(issues) == {
        str(raw / "train_data/gone.jpg"): "missing",
        str(raw / "test_data_v2/lost.jpg"): "missing",
        str(raw / "train_data/two.jpg"): "bad_label",
        str(raw / "train_data/half.jpg"): "bad_label",
        str(raw / "train_data/word.jpg"): "bad_label",
        str(raw / "train_data/extra.jpg"): "unlisted",
        str(raw / "test_data_v2/extra_test.jpg"): "unlisted",
    }
    assert all(issue["message"] for issue in issues)
    assert sorted(candidates["path"]) == sorted(str(raw / n) for n in [*present, "test_data_v2/t0.jpg"])
    assert set(candidates["label"].dropna()) == {0, 1}


def test_kaggle_listing_reports_an_unlisted_file_in_a_nested_folder_once(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _make_kaggle_raw(raw, ["train_data/a.jpg", "train_data/more/b.jpg"], [])
    _write(raw / "train_data/more/stray.jpg", _jpeg(300))

    _, issues = list_raw_files(_params(tmp_path))

    assert _issues_by_path(issues) == {str(raw / "train_data/more/stray.jpg"): "unlisted"}


def test_sidecar_groups_win_over_pairing_and_fill_test_labels(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    train = [f"train_data/{i}.jpg" for i in range(4)]
    _make_kaggle_raw(raw, train, ["test_data_v2/t0.jpg", "test_data_v2/t1.jpg"])
    _write_csv(
        raw / "sources.csv",
        [
            {"file_name": "train_data/0.jpg", "group": "photo-7", "label": ""},
            {"file_name": "train_data/3.jpg", "group": "photo-7", "label": ""},
            {"file_name": "test_data_v2/t0.jpg", "group": "photo-9", "label": "1"},
        ],
        ["file_name", "group", "label"],
    )

    candidates, issues = list_raw_files(_params(tmp_path))

    assert issues == []
    by_name = candidates.set_index("path")
    assert by_name.loc[str(raw / "train_data/0.jpg"), "group"] == "photo-7"
    assert by_name.loc[str(raw / "train_data/3.jpg"), "group"] == "photo-7"
    assert by_name.loc[str(raw / "train_data/1.jpg"), "group"] == "pair-0"  # not in the sidecar
    assert by_name.loc[str(raw / "train_data/1.jpg"), "label"] == 1  # train.csv labels stay
    assert by_name.loc[str(raw / "test_data_v2/t0.jpg"), "group"] == "photo-9"
    assert by_name.loc[str(raw / "test_data_v2/t0.jpg"), "label"] == 1
    assert by_name.loc[str(raw / "test_data_v2/t0.jpg"), "part"] == "test"
    assert pd.isna(by_name.loc[str(raw / "test_data_v2/t1.jpg"), "label"])
    assert str(candidates["label"].dtype) == "Int64"


def test_configured_sidecar_that_does_not_exist_is_optional(tmp_path: Path) -> None:
    _make_kaggle_raw(tmp_path / "raw", ["train_data/0.jpg", "train_data/1.jpg"], [])

    candidates, issues = list_raw_files(_params(tmp_path))

    assert issues == []
    assert candidates["group"].tolist() == ["pair-0", "pair-0"]


def test_missing_raw_dir_says_how_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="sample_data"):
        list_raw_files(_params(tmp_path))


def test_missing_train_table_is_named(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()

    with pytest.raises(FileNotFoundError, match=r"train\.csv"):
        list_raw_files(_params(tmp_path))


# ---------- list_raw_files: folders layout ----------


def test_folders_layout_labels_by_folder_and_pairs_by_stem(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _write(raw / "human/a.jpg", _jpeg(1))
    _write(raw / "human/sub/b.jpg", _jpeg(2))
    _write(raw / "ai/a.png", _jpeg(3))
    _write(raw / "ai/c.jpg", _jpeg(4))

    candidates, issues = list_raw_files(_params(tmp_path, layout="folders"))

    assert issues == []
    rows = {
        Path(p).relative_to(raw).as_posix(): (lab, g)
        for p, lab, g in candidates[["path", "label", "group"]].values
    }
    assert rows == {
        "human/a.jpg": (0, "stem:a"),
        "human/sub/b.jpg": (0, "stem:sub/b"),
        "ai/a.png": (1, "stem:a"),
        "ai/c.jpg": (1, "stem:c"),
    }
    assert (candidates["part"] == "train").all()
    assert str(candidates["label"].dtype) == "Int64"


def test_folders_layout_without_ai_folder_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path / "raw/human/a.jpg", _jpeg(1))

    with pytest.raises(FileNotFoundError, match=r"folders layout needs .*ai/"):
        list_raw_files(_params(tmp_path, layout="folders"))


# ---------- validate_files ----------


def _mixed_raw_files(raw: Path) -> dict[str, str | None]:
    """Write good, awkward and broken files; return ``{name: expected reason or None}``."""
    cmyk = Image.new("CMYK", (48, 40), (0, 255, 255, 0))
    rgba = np.dstack([_noise(48, 40, seed=5), np.tile(np.arange(48, dtype=np.uint8) * 5, (40, 1))])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    good_jpeg = _jpeg(1)
    files = {
        "good.jpg": (good_jpeg, None),
        "good.png": (_encode(Image.fromarray(_noise(48, 40, seed=2)), "PNG"), None),
        "cmyk.jpg": (_encode(cmyk, "JPEG", quality=95), None),
        "rgba.png": (_encode(Image.fromarray(rgba, mode="RGBA"), "PNG"), None),
        "rotated.jpg": (_encode(Image.fromarray(_noise(64, 40, 6)), "JPEG", exif=exif.tobytes()), None),
        "picture.webp": (_encode(Image.fromarray(_noise(48, 40, seed=7)), "WEBP", lossless=True), None),
        "phone.heic": (_encode(Image.fromarray(_noise(48, 40, seed=9)), "HEIF", quality=90), None),
        "web.avif": (_encode(Image.fromarray(_noise(48, 40, seed=10)), "AVIF", quality=90), None),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], "corrupt"),
        "empty.jpg": (b"", "empty"),
        "notes.jpg": (b"not an image at all\n", "not_an_image"),
        "tiny.png": (_encode(Image.fromarray(_noise(8, 8, seed=8)), "PNG"), "too_small"),
        "bomb.png": (_png_declaring(50_000, 50_000), "too_many_pixels"),
    }
    for name, (data, _) in files.items():
        _write(raw / name, data)
    return {name: reason for name, (_, reason) in files.items()} | {"vanished.jpg": "unreadable"}


@dataclass(frozen=True)
class Validated:
    """One ``validate_files`` run over the mixed raw files, with what went in and came out."""

    raw: Path
    params: IngestionParams
    expected: dict[str, str | None]
    candidates: pd.DataFrame
    valid: pd.DataFrame
    rejected: list[dict[str, Any]]


@pytest.fixture(scope="module", params=[1, 2], ids=["workers=1", "workers=2"])
def validated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Validated:
    """Validate the mixed raw files once per worker count (each run spawns a process pool)."""
    root = tmp_path_factory.mktemp(f"validate-{request.param}")
    raw = root / "raw"
    # 64 plain fillers first (validate_files hands out chunks of 64), so with two workers the
    # awkward and broken files are inspected by the second one, while the first does the fillers.
    fillers = {
        f"filler/{i:02d}.png": _encode(Image.fromarray(_noise(40, 32, seed=1000 + i)), "PNG")
        for i in range(64)
    }
    for name, data in fillers.items():
        _write(raw / name, data)
    expected: dict[str, str | None] = dict.fromkeys(fillers) | _mixed_raw_files(raw)
    names = list(expected)
    candidates = pd.DataFrame(
        {
            "path": [str(raw / n) for n in names],
            "label": pd.array([i % 2 for i in range(len(names))], dtype="Int64"),
            "group": [f"g{i}" for i in range(len(names))],
            "pair": [f"g{i}" for i in range(len(names))],
            "generator": "unknown",
            "part": "train",
        }
    )
    params = _params(root, workers=request.param)
    valid, rejected = validate_files(candidates, params)
    return Validated(raw, params, expected, candidates, valid, rejected)


def test_validate_files_accounts_for_every_candidate(validated: Validated) -> None:
    raw, expected, valid, rejected = validated.raw, validated.expected, validated.valid, validated.rejected

    assert len(valid) + len(rejected) == len(validated.candidates)
    assert _issues_by_path(rejected) == {str(raw / n): r for n, r in expected.items() if r is not None}
    assert all(issue["message"] for issue in rejected)
    assert valid["path"].tolist() == [str(raw / n) for n, r in expected.items() if r is None]
    assert list(valid.columns) == [
        *CANDIDATE_COLUMNS,
        "sha256",
        "stored_path",
        "width",
        "height",
        "format",
        "mode",
    ]


def test_validate_files_describes_each_valid_file(validated: Validated) -> None:
    valid, candidates = validated.valid, validated.candidates
    info = valid.set_index(valid["path"].map(lambda p: Path(p).relative_to(validated.raw).as_posix()))

    assert info.loc["rotated.jpg", ["width", "height"]].tolist() == [40, 64]  # as displayed
    assert info.loc["good.png", ["width", "height"]].tolist() == [48, 40]
    assert info.loc[~info.index.str.startswith("filler"), "format"].to_dict() == {
        "good.jpg": "JPEG",
        "good.png": "PNG",
        "cmyk.jpg": "JPEG",
        "rgba.png": "PNG",
        "rotated.jpg": "JPEG",
        "picture.webp": "WEBP",
        "phone.heic": "HEIF",
        "web.avif": "AVIF",
    }
    assert info.loc["cmyk.jpg", "mode"] == "CMYK"
    assert info.loc["rgba.png", "mode"] == "RGBA"
    kept = candidates[candidates["path"].isin(valid["path"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(valid[CANDIDATE_COLUMNS], kept[CANDIDATE_COLUMNS])  # carried along
    for name, row in info.iterrows():
        assert row["sha256"] == hashlib.sha256((validated.raw / str(name)).read_bytes()).hexdigest()


def test_validate_files_points_at_lossless_normalised_copies(validated: Validated) -> None:
    valid, params = validated.valid, validated.params
    normalised = {"cmyk.jpg", "rgba.png", "rotated.jpg", "picture.webp", "phone.heic", "web.avif"}

    for row in valid.itertuples(index=False):
        if Path(row.path).name not in normalised:
            assert row.stored_path == row.path
            continue
        stored = Path(row.stored_path)
        assert stored == Path(params.normalised_dir) / f"{row.sha256}.png"
        decoded = decode_image(Path(row.path).read_bytes(), ImageLimits(min_side=params.min_side))
        with Image.open(stored) as copy:
            assert (copy.format, copy.mode) == ("PNG", "RGB")
            assert copy.size == (row.width, row.height)
            np.testing.assert_array_equal(np.asarray(copy), np.asarray(decoded.pixels))
    copies = valid.loc[valid["stored_path"] != valid["path"]]
    assert sorted(Path(row.path).name for row in copies.itertuples()) == sorted(normalised)
    assert sorted(p.name for p in Path(params.normalised_dir).iterdir()) == sorted(
        f"{sha}.png" for sha in copies["sha256"]
    )


def test_inspect_file_reuses_an_existing_normalised_copy(tmp_path: Path) -> None:
    source = _write(tmp_path / "raw/grey.png", _encode(Image.new("L", (40, 40), 90), "PNG"))
    limits = ImageLimits()
    (tmp_path / "normalised").mkdir()

    first = inspect_file((str(source), limits, str(tmp_path / "normalised")))
    second = inspect_file((str(source), limits, str(tmp_path / "normalised")))

    assert first == second
    assert first["reason"] is None
    assert list((tmp_path / "normalised").iterdir()) == [Path(first["stored_path"])]


def test_two_workers_normalising_the_same_content_at_once_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Identical files (later dropped as duplicates) can reach two workers at the same time.
    # Replay that interleaving: worker A has written its copy but not yet moved it into
    # place when worker B writes and moves its own.
    grey = _encode(Image.new("L", (40, 40), 90), "PNG")
    first = _write(tmp_path / "raw/a/grey.png", grey)
    second = _write(tmp_path / "raw/b/grey.png", grey)
    normalised = tmp_path / "normalised"
    normalised.mkdir()
    original_save = Image.Image.save
    other_worker: dict[str, Any] = {}

    def save_then_let_the_other_worker_run(image: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        original_save(image, fp, *args, **kwargs)
        if "started" not in other_worker:
            other_worker["started"] = True
            other_worker["record"] = inspect_file((str(second), ImageLimits(), str(normalised)))

    monkeypatch.setattr(Image.Image, "save", save_then_let_the_other_worker_run)

    record = inspect_file((str(first), ImageLimits(), str(normalised)))

    assert record["reason"] is None
    assert other_worker["record"]["stored_path"] == record["stored_path"]
    assert [p.name for p in normalised.iterdir()] == [Path(record["stored_path"]).name]
    with Image.open(record["stored_path"]) as copy:
        assert copy.mode == "RGB"
        assert copy.getpixel((5, 5)) == (90, 90, 90)


def test_validate_files_with_no_candidates_returns_empty_results(tmp_path: Path) -> None:
    candidates = pd.DataFrame(columns=CANDIDATE_COLUMNS)

    valid, rejected = validate_files(candidates, _params(tmp_path))

    assert valid.empty
    assert rejected == []


# ---------- drop_duplicates ----------


def _valid_rows(rows: list[tuple[str, int | None, str]]) -> pd.DataFrame:
    """A ``validate_files``-shaped frame from ``(path, label, sha256)`` rows."""
    frame = pd.DataFrame(rows, columns=["path", "label", "sha256"])
    return pd.DataFrame(
        {
            "path": frame["path"],
            "label": pd.array(frame["label"], dtype="Int64"),
            "group": [f"g-{p}" for p in frame["path"]],
            "part": ["test" if pd.isna(lab) else "train" for lab in frame["label"]],
            "sha256": frame["sha256"],
            "stored_path": frame["path"],
            "width": 40,
            "height": 40,
            "format": "PNG",
            "mode": "RGB",
        }
    )


def test_drop_duplicates_keeps_the_first_and_reports_the_rest() -> None:
    valid = _valid_rows(
        [("a", 0, "h1"), ("b", 1, "h2"), ("a-copy", 0, "h1"), ("c", 1, "h3"), ("a-again", 0, "h1")]
    )

    unique, issues = drop_duplicates(valid)

    assert unique["path"].tolist() == ["a", "b", "c"]
    assert list(unique.columns) == list(valid.columns)
    assert str(unique["label"].dtype) == "Int64"
    assert _issues_by_path(issues) == {"a-copy": "duplicate", "a-again": "duplicate"}
    assert all("same content as a" in issue["message"] for issue in issues)


def test_duplicates_with_conflicting_labels_are_named_as_such() -> None:
    valid = _valid_rows([("human", 0, "h1"), ("ai", 1, "h1"), ("test", None, "h1"), ("other", 1, "h2")])

    unique, issues = drop_duplicates(valid)

    assert unique["path"].tolist() == ["human", "other"]
    assert _issues_by_path(issues) == {"ai": "duplicate_conflicting_label", "test": "duplicate"}
    conflict = next(issue for issue in issues if issue["path"] == "ai")
    assert "labelled 0 there, 1 here" in conflict["message"]


def test_no_duplicates_means_no_issues() -> None:
    valid = _valid_rows([("a", 0, "h1"), ("b", 1, "h2")])

    unique, issues = drop_duplicates(valid)

    pd.testing.assert_frame_equal(unique, valid)
    assert issues == []


# ---------- split_train_validation ----------


def _imbalanced_unique(n_groups: int, seed: int) -> pd.DataFrame:
    """De-duplicated files in ``n_groups`` groups of 1-6 files, about a quarter labelled AI.

    Every fourth group is a human/AI pair; the others hold one label (crops of one photograph).
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, str]] = []
    for group in range(n_groups):
        labels = [0, 1] if group % 4 == 0 else [int(rng.random() < 0.2)] * int(rng.integers(1, 7))
        rows += [(f"raw/{group}-{i}.jpg", label, f"group-{group}") for i, label in enumerate(labels)]
    frame = pd.DataFrame(rows, columns=["path", "label", "group"])
    return pd.DataFrame(
        {
            "path": frame["path"],
            "label": pd.array(frame["label"], dtype="Int64"),
            "group": frame["group"],
            "pair": frame["group"],
            "generator": ["sim/x2" if label else "camera/original" for label in frame["label"]],
            "part": "train",
            "sha256": [f"sha-{i}" for i in range(len(frame))],
            "stored_path": frame["path"].str.replace("raw/", "normalised/"),
            "width": 64.0,  # validate_files gives floats when some rows were rejected
            "height": 48.0,
            "format": "JPEG",
            "mode": "RGB",
        }
    )


def _with_test_rows(unique: pd.DataFrame, count: int) -> pd.DataFrame:
    """``unique`` plus ``count`` unlabelled test rows."""
    test = unique.head(count).assign(
        path=[f"test/{i}.jpg" for i in range(count)],
        stored_path=[f"test/{i}.jpg" for i in range(count)],
        label=pd.array([pd.NA] * count, dtype="Int64"),
        group=[f"test/{i}.jpg" for i in range(count)],
        pair=[f"test/{i}.jpg" for i in range(count)],
        part="test",
        sha256=[f"test-sha-{i}" for i in range(count)],
    )
    return pd.concat([unique, test], ignore_index=True)


def test_split_keeps_groups_whole_and_labels_stratified(tmp_path: Path) -> None:
    unique = _imbalanced_unique(400, seed=0)
    overall = unique["label"].mean()
    assert 0.2 < overall < 0.3  # the constructed set is imbalanced

    for seed in (1, 2, 42):
        manifest = split_train_validation(unique, _params(tmp_path, seed=seed))

        assert (manifest.groupby("group")["split"].nunique() == 1).all()
        validation = manifest[manifest["split"] == "validation"]
        assert abs(len(validation) / len(manifest) - 0.1) < 0.02
        assert abs(validation["label"].mean() - overall) < 0.01
        assert abs(manifest.loc[manifest["split"] == "train", "label"].mean() - overall) < 0.01


def test_split_is_deterministic_for_a_seed_and_changes_with_it(tmp_path: Path) -> None:
    unique = _imbalanced_unique(400, seed=1)

    first = split_train_validation(unique, _params(tmp_path, seed=7))
    again = split_train_validation(unique, _params(tmp_path, seed=7))
    other = split_train_validation(unique, _params(tmp_path, seed=8))

    pd.testing.assert_frame_equal(first, again)
    assert not first["split"].equals(other["split"])


def test_split_leaves_test_rows_in_test_and_shapes_the_manifest(tmp_path: Path) -> None:
    unique = _with_test_rows(_imbalanced_unique(40, seed=2), count=5)

    manifest = split_train_validation(unique, _params(tmp_path))

    assert list(manifest.columns) == MANIFEST_COLUMNS
    test = manifest[manifest["split"] == "test"]
    assert test["source_path"].tolist() == [f"test/{i}.jpg" for i in range(5)]
    assert test["label"].isna().all()
    assert set(manifest.loc[manifest["label"].notna(), "split"]) == {"train", "validation"}
    assert manifest["path"].tolist() == unique["stored_path"].tolist()
    assert manifest["source_path"].tolist() == unique["path"].tolist()
    assert manifest.dtypes[["label", "width", "height"]].astype(str).tolist() == ["Int8", "int32", "int32"]


def test_split_with_too_few_groups_says_what_is_needed(tmp_path: Path) -> None:
    unique = _imbalanced_unique(5, seed=3)

    with pytest.raises(
        ValueError, match=r"5 groups cannot make a 10% validation split \(needs at least 10\)"
    ):
        split_train_validation(unique, _params(tmp_path))


# ---------- build_report ----------


def test_build_report_counts_everything_and_names_each_problem(tmp_path: Path) -> None:
    manifest = split_train_validation(
        _with_test_rows(_imbalanced_unique(40, seed=4), count=3), _params(tmp_path)
    )
    manifest.loc[manifest.index[:2], "path"] = manifest.loc[manifest.index[:2], "source_path"]
    normalised = int((manifest["path"] != manifest["source_path"]).sum())
    assert normalised == len(manifest) - 2 - 3  # two made plain here; the three test rows were plain
    listing = [
        {"path": "raw/gone.jpg", "reason": "missing", "message": "listed in the table but not on disk"}
    ]
    rejected = [
        {"path": "raw/empty.jpg", "reason": "empty", "message": "the file is empty (0 bytes)"},
        {"path": "raw/bad.jpg", "reason": "corrupt", "message": "cannot be decoded"},
    ]
    duplicates = [{"path": "raw/copy.jpg", "reason": "duplicate", "message": "same content as raw/a.jpg"}]

    report = build_report(listing, rejected, duplicates, manifest)

    assert report["summary"] == {
        "ingested": len(manifest),
        "not_ingested": 4,
        "normalised_copies": normalised,
        "groups": manifest["group"].nunique(),
    }
    assert report["reasons"] == {"missing": 1, "empty": 1, "corrupt": 1, "duplicate": 1}
    assert set(report["splits"]) == {"train", "validation", "test"}
    assert report["splits"]["test"] == {"<NA>": 3}
    for split, counts in report["splits"].items():
        assert sum(counts.values()) == (manifest["split"] == split).sum()
    assert report["problems"] == [*listing, *rejected, *duplicates]
    for problem in report["problems"]:
        assert set(problem) == {"path", "reason", "message"}
        assert all(isinstance(value, str) and value for value in problem.values())
    assert json.loads(json.dumps(report)) == report  # JSON-ready for json.JSONDataset


def test_build_report_without_problems(tmp_path: Path) -> None:
    manifest = split_train_validation(_imbalanced_unique(40, seed=5), _params(tmp_path))

    report = build_report([], [], [], manifest)

    assert report["summary"]["not_ingested"] == 0
    assert report["reasons"] == {}
    assert report["problems"] == []
    json.dumps(report)


def test_sidecar_labels_other_than_0_or_1_are_ignored(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "train_data").mkdir(parents=True)
    (raw / "test_data_v2").mkdir()
    _write(raw / "train_data/a.png", _encode(Image.new("RGB", (40, 40), "red"), "PNG"))
    _write(raw / "test_data_v2/b.png", _encode(Image.new("RGB", (40, 40), "blue"), "PNG"))
    (raw / "train.csv").write_text("file_name,label\ntrain_data/a.png,1\n")
    (raw / "test.csv").write_text("id\ntest_data_v2/b.png\n")
    (raw / "sources.csv").write_text(
        "file_name,group,label\ntrain_data/a.png,g1,1\ntest_data_v2/b.png,g2,0.5\n"
    )

    candidates, _ = list_raw_files(_params(tmp_path))

    test_row = candidates[candidates["part"] == "test"].iloc[0]
    assert pd.isna(test_row["label"])
    assert test_row["group"] == "g2"


def _family_pairs(n_pairs: int) -> pd.DataFrame:
    """De-duplicated human/AI pairs of three generator families, two pairs per source photograph."""
    families = ["alpha/a1", "beta/b1", "gamma/g1"]
    rows = []
    for pair in range(n_pairs):
        for label, generator in ((0, "camera/original"), (1, families[pair % 3])):
            rows.append(
                {
                    "path": f"raw/{pair}-{label}.jpg",
                    "label": label,
                    "group": f"photo-{pair // 2}",
                    "pair": f"pair-{pair}",
                    "generator": generator,
                    "part": "test" if pair >= n_pairs - 6 else "train",
                }
            )
    frame = pd.DataFrame(rows)
    return frame.assign(
        label=pd.array(frame["label"], dtype="Int64"),
        sha256=[f"sha-{i}" for i in range(len(frame))],
        stored_path=frame["path"],
        width=64,
        height=64,
        format="JPEG",
        mode="RGB",
    )


def test_unseen_families_leave_training_and_validation_with_their_twins(tmp_path: Path) -> None:
    unique = _family_pairs(120)

    manifest = split_train_validation(unique, _params(tmp_path, unseen_families=["beta"]))

    unseen = manifest[manifest["split"] == "unseen"]
    beta = unique["generator"] == "beta/b1"
    beta_train_pairs = set(unique.loc[beta & (unique["part"] == "train"), "pair"])
    beta_test_pairs = set(unique.loc[beta & (unique["part"] == "test"), "pair"])
    assert set(unseen["pair"]) == beta_train_pairs, "every beta pair of the train part"
    assert sorted(unseen["label"].value_counts().tolist()) == [38, 38], "each AI image with its twin"
    assert set(manifest.loc[manifest["pair"].isin(beta_test_pairs), "split"]) == {"test"}, "test stays whole"
    beta_pairs = beta_train_pairs | beta_test_pairs
    seen = manifest[manifest["split"].isin(["train", "validation"])]
    assert not seen["generator"].str.startswith("beta/").any()
    assert not set(seen["pair"]) & beta_pairs
    assert set(seen["generator"]) == {"camera/original", "alpha/a1", "gamma/g1"}


def test_an_unseen_family_missing_from_the_data_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\['delta'\] are not in the data; families present: \['alpha'"):
        split_train_validation(_family_pairs(60), _params(tmp_path, unseen_families=["delta"]))


def test_the_sidecar_gives_pairs_and_generators(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for name in ("train_data/0.jpg", "train_data/1.jpg", "train_data/2.jpg", "train_data/3.jpg"):
        _write(raw / name, _jpeg(seed=len(name)))
    pd.DataFrame({"file_name": [f"train_data/{i}.jpg" for i in range(4)], "label": [0, 1, 1, 0]}).to_csv(
        raw / "train.csv", index=False
    )
    pd.DataFrame(
        {
            "file_name": ["train_data/0.jpg", "train_data/1.jpg", "train_data/2.jpg"],
            "group": ["photo-1", "photo-1", "photo-2"],
            "pair": ["p0", "p0", "p1"],
            "generator": ["camera/original", "realcugan/up2x", ""],
        }
    ).to_csv(raw / "sources.csv", index=False)

    candidates, _ = list_raw_files(_params(tmp_path))

    by_name = candidates.set_index("path")
    assert by_name.loc[str(raw / "train_data/1.jpg"), "pair"] == "p0"
    assert by_name.loc[str(raw / "train_data/1.jpg"), "generator"] == "realcugan/up2x"
    assert by_name.loc[str(raw / "train_data/2.jpg"), "generator"] == "unknown", "empty cell: not known"
    assert by_name.loc[str(raw / "train_data/3.jpg"), "pair"] == "pair-1", "not in the sidecar: row pairing"
