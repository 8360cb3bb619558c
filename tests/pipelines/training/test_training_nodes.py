"""Training: a tiny candidate learns, MLflow holds its run, one seed repeats, folds hold a family out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from mlflow.tracking import MlflowClient
from PIL import Image
from sklearn.datasets import images as sklearn_images

from ai_image_detection.input_pipeline import Perturbation, build_augmenter, make_dataset, perturbed_pixels
from ai_image_detection.models import BCEWithPriorPenalty, DetectorSpec, build_detector
from ai_image_detection.models.heads import model_families
from ai_image_detection.pipelines.ingestion.nodes import (
    IngestionParams,
    list_raw_files,
    split_train_validation,
    validate_files,
)
from ai_image_detection.pipelines.sample_data.nodes import SampleDataParams, generate_pairs
from ai_image_detection.pipelines.training import nodes as training_nodes
from ai_image_detection.pipelines.training.folds import HELD_OUT_SCORE_COLUMNS
from ai_image_detection.pipelines.training.nodes import (
    extract_features,
    leave_one_family_out,
    leave_one_family_out_probe,
    manifest_version,
    train_candidate,
    train_probe,
)
from ai_image_detection.pipelines.training.params import (
    CandidateParams,
    ExpertParams,
    LeaveOneFamilyOutParams,
)
from ai_image_detection.pipelines.training.probe_heads import expert_rows, fit_probe_head
from ai_image_detection.sample_data.photo_sources import SourcePhoto
from tests.test_input_pipeline import project_params

EPOCHS = 4


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A small real/AI set from photos this environment already has, ingested."""
    raw = tmp_path_factory.mktemp("raw")
    sklearn_dir = Path(sklearn_images.__file__).parent
    photos = [
        SourcePhoto(f"p:{path.name}", "pypi", "pkg", "1", path.name, "test", "test", path.read_bytes())
        for path in (
            sklearn_dir / "china.jpg",
            sklearn_dir / "flower.jpg",
            Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
        )
    ]
    params = SampleDataParams.model_validate(
        {
            "size": "t",
            "sizes": {"t": {"pairs": 160, "registries": ["pypi"]}},
            "seed": 3,
            "test_fraction": 0.0,
            "crop_size": 64,
            "min_scale": 0.35,
            "lossless_fraction": 0.4,
            "jpeg_quality": 95,
            "min_distinct_photos": 1,
            "workers": 1,
            "contact_sheet_pairs": 1,
            "decoder": {
                "families": ["transposed_conv", "nearest_conv"],
                "factors": [2],
                "factor_weights": [1.0],
                "hidden_channels": 8,
                "residual_strength": [1.0, 2.5],
            },
        }
    )
    train_images, _, train_table, _, _ = generate_pairs(photos, params)
    (raw / "train_data").mkdir()
    for name, data in train_images.items():
        (raw / "train_data" / name).write_bytes(data)
    train_table.to_csv(raw / "train.csv", index=False)
    ingestion = IngestionParams(
        raw_dir=str(raw),
        layout="kaggle",
        min_side=32,
        max_pixels=10**7,
        validation_fraction=0.2,
        seed=0,
        normalised_dir=str(raw / "normalised"),
        workers=1,
    )
    candidates, _ = list_raw_files(ingestion)
    valid, _ = validate_files(candidates, ingestion)
    return split_train_validation(valid, ingestion)


