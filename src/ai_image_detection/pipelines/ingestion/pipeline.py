"""The ``ingestion`` pipeline: ``kedro run --pipelines ingestion``."""

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines.ingestion.nodes import (
    build_report,
    drop_duplicates,
    list_raw_files,
    split_train_validation,
    validate_files,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    """List, validate, de-duplicate and split the raw images into the image manifest."""
    return Pipeline(
        [
            Node(
                list_raw_files,
                "params:ingestion",
                ["raw_candidates", "listing_issues"],
                name="list_raw_files_node",
            ),
            Node(
                validate_files,
                ["raw_candidates", "params:ingestion"],
                ["valid_images", "rejected_images"],
                name="validate_files_node",
            ),
            Node(
                drop_duplicates,
                "valid_images",
                ["unique_images", "duplicate_images"],
                name="drop_duplicates_node",
            ),
            Node(
                split_train_validation,
                ["unique_images", "params:ingestion"],
                "image_manifest@pandas",
                name="split_train_validation_node",
            ),
            Node(
                build_report,
                ["listing_issues", "rejected_images", "duplicate_images", "image_manifest@pandas"],
                "ingestion_report",
                name="build_report_node",
            ),
        ]
    )
