"""Serving settings: defaults here, overridden by ``AIID_*`` environment variables (container-friendly)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "AIID_"


class ServingSettings(BaseSettings):
    """How the service loads, batches and guards.

    Each setting is read from ``AIID_<NAME>`` when that variable is set (``AIID_MAX_BYTES=5000000``);
    a value that is not accepted fails at start-up with a ``pydantic.ValidationError`` that names
    the setting, its value and what is accepted.

    Attributes:
        model_tag: BentoML model the service carries (``kedro run --pipelines package`` imports
            the registry's champion under this name).
        batching: Let one model call carry the crops of several concurrent requests (off, each
            request is a call of its own: only to measure what batching buys).
        max_batch_size: Most crops in one model call (a single request with more runs alone). The
            requests that arrive while a call runs make up the next one, so a batch grows with the
            load and no latency target or timer is needed. Unset, it is measured at start-up: the
            call size at which the model scores the most crops per second on this machine
            (:func:`~ai_image_detection.serving.batching.fastest_call_size`; 1 for a model that is
            fastest one crop at a time, as CLIP is on 2 cores).
        max_queued_requests: Requests that may wait for the model at once, the one being scored
            included (the queue depth); one more is refused at once with 503 ``overloaded`` and
            ``Retry-After``.
        retry_after_s: The ``Retry-After`` of a refused request, in seconds.
        max_bytes: Largest accepted request body (413 beyond).
        max_pixels: Largest accepted width x height, checked from the header before decoding.
        min_side: Smallest accepted width or height.
        max_files: Most images in one ``/predict_batch`` request.
        max_decoding: Most uploads decoded at the same time, whatever the number of requests or
            files: with ``max_pixels`` it bounds the memory that decoding can take.
        max_tiles: Most crops averaged for an image larger than the model input, for models whose
            metadata has no ``max_tiles`` (exported before the inconclusive band). A model that
            has it is tiled exactly as evaluation tiled it, so that its thresholds apply to the
            service's scores; a different value here is then ignored, with a warning at start-up.
        explain_grid: Most cells per side of the ``/explain`` heatmap.
        provenance_timeout_s: Longest time spent reading an upload's provenance (C2PA, XMP, text
            chunks, EXIF); beyond it the answer says the provenance was not read, and the pixels decide.
        prediction_log_dir: Directory of the prediction log (one JSON line per verdict, no pixels),
            read by the ``monitoring`` pipeline; empty to log nothing.
        prediction_log_max_bytes: Size at which the log file is rotated.
        prediction_log_backups: Rotated files kept (``predictions.jsonl.1`` ...); older ones are
            deleted, so the log never takes more than ``(backups + 1) x max_bytes`` on disk.
        feedback_bucket: S3 bucket of the feedback store (the DVC remote's bucket by default); empty
            to turn feedback off (``/feedback`` then answers 503).
        feedback_prefix: Key prefix of the feedback store in that bucket.
        feedback_endpoint_url: S3 endpoint: the local SeaweedFS of ``make s3`` by default; empty for
            AWS. The keys come from the usual AWS chain (``AWS_ACCESS_KEY_ID`` and
            ``AWS_SECRET_ACCESS_KEY``, or the instance role).
        feedback_memory: Recent predictions remembered for feedback (the numbers, and the image's
            sha256 to check a consented upload); feedback on an older one is refused with 404.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    model_tag: str = "ai-image-detector:latest"
    batching: bool = True
    max_batch_size: int | None = Field(default=None, ge=1)
    max_queued_requests: int = Field(default=128, ge=1)
    retry_after_s: int = Field(default=2, ge=1)
    max_bytes: int = Field(default=10_000_000, ge=1)
    max_pixels: int = Field(default=40_000_000, ge=1)
    min_side: int = Field(default=32, ge=1)
    max_files: int = Field(default=16, ge=1)
    max_decoding: int = Field(default=2, ge=1)
    max_tiles: int = Field(default=9, ge=1)
    explain_grid: int = Field(default=8, ge=2)
    provenance_timeout_s: float = Field(default=2.0, gt=0)
    prediction_log_dir: str = "logs/predictions"
    prediction_log_max_bytes: int = Field(default=10_000_000, ge=1_000)
    prediction_log_backups: int = Field(default=5, ge=1)
    feedback_bucket: str = "ai-image-detection"
    feedback_prefix: str = "feedback"
    feedback_endpoint_url: str = "http://127.0.0.1:8333"
    feedback_memory: int = Field(default=10_000, ge=1)