def tiny_candidate() -> CandidateParams:
    return CandidateParams.model_validate(
        {
            "detector": {
                "architecture": "small_cnn",
                "image_size": 64,
                "widths": [8, 16, 32],
                "dropout": 0.1,
            },
            "epochs": EPOCHS,
            "batch_size": 16,
            "learning_rate": 0.005,
            "weight_decay": 0.0001,
            "warmup_epochs": 0,
            "freeze_backbone_epochs": 1,
            "early_stopping_patience": 5,
            "loss": {"alpha": 0.5, "beta": 0.5},
        }
    )


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MlflowClient]:
    """A private MLflow store, artifacts included, in ``tmp_path``; the working directory (a git tree) kept.

    The shared fixture changes directory instead, which would leave the ``git_commit`` tag unknown.
    """
    for variable in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_EXPERIMENT_ID",
        "MLFLOW_RUN_ID",
    ):
        monkeypatch.delenv(variable, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("tests", artifact_location=(tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)  # not ./mlruns of the working directory
    yield client
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_a_tiny_candidate_learns_and_is_tracked(manifest: pd.DataFrame, tracking: MlflowClient) -> None:
    with mlflow.start_run(run_name="kedro run") as parent:
        model, history = train_candidate(
            manifest, tiny_candidate(), project_params(), 42, "mirrored", "abc123", "tiny"
        )

    epochs_run = len(history["val_loss"])
    assert 2 <= epochs_run <= EPOCHS
    assert min(history["val_loss"][1:]) < history["val_loss"][0]
    assert model.get_layer("backbone").trainable, "the backbone is unfrozen after the warm-up epochs"
    [child] = tracking.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert child.info.run_name == "tiny"
    assert child.data.params["candidate.detector.architecture"] == "small_cnn"
    assert child.data.params["augmentation.jpeg.probability"] == "0.1"
    assert child.data.tags["manifest_md5"] == "abc123"
    assert child.data.tags["git_commit"]
    assert child.data.tags["distribution"] == "mirrored (1 replica(s))", "MirroredStrategy on the CPU"
    assert model_families(model) == [], "no generator column, nothing to attribute to: one output"
    for metric in ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"):
        assert len(tracking.get_metric_history(child.info.run_id, metric)) == epochs_run
    assert [a.path for a in tracking.list_artifacts(child.info.run_id)] == ["model_summary.txt"]
    assert child.info.artifact_uri.startswith(
        tracking.get_experiment(parent.info.experiment_id).artifact_location
    )


def _first_batch_loss(manifest: pd.DataFrame, seed: int) -> float:
    candidate = tiny_candidate()
    keras.utils.set_random_seed(seed)
    augmentation = project_params()
    batches = make_dataset(manifest, "train", 64, 16, augmentation, seed, build_augmenter(augmentation, seed))
    model = build_detector(candidate.detector)
    images, labels = next(iter(batches))
    return float(BCEWithPriorPenalty(alpha=0.5, beta=0.5)(labels, model(images, training=False)))


def test_the_same_seed_gives_the_same_first_batch_loss(manifest: pd.DataFrame) -> None:
    assert _first_batch_loss(manifest, 7) == _first_batch_loss(manifest, 7)
    assert _first_batch_loss(manifest, 7) != _first_batch_loss(manifest, 8)


def test_manifest_version_is_the_dvc_md5() -> None:
    assert manifest_version(b"abc") == "900150983cd24fb0d6963f7d28e17f72"
    assert np.char.str_len(manifest_version(b"")) == 32


FAMILY_SIZE = 32


@pytest.fixture(scope="module")
def family_manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Human/AI pairs of three trained families (AI brighter than its twin), one unseen family, a test row."""
    folder = tmp_path_factory.mktemp("families")
    rng = np.random.default_rng(0)
    rows = []
    layout = [("train", 4), ("validation", 2)]
    for family in ("alpha", "beta", "gamma", "delta"):
        for split, pairs in layout if family != "delta" else [("unseen", 2)]:
            for index in range(pairs):
                pair = f"{family}-{split}-{index}"
                for label, generator in ((0, "camera/original"), (1, f"{family}/m1")):
                    brightness = (150 if label else 90) + rng.uniform(-20, 20)
                    pixels = np.clip(rng.normal(brightness, 4, (40, 40, 3)), 0, 255).astype(np.uint8)
                    path = folder / f"{pair}-{label}.png"
                    Image.fromarray(pixels).save(path)
                    rows.append(
                        {
                            "path": str(path),
                            "label": label,
                            "split": split,
                            "pair": pair,
                            "generator": generator,
                        }
                    )
    rows.append(
        {"path": rows[0]["path"], "label": pd.NA, "split": "test", "pair": "t", "generator": "unknown"}
    )
    return pd.DataFrame(rows).astype({"label": "Int8"})


def fold_candidate(epochs: int = 5) -> CandidateParams:
    return tiny_candidate().model_copy(
        update={
            "detector": tiny_candidate().detector.model_copy(
                update={"image_size": FAMILY_SIZE, "widths": [4]}
            ),
            "epochs": epochs,
            "batch_size": 8,
            "freeze_backbone_epochs": 0,
        }
    )


def brightness_model(size: int) -> keras.Model:
    """P(AI) = sigmoid((mean pixel - 120) / 10): AI images (brighter) score above their twins."""
    inputs = keras.Input((size, size, 3))
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.full((3, 1), 1 / 30, dtype=np.float32), np.array([-12.0], dtype=np.float32)])
    return model


@pytest.fixture
def recorded_folds(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``train_candidate`` replaced by a recorder of what each fold is trained on (a fixed model back)."""
    calls: list[dict[str, Any]] = []

    def record(
        manifest: pd.DataFrame,
        candidate: CandidateParams,
        augmentation: object,
        seed: int,
        distribution: str,
        data_version: str,
        candidate_name: str,
    ) -> tuple[keras.Model, dict[str, list[float]]]:
        calls.append({"manifest": manifest.copy(), "candidate": candidate, "name": candidate_name})
        return brightness_model(candidate.detector.image_size), {}

    monkeypatch.setattr(training_nodes, "train_candidate", record)
    return calls


def run_folds(manifest: pd.DataFrame, families: list[str] | None, epochs: int | None = 1) -> pd.DataFrame:
    return leave_one_family_out(
        manifest,
        fold_candidate(),
        project_params(),
        42,
        "default",
        "abc123",
        LeaveOneFamilyOutParams(families=families, epochs=epochs),
        9,
        "tiny",
    )


def test_each_fold_never_trains_on_its_family(
    family_manifest: pd.DataFrame, recorded_folds: list[dict[str, Any]]
) -> None:
    scores = run_folds(family_manifest, None)

    assert [call["name"] for call in recorded_folds] == [
        "tiny/without-alpha",
        "tiny/without-beta",
        "tiny/without-gamma",
    ]
    for family, call in zip(("alpha", "beta", "gamma"), recorded_folds, strict=True):
        fold = call["manifest"]
        trained = fold[fold["split"].isin(["train", "validation"])]
        held_pairs = set(family_manifest.loc[family_manifest["pair"].str.startswith(f"{family}-"), "pair"])
        assert not trained["generator"].str.startswith(f"{family}/").any()
        assert held_pairs.isdisjoint(trained["pair"]), "the family's human twins are held out too"
        assert {"train", "validation"} <= set(trained["split"])
        assert "test" not in set(fold["split"])
        assert call["candidate"].epochs == 1, "rotation.epochs overrides the candidate's"

        rows = scores[scores["fold"] == family]
        held_out = rows[rows["split"] == "held_out"]
        expected = family_manifest[family_manifest["pair"].isin(held_pairs)]
        assert sorted(held_out["path"]) == sorted(expected["path"])
        assert sorted(held_out["label"]) == [0] * 6 + [1] * 6
        validation = rows[rows["split"] == "validation"]
        assert sorted(validation["path"]) == sorted(fold.loc[fold["split"] == "validation", "path"])
        assert not validation["generator"].str.startswith(f"{family}/").any()
        assert not rows["path"].str.contains("delta-").any(), (
            "families unseen at ingestion stay out of the folds"
        )
    assert list(scores.columns) == HELD_OUT_SCORE_COLUMNS
    assert set(scores["view"]) == {"clean"}, "a whole detector's folds score the images as stored"
    assert scores["probability_ai"].dtype == np.float64
    assert scores["probability_ai"].between(0, 1).all()
    ai, human = scores[scores["label"] == 1], scores[scores["label"] == 0]
    assert ai["probability_ai"].min() > human["probability_ai"].max(), (
        "each image is scored by the fold's model"
    )


def test_only_the_families_asked_for_are_rotated_with_the_candidates_epochs(
    family_manifest: pd.DataFrame, recorded_folds: list[dict[str, Any]]
) -> None:
    scores = run_folds(family_manifest, ["beta"], epochs=None)
    assert [call["name"] for call in recorded_folds] == ["tiny/without-beta"]
    assert recorded_folds[0]["candidate"].epochs == 5
    assert set(scores["fold"]) == {"beta"}


@pytest.mark.parametrize("family", ["omega", "delta"])
def test_a_family_that_was_not_trained_on_is_a_clear_error(
    family_manifest: pd.DataFrame, recorded_folds: list[dict[str, Any]], family: str
) -> None:
    message = (
        rf"cannot hold out \['{family}'\]: "
        r"the AI families in train and validation are \['alpha', 'beta', 'gamma'\]$"
    )
    with pytest.raises(ValueError, match=message):
        run_folds(family_manifest, ["alpha", family])
    assert recorded_folds == [], "nothing is trained before the error"


def test_data_without_families_gives_no_folds(
    family_manifest: pd.DataFrame, recorded_folds: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    scores = run_folds(family_manifest.assign(generator="unknown"), None)
    assert scores.empty and list(scores.columns) == HELD_OUT_SCORE_COLUMNS
    assert recorded_folds == []
    assert "no leave-one-family-out folds" in caplog.text


@pytest.mark.slow
def test_a_real_fold_is_trained_tracked_and_scored(
    family_manifest: pd.DataFrame, tracking: MlflowClient
) -> None:
    with mlflow.start_run(run_name="kedro run") as parent:
        scores = run_folds(family_manifest, ["gamma"])

    [child] = tracking.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert child.info.run_name == "tiny/without-gamma"
    assert child.data.params["candidate.epochs"] == "1"
    assert len(tracking.get_metric_history(child.info.run_id, "val_loss")) == 1
    assert set(scores["split"]) == {"validation", "held_out"}
    held_out = scores[scores["split"] == "held_out"]
    assert set(held_out["generator"]) == {"gamma/m1", "camera/original"}
    assert len(held_out) == 12
    assert scores["probability_ai"].between(0, 1).all()


# ------------------------------------------------------------------------------------------
# Probes: cached features of a frozen extractor, heads trained on them
# ------------------------------------------------------------------------------------------


def colour_extractor(size: int) -> keras.Model:
    """A frozen stand-in for a pretrained backbone: each tile's mean colour (AI tiles are brighter)."""
    image = keras.Input((size, size, 3), name="image")
    extractor = keras.Model(image, keras.layers.GlobalAveragePooling2D()(image), name="feature_extractor")
    extractor.trainable = False
    return extractor


def probe_candidate(epochs: int = 60) -> CandidateParams:
    return fold_candidate(epochs).model_copy(
        update={
            "probe": True,
            "learning_rate": 0.05,
            "weight_decay": 0.0,
            "early_stopping_patience": 60,
            "detector": fold_candidate().detector.model_copy(update={"dropout": 0.0}),
        }
    )


@pytest.fixture
def extractors(monkeypatch: pytest.MonkeyPatch) -> list[CandidateParams]:
    """``feature_extractor`` replaced by :func:`colour_extractor`; records each build."""
    built: list[CandidateParams] = []

    def build(spec: Any) -> keras.Model:
        built.append(spec)
        return colour_extractor(spec.image_size)

    monkeypatch.setattr(training_nodes, "feature_extractor", build)
    return built


def test_features_are_cached_for_every_train_and_validation_tile(
    family_manifest: pd.DataFrame, extractors: list[CandidateParams]
) -> None:
    features = extract_features(family_manifest, probe_candidate(), max_tiles=9, seed=0)
    trained = family_manifest[family_manifest["split"].isin(["train", "validation"])]
    assert set(features["path"]) == set(trained["path"]), "no test or unseen image is cached"
    assert (features.groupby("path")["tile"].count() == 1).all(), "a 40 px image is one 32 px tile"
    row = features.iloc[0]
    centre = np.asarray(Image.open(row["path"]).convert("RGB"))[4:36, 4:36].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(row["features"], centre, rtol=1e-5)
    assert set(features["view"]) == {"clean"}
    assert len(extractors) == 1


def test_training_tiles_get_one_reshared_view_each(
    family_manifest: pd.DataFrame, extractors: list[CandidateParams]
) -> None:
    degradations = [{"kind": "blur", "sigma": 2.0, "resave_quality": 80}, {"kind": "jpeg", "quality": 40}]
    candidate = probe_candidate().model_copy(
        update={"reshared_views": [Perturbation.model_validate(d) for d in degradations]}
    )
    features = extract_features(family_manifest, candidate, max_tiles=9, seed=0)
    views = features[features["view"] != "clean"]
    train = family_manifest.loc[family_manifest["split"] == "train", "path"]
    assert sorted(views["path"]) == sorted(train), (
        "one re-shared view per training image, none for validation"
    )
    assert set(views["view"]) == {"blur_2_jpeg_80", "jpeg_40"}, "both drawn, named by their settings"
    again = extract_features(family_manifest, candidate, max_tiles=9, seed=0)
    pd.testing.assert_frame_equal(views[["path", "view"]], again.loc[views.index, ["path", "view"]])
    row = views[views["view"] == "blur_2_jpeg_80"].iloc[0]
    pixels = np.asarray(Image.open(row["path"]).convert("RGB"))
    blurred = perturbed_pixels(pixels, candidate.reshared_views[0])[4:36, 4:36].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(row["features"], blurred, rtol=1e-5)


def test_training_tiles_get_several_different_reshared_views(
    family_manifest: pd.DataFrame, extractors: list[CandidateParams]
) -> None:
    degradations = [
        {"kind": "blur", "sigma": 1.5},
        {"kind": "jpeg", "quality": 40},
        {"kind": "downscale", "factor": 0.5},
        {"kind": "webp", "quality": 60},
    ]
    candidate = probe_candidate().model_copy(
        update={
            "reshared_views": [Perturbation.model_validate(d) for d in degradations],
            "reshared_views_per_image": 3,
        }
    )
    features = extract_features(family_manifest, candidate, max_tiles=9, seed=0)
    views = features[features["view"] != "clean"]
    train = family_manifest.loc[family_manifest["split"] == "train", "path"]
    per_image = views.groupby("path")["view"].agg(["count", "nunique"])
    assert sorted(per_image.index) == sorted(train), "re-shared views of training images only"
    assert (per_image["count"] == 3).all() and (per_image["nunique"] == 3).all(), (
        "each training image three times, after three different degradations"
    )
    assert set(views["view"]) == {"blur_1.5", "jpeg_40", "downscale_0.5", "webp_60"}, (
        "each named by its setting"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"probe": True}, "no pretrained weights here"),
        (
            {"reshared_views": [{"kind": "jpeg", "quality": 70}]},
            "reshared_views are cached features of a probe",
        ),
        (
            {
                "detector": {
                    "architecture": "clip_vit_b16",
                    "weights": "imagenet",
                    "image_size": 224,
                    "class_token_layers": [2],
                }
            },
            "class_token_layers are the features a probe reads",
        ),
        (
            {"experts": {"as_published": {"view_kinds": ["clean"], "l2": 0.01}}},
            "expert heads are fitted on a probe's cached features",
        ),
    ],
)
def test_probe_settings_on_a_candidate_that_ignores_them_are_an_error(
    settings: dict[str, Any], message: str
) -> None:
    config = {**fold_candidate().model_dump(mode="json"), **settings}
    with pytest.raises(ValueError, match=message):
        CandidateParams.model_validate(config)


