"""The ``ingestion`` pipeline: ``kedro run --pipelines ingestion``.

With ``ingestion.feedback.enabled`` the pipeline also reads the feedback store on S3; without it,
the pipeline has no node that reads the store, so a run never contacts S3. Kedro loads every input
of a node it runs, whatever the node then does with it, and builds pipelines before any node
receives parameters, so the switch is read when the pipeline is built: from the session's
configuration (``--env``, ``--conf-source``, ``--params``), like the training candidates.
"""

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines.ingestion.feedback import add_feedback, fetch_feedback, summarise_feedback
from ai_image_detection.pipelines.ingestion.nodes import (
    build_report,
    drop_duplicates,
    list_raw_files,
    split_train_validation,
    validate_files,
)
from ai_image_detection.pipelines.ingestion.params import FeedbackParams
from ai_image_detection.session_config import SESSION_CONFIG


def feedback_enabled() -> bool:
    """Whether the session's configuration turns the feedback source on (``ingestion.feedback.enabled``)."""
    ingestion = SESSION_CONFIG.loader()["parameters"].get("ingestion") or {}
    return FeedbackParams.model_validate(ingestion.get("feedback") or {}).enabled


def create_pipeline(*, feedback: bool | None = None, **kwargs: object) -> Pipeline:
    """List, validate, de-duplicate and split the raw images (and feedback images) into the image manifest.

    Args:
        feedback: Whether to bring in the feedback source; ``None``: as the configuration says.
        **kwargs: Unused (Kedro's ``find_pipelines`` passes none).

    Returns:
        The pipeline; with feedback, its nodes fetch the consented images before validation and
        add a ``feedback`` section to the report.
    """
    with_feedback = feedback_enabled() if feedback is None else feedback
    candidates, listing_issues = (
        ("candidates_with_feedback", "listing_issues_with_feedback")
        if with_feedback
        else ("raw_candidates", "listing_issues")
    )
    report_inputs = [listing_issues, "rejected_images", "duplicate_images", "image_manifest@pandas"]
    core = Pipeline(
        [
            Node(
                list_raw_files,
                "params:ingestion",
                ["raw_candidates", "listing_issues"],
                name="list_raw_files_node",
            ),
            Node(
                validate_files,
                [candidates, "params:ingestion"],
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
                [*report_inputs, "feedback_summary"] if with_feedback else report_inputs,
                "ingestion_report",
                name="build_report_node",
            ),
        ]
    )
    return core + _feedback_nodes() if with_feedback else core


def _feedback_nodes() -> Pipeline:
    """Fetch the consented feedback images, add them to the candidates, and count them for the report."""
    return Pipeline(
        [
            Node(
                fetch_feedback,
                ["feedback_records", "feedback_images", "params:ingestion.feedback"],
                ["feedback_image_files", "feedback_candidates", "feedback_issues", "feedback_counts"],
                name="fetch_feedback_node",
            ),
            Node(
                add_feedback,
                ["raw_candidates", "listing_issues", "feedback_candidates", "feedback_issues"],
                ["candidates_with_feedback", "listing_issues_with_feedback"],
                name="add_feedback_node",
            ),
            Node(
                summarise_feedback,
                [
                    "feedback_counts",
                    "feedback_issues",
                    "feedback_candidates",
                    "rejected_images",
                    "duplicate_images",
                    "image_manifest@pandas",
                ],
                "feedback_summary",
                name="summarise_feedback_node",
            ),
        ]
    )
