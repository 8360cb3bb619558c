"""Nodes of the ``augmentation`` pipeline."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tensorflow as tf
from matplotlib.figure import Figure

from ai_image_detection.input_pipeline import AugmentationParams, build_augmenter, decode, fit_to_size

GRID_IMAGE_SIZE = 192


def draw_augmentation_grid(image_manifest: pd.DataFrame, params: AugmentationParams, seed: int) -> Figure:
    """Draw a few training images per class next to augmented versions of them.

    Args:
        image_manifest: The manifest from ingestion.
        params: The augmentation settings (and how many images to show).
        seed: Seed of the image choice and the augmentations.

    Returns:
        A grid: one row per image (real rows first), the crop then its augmented versions.
    """
    tf.random.set_seed(seed)
    augment = build_augmenter(params, seed)
    train = image_manifest[image_manifest["split"] == "train"]
    rows = pd.concat(
        [
            train[train["label"] == label].sample(params.grid_images_per_class, random_state=seed)
            for label in (0, 1)
        ]
    )
    columns = params.grid_augmented_versions + 1
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.8 * columns, 1.9 * len(rows)), squeeze=False)
    for row, (path, label) in enumerate(zip(rows["path"], rows["label"], strict=True)):
        crop = fit_to_size(decode(tf.constant(path)), GRID_IMAGE_SIZE, training=False, resize=False)
        versions = [crop] + [augment(crop) for _ in range(params.grid_augmented_versions)]
        for col, image in enumerate(versions):
            axes[row, col].imshow(np.asarray(image).astype(np.uint8))
            axes[row, col].set_axis_off()
        axes[row, 0].set_title("AI" if label == 1 else "real", fontsize=8, loc="left")
    figure.suptitle("Training augmentation: crop, then augmented versions (train split only)")
    figure.tight_layout()
    return figure