@pytest.mark.parametrize(
    ("heads", "message"),
    [
        ({"main_head_class_token_layers": [1, 3]}, r"main_head_class_token_layers \[1, 3\]"),
        ({"main_head_class_token_layers": []}, r"main_head_class_token_layers \[\]"),
        (
            {"experts": {"deep": {"view_kinds": ["blur"], "l2": 0.01, "class_token_layers": [5]}}},
            r"experts.deep.class_token_layers \[5\]",
        ),
    ],
)
def test_a_head_reading_blocks_the_detector_does_not_cache_is_an_error(
    heads: dict[str, Any], message: str
) -> None:
    config = {
        **fold_candidate().model_dump(mode="json"),
        "probe": True,
        "detector": {
            "architecture": "clip_vit_b16",
            "weights": "imagenet",
            "image_size": 224,
            "class_token_layers": [1, 2, -1],
            "clip_embedding": False,
        },
        **heads,
    }
    with pytest.raises(ValueError, match=message):
        CandidateParams.model_validate(config)
    config.update(main_head_class_token_layers=[2, 11], experts={})
    assert CandidateParams.model_validate(config).main_head_class_token_layers == [2, 11]


def test_more_reshared_views_per_image_than_degradations_is_an_error() -> None:
    config = {
        **fold_candidate().model_dump(mode="json"),
        "probe": True,
        "detector": {"architecture": "clip_vit_b16", "weights": "imagenet", "image_size": 224},
        "reshared_views": [{"kind": "jpeg", "quality": 70}],
        "reshared_views_per_image": 2,
    }
    with pytest.raises(ValueError, match="each view of an image is a different one"):
        CandidateParams.model_validate(config)


