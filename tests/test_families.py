"""Generator families: a held-out family takes its twins along and never leaks into training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ai_image_detection.families import (
    attribution_families,
    families_of,
    family_targets,
    held_out_pairs,
    trained_ai_families,
    without_family,
)

HUMAN = "camera/original"


def manifest() -> pd.DataFrame:
    """Human/AI pairs of three families in train and validation, one held-out family, an unlabelled test."""
    rows = []
    layout = [
        ("train", "alpha/a1", 3),
        ("train", "beta/b1", 2),
        ("train", "gamma/g1", 2),
        ("validation", "alpha/a2", 1),
        ("validation", "beta/b2", 1),
        ("unseen", "delta/d1", 2),
    ]
    for split, generator, pairs in layout:
        for index in range(pairs):
            pair = f"{generator}-{index}"
            for label, made_by in ((0, HUMAN), (1, generator)):
                rows.append(
                    {
                        "path": f"{pair}-{label}.png",
                        "label": label,
                        "split": split,
                        "pair": pair,
                        "generator": made_by,
                    }
                )
    rows.append({"path": "t.png", "label": pd.NA, "split": "test", "pair": "t", "generator": "unknown"})
    rows.append({"path": "u.png", "label": 1, "split": "train", "pair": "u", "generator": "unknown"})
    return pd.DataFrame(rows).astype({"label": "Int8"})


def test_families_are_the_part_before_the_slash() -> None:
    frame = pd.DataFrame({"generator": ["realcugan/up2x-conservative", "camera/original", "unknown", ""]})
    assert list(families_of(frame)) == ["realcugan", "camera", "unknown", "unknown"]


def test_held_out_pairs_take_the_twins_along() -> None:
    data = manifest()
    held = data[held_out_pairs(data, ["beta"])]
    assert len(held) == 6, "three beta pairs: the AI image and its human twin each"
    assert set(held["generator"]) == {"beta/b1", "beta/b2", HUMAN}
    assert [sorted(labels) for labels in held.groupby("pair")["label"].apply(list)] == [[0, 1]] * 3
    assert not data.loc[~held_out_pairs(data, ["beta"]), "generator"].str.startswith("beta/").any()


def test_several_families_at_once() -> None:
    data = manifest()
    held = data[held_out_pairs(data, ["alpha", "gamma"])]
    assert set(held["pair"].str.split("/").str[0]) == {"alpha", "gamma"}
    assert len(held) == 2 * (3 + 1 + 2)


def test_an_unknown_family_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match=r"unseen families \['betta'\] are not in the data; families present: "
    ):
        held_out_pairs(manifest(), ["alpha", "betta"])


def test_the_trained_ai_families_leave_out_unseen_test_humans_and_unknown() -> None:
    assert trained_ai_families(manifest()) == ["alpha", "beta", "gamma"]


def test_a_fold_never_trains_or_validates_on_its_family() -> None:
    data = manifest()
    for family in trained_ai_families(data):
        fold = without_family(data, family)
        seen = fold[fold["split"].isin(["train", "validation"])]
        assert not families_of(seen).eq(family).any(), f"{family} leaked into the fold without it"
        held_pairs = set(data.loc[families_of(data) == family, "pair"])
        assert held_pairs.isdisjoint(seen["pair"]), "a twin of the held-out family stayed in training"
        assert set(fold.loc[fold["pair"].isin(held_pairs), "split"]) == {"unseen"}


def test_a_fold_keeps_the_other_pairs_where_they_were_and_drops_test() -> None:
    data = manifest()
    fold = without_family(data, "beta")
    assert "test" not in set(fold["split"])
    assert len(fold) == len(data) - 1
    others = fold[~fold["pair"].str.startswith("beta/")]
    original = data.set_index("path").loc[others["path"], "split"]
    assert list(others["split"]) == list(original), "other families and the ingestion's unseen stay put"
    assert set(fold.loc[fold["pair"].str.startswith("delta/"), "split"]) == {"unseen"}
    assert (data["split"] != "unseen").sum() > (fold["split"] != "unseen").sum()
    assert data.loc[data["pair"].str.startswith("beta/"), "split"].isin(["train", "validation"]).all(), (
        "the input manifest is not modified"
    )


def test_a_fold_for_a_family_that_is_not_there_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"\['omega'\] are not in the data"):
        without_family(manifest(), "omega")


def test_attribution_columns_are_human_then_the_trained_families() -> None:
    manifest = pd.DataFrame(
        {
            "split": ["train", "train", "validation", "unseen", "train"],
            "label": [1, 0, 1, 1, 1],
            "generator": ["waifu2x/a", "camera/original", "realcugan/se", "upscalerjs/x", "unknown"],
            "pair": ["p1", "p1", "p2", "p3", "p4"],
        }
    )
    families = attribution_families(manifest)
    assert families == ["human", "realcugan", "waifu2x"], "unseen and unknown families are no column"
    np.testing.assert_array_equal(family_targets(manifest, families), [2, 0, 1, -1, -1])
    assert attribution_families(manifest.assign(generator="unknown")) == [], "nothing to attribute to"
