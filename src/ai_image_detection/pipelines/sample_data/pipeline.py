"""The ``sample_data`` pipeline: ``kedro run --pipelines sample_data``."""

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines.sample_data.nodes import draw_contact_sheet, generate_pairs


def create_pipeline(**kwargs: object) -> Pipeline:
    """Generate the embedded real/AI data set in the Kaggle layout, and its contact sheet."""
    return Pipeline(
        [
            Node(
                func=generate_pairs,
                inputs=["source_photos", "params:sample_data"],
                outputs=[
                    "sample_train_images",
                    "sample_test_images",
                    "sample_train_table",
                    "sample_test_table",
                    "sample_sources",
                ],
                name="generate_pairs_node",
            ),
            Node(
                func=draw_contact_sheet,
                inputs=["sample_train_images", "sample_sources", "params:sample_data"],
                outputs="sample_contact_sheet",
                name="draw_contact_sheet_node",
            ),
        ]
    )