def test_only_a_probe_caches_features(family_manifest: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="probes only"):
        extract_features(family_manifest, fold_candidate(), max_tiles=9, seed=0)


@pytest.mark.slow
def test_a_probe_trains_its_heads_and_ships_them_behind_the_extractor(
    family_manifest: pd.DataFrame, extractors: list[CandidateParams], tracking: MlflowClient
) -> None:
    features = extract_features(family_manifest, probe_candidate(), max_tiles=9, seed=0)
    with mlflow.start_run(run_name="kedro run") as parent:
        detector, history = train_probe(family_manifest, features, probe_candidate(), 42, "abc123", "probe")

    assert model_families(detector) == ["human", "alpha", "beta", "gamma"]
    validation = family_manifest[family_manifest["split"] == "validation"]
    images = np.stack([np.asarray(Image.open(p).convert("RGB"))[4:36, 4:36] for p in validation["path"]])
    probability, families = detector.predict(images.astype(np.float32), verbose=0)
    labels = validation["label"].astype(int).to_numpy()
    assert probability[labels == 1].min() > probability[labels == 0].max(), "brighter = AI, learnt"
    assert (np.argmax(families[labels == 0], axis=1) == 0).all(), "human images attributed to human"
    assert min(history["val_probability_ai_loss"]) < history["val_probability_ai_loss"][0]
    [child] = tracking.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert child.data.tags["attribution_families"] == "human,alpha,beta,gamma"
    assert child.data.params["candidate.probe"] == "True"


