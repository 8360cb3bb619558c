"""The augmentation grid shows each class, crop first, then its augmented versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ai_image_detection.pipelines.augmentation.nodes import draw_augmentation_grid
from tests.test_input_pipeline import project_params


def test_grid_has_a_row_per_image_and_a_column_per_version(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for index in range(6):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(path)
        rows.append({"path": str(path), "label": index % 2, "split": "train"})
    params = project_params(grid_images_per_class=2, grid_augmented_versions=3)

    figure = draw_augmentation_grid(pd.DataFrame(rows), params, seed=1)

    assert isinstance(figure, Figure)
    assert len(figure.axes) == 4 * 4
    assert [figure.axes[4 * r].get_title(loc="left") for r in range(4)] == ["real", "real", "AI", "AI"]
