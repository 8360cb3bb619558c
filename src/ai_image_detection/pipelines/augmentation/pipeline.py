"""The ``augmentation`` pipeline: ``kedro run --pipelines augmentation``."""

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines.augmentation.nodes import draw_augmentation_grid


def create_pipeline(**kwargs: object) -> Pipeline:
    """Draw the augmentation grid (the input pipelines themselves are built by training)."""
    return Pipeline(
        [
            Node(
                draw_augmentation_grid,
                ["image_manifest@pandas", "params:augmentation", "params:training.seed"],
                "augmentation_grid",
                name="draw_augmentation_grid_node",
            )
        ]
    )