@pytest.mark.parametrize(
    ("view_kinds", "learnt"),
    [
        (["clean", "jpeg"], [True, True, True, True, False, True, False]),
        (["blur"], [False, True, False, True, True, True, False]),
    ],
)
def test_an_expert_learns_its_views_in_both_classes_and_every_other_tile_as_human(
    view_kinds: list[Any], learnt: list[bool]
) -> None:
    train = pd.DataFrame(
        {
            "view": ["clean", "clean", "jpeg_70", "jpeg_70", "blur_1.5", "blur_1.5", "webp_70"],
            "label": [1, 0, 1, 0, 1, 0, 1],
        }
    )
    views = [
        Perturbation(kind="jpeg", quality=70),
        Perturbation(kind="blur", sigma=1.5),
        Perturbation(kind="webp", quality=70),
    ]
    assert expert_rows(train, views, ExpertParams(view_kinds=view_kinds, l2=0.1)).tolist() == learnt


@pytest.mark.slow
def test_a_probe_with_experts_ships_every_head_joined_by_max_logit(
    family_manifest: pd.DataFrame, extractors: list[CandidateParams], tracking: MlflowClient
) -> None:
    candidate = probe_candidate().model_copy(
        update={
            "reshared_views": [Perturbation(kind="jpeg", quality=60), Perturbation(kind="blur", sigma=1.0)],
            "reshared_views_per_image": 2,
            "experts": {
                "as_published": ExpertParams(view_kinds=["clean", "jpeg"], l2=0.01),
                "reshared": ExpertParams(view_kinds=["blur"], l2=0.01),
            },
        }
    )
    features = extract_features(family_manifest, candidate, max_tiles=9, seed=0)
    with mlflow.start_run(run_name="kedro run") as parent:
        detector, _ = train_probe(family_manifest, features, candidate, 42, "abc123", "probe")

    head = detector.get_layer("probe_head")
    validation = family_manifest[family_manifest["split"] == "validation"]
    images = np.stack([np.asarray(Image.open(p).convert("RGB"))[4:36, 4:36] for p in validation["path"]])
    probability, _ = detector.predict(images.astype(np.float32), verbose=0)
    colours = images.reshape(len(images), -1, 3).mean(axis=1)
    labels = validation["label"].astype(int).to_numpy()
    for name in ("as_published", "reshared"):
        expert = keras.Model(head.input, head.get_layer(f"expert_{name}").output)
        says = expert.predict_on_batch(colours)[:, 0]
        assert says[labels == 1].min() > says[labels == 0].max(), f"{name} learnt brighter = AI"
        assert (probability[:, 0] >= 1 / (1 + np.exp(-says)) - 1e-5).all(), f"at least as AI as {name}"
    assert probability[labels == 1].min() > probability[labels == 0].max()
    [child] = tracking.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    train = features.merge(family_manifest.loc[family_manifest["split"] == "train", ["path", "label"]])
    humans = (train["label"] == 0).sum()
    blurred_ai = ((train["view"] == "blur_1") & (train["label"] == 1)).sum()
    metrics = child.data.metrics
    assert metrics["expert_as_published_tiles"] == len(train) - blurred_ai, "blurred AI tiles left out"
    assert metrics["expert_reshared_tiles"] == humans + blurred_ai, "of the AI tiles, the blurred only"
    assert metrics["expert_reshared_iterations"] > 0


def test_each_head_of_a_probe_reads_only_the_blocks_it_names(
    family_manifest: pd.DataFrame, tracking: MlflowClient
) -> None:
    """CLIP features of two blocks: the main head reads block 2, an expert block 5, each its own signal."""
    candidate = probe_candidate().model_copy(
        update={
            "detector": DetectorSpec(
                architecture="clip_vit_b16",
                weights="imagenet",
                image_size=224,
                class_token_layers=[2, 5],
                clip_embedding=False,
                dropout=0.0,
            ),
            "main_head_class_token_layers": [2],
            "experts": {"deep": ExpertParams(view_kinds=["clean"], l2=0.01, class_token_layers=[5])},
        }
    )
    rows = family_manifest[family_manifest["split"].isin(["train", "validation"])]
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(rows), 2 * 768)).astype(np.float32)
    labels = rows["label"].to_numpy(np.float32)
    features += labels[:, None]  # every column of both blocks carries the label, noisily
    tile_features = pd.DataFrame(
        {"path": rows["path"].to_numpy(), "view": "clean", "tile": 0, "features": list(features)}
    )
    with mlflow.start_run(run_name="kedro run"):
        head, _ = fit_probe_head(family_manifest, tile_features, candidate, 42, "abc123", "probe")

    main_kernel = head.get_layer("main_logit").get_weights()[0][:, 0]
    expert_kernel = head.get_layer("expert_deep").get_weights()[0][:, 0]
    assert not main_kernel[768:].any() and main_kernel.sum() > 0, "the main head reads block 2 alone"
    assert not expert_kernel[:768].any() and expert_kernel.sum() > 0, "the expert reads block 5 alone"
    assert not head.get_layer("family_probabilities").get_weights()[0][768:].any()
    probability, _ = head.predict_on_batch(features)
    assert probability[labels == 1].min() > probability[labels == 0].max()


def test_a_probe_without_cached_features_for_an_image_stops(
    family_manifest: pd.DataFrame, extractors: list[CandidateParams], tracking: MlflowClient
) -> None:
    features = extract_features(family_manifest, probe_candidate(), max_tiles=9, seed=0)
    with pytest.raises(ValueError, match="1 train/validation images have no cached features"):
        train_probe(family_manifest, features.iloc[1:], probe_candidate(), 42, "abc123", "probe")


@pytest.mark.slow
def test_probe_folds_hold_each_family_out_of_the_heads(
    family_manifest: pd.DataFrame,
    extractors: list[CandidateParams],
    tracking: MlflowClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    features = extract_features(family_manifest, probe_candidate(), max_tiles=9, seed=0)
    trained_on: list[pd.DataFrame] = []
    fit = training_nodes.fit_probe_head

    def recording_fit(manifest: pd.DataFrame, *args: Any) -> Any:
        trained_on.append(manifest)
        return fit(manifest, *args)

    monkeypatch.setattr(training_nodes, "fit_probe_head", recording_fit)
    with mlflow.start_run(run_name="kedro run"):
        scores = leave_one_family_out_probe(
            family_manifest,
            features,
            probe_candidate(),
            42,
            "abc123",
            LeaveOneFamilyOutParams(families=["alpha", "beta"], epochs=40),
            "probe",
        )

    assert list(scores.columns) == HELD_OUT_SCORE_COLUMNS
    assert extractors == [probe_candidate().detector], "folds reuse the cache: the extractor ran once"
    for family, fold in zip(("alpha", "beta"), trained_on, strict=True):
        trained = fold[fold["split"].isin(["train", "validation"])]
        assert not trained["generator"].str.startswith(f"{family}/").any()
        held = scores[(scores["fold"] == family) & (scores["split"] == "held_out")]
        assert set(held["generator"]) == {f"{family}/m1", "camera/original"}
        ai, human = (
            held.loc[held["label"] == 1, "probability_ai"],
            held.loc[held["label"] == 0, "probability_ai"],
        )
        assert ai.min() > human.max(), f"brightness transfers to the unseen family {family}"


def test_probe_folds_also_score_the_held_out_familys_reshared_views(
    family_manifest: pd.DataFrame, extractors: list[CandidateParams], tracking: MlflowClient
) -> None:
    candidate = probe_candidate().model_copy(
        update={
            "reshared_views": [Perturbation(kind="blur", sigma=1.5), Perturbation(kind="jpeg", quality=60)]
        }
    )
    features = extract_features(family_manifest, candidate, max_tiles=9, seed=0)
    with mlflow.start_run(run_name="kedro run"):
        scores = leave_one_family_out_probe(
            family_manifest,
            features,
            candidate,
            42,
            "abc123",
            LeaveOneFamilyOutParams(families=["alpha"], epochs=40),
            "probe",
        )

    assert list(scores.columns) == HELD_OUT_SCORE_COLUMNS
    clean, reshared = scores[scores["view"] == "clean"], scores[scores["view"] != "clean"]
    assert not clean.duplicated("path").any(), "each scored image once as stored"
    held_pairs = family_manifest["pair"].str.startswith("alpha-")
    held_training = family_manifest.loc[held_pairs & (family_manifest["split"] == "train"), "path"]
    cached = features[features["view"] != "clean"]
    expected = cached[cached["path"].isin(set(held_training))]
    assert sorted(zip(reshared["path"], reshared["view"], strict=True)) == sorted(
        zip(expected["path"], expected["view"], strict=True)
    ), "the held-out family's cached re-shared views, and nobody else's"
    assert len(expected) == len(held_training), "one view per training image here"
    assert set(reshared["split"]) == {"held_out"} and set(reshared["view"]) == {"blur_1.5", "jpeg_60"}
    ai, human = reshared[reshared["label"] == 1], reshared[reshared["label"] == 0]
    assert ai["probability_ai"].min() > human["probability_ai"].max(), "blur and JPEG keep the brightness"
