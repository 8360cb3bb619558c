"""The BentoML service: ``bentoml serve ai_image_detection.serving.service:Detector``.

One service, one process: :class:`Detector` serves the HTTP API and the web page, decodes and
checks every upload in a worker thread and cuts crops exactly as training and evaluation do
(:mod:`ai_image_detection.serving.examination`); the model
(:class:`~ai_image_detection.serving.scorer.Scorer`) runs in the same process behind a
:class:`~ai_image_detection.serving.batching.CropBatcher`, on a thread of its own, so that the crops
of concurrent requests share ONNX Runtime calls without travelling between processes. The model's
input size, tiling, thresholds and calibration come from its ONNX metadata
(:mod:`ai_image_detection.serving.model_contract`), so that an image is scored exactly as
evaluation scored it. Answers are ``human``, ``ai`` or ``inconclusive``
(:mod:`ai_image_detection.serving.answers`); a model that attributes (a second output,
``family_probabilities``) also answers the training family an image most resembles, from the mean
of its tiles' family probabilities as its score is the mean of their P(AI).

Before scoring, the upload's provenance is read (:mod:`ai_image_detection.serving.provenance`,
bounded in time by ``AIID_PROVENANCE_TIMEOUT_S``): a valid declaration of AI generation decides the
answer, a claim of camera capture never does. Every verdict gets a ``prediction_id`` that
``/feedback`` quotes (:mod:`ai_image_detection.serving.feedback`), is logged without pixels for the
``monitoring`` pipeline (:mod:`ai_image_detection.serving.prediction_log`) and counted in the
Prometheus metrics (:mod:`ai_image_detection.serving.metrics`).

Client mistakes never give a 500: each is a JSON ``{"error": {"code", "message"}}`` with a 4xx
status (:mod:`ai_image_detection.serving.http_guard`, whose :class:`RequestGuard` refuses
oversized bodies and malformed forms before the framework parses them).
"""

import asyncio
import base64
import json
import logging
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Literal

import bentoml
import numpy as np
from bentoml.validators import ContentType
from starlette.staticfiles import StaticFiles

from ai_image_detection.serving.answers import Explanation, ImageVerdict, ServiceInfo, judge
from ai_image_detection.serving.batching import CropBatcher, QueueFullError, fastest_call_size
from ai_image_detection.serving.examination import Examined, Examiner
from ai_image_detection.serving.feedback import (
    FeedbackReceipt,
    FeedbackStore,
    FeedbackUnavailableError,
    RecentPredictions,
    checked_note,
    feedback_record,
    kept_image,
)
from ai_image_detection.serving.http_guard import ClientError, FormSpec, RequestGuard, answers_client_errors
from ai_image_detection.serving.metrics import observe_model_call, observe_verdict
from ai_image_detection.serving.prediction_log import Endpoint, PredictionLog, prediction_record
from ai_image_detection.serving.scorer import Scorer
from ai_image_detection.serving.settings import ServingSettings

with bentoml.importing():
    from ai_image_detection.image_io import SUPPORTED_FORMATS, DecodedImage
    from ai_image_detection.serving.imaging import (
        annotate,
        explanation_crops,
        heatmap_png,
        occlusion_crops,
        occlusion_shading,
    )

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SETTINGS = ServingSettings()
"""The service's settings, read from the ``AIID_*`` environment once, at import."""


@bentoml.service(name="ai_image_detector", traffic={"timeout": 60}, workers=1)
class Detector:
    """The HTTP API and the web page (mounted at ``/ui``), with the model in the same process."""

    bento_model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        """Load and warm up the model; upload examination, feedback and the prediction log from the settings.

        BentoML reports ready (``/readyz``) only once this has returned, so the first request meets
        a loaded, warm model.

        Raises:
            ValueError: If the model's metadata is incomplete or malformed (the message says which key).
        """
        self.scorer = Scorer(self.bento_model, SETTINGS)
        self.model = self.scorer.model
        self.batcher = CropBatcher(
            self.scorer.score,
            batching=SETTINGS.batching,
            max_batch_size=self._call_size(),
            max_queued_requests=SETTINGS.max_queued_requests,
            on_call=observe_model_call,
        )
        logger.info(
            "batching %s; at most %d requests wait for the model",
            f"up to {self.batcher.max_batch_size} crops a call" if SETTINGS.batching else "off",
            SETTINGS.max_queued_requests,
        )
        self.examiner = Examiner(SETTINGS)
        self.recent_predictions = RecentPredictions(SETTINGS.feedback_memory)
        self.feedback_store = FeedbackStore(
            SETTINGS.feedback_bucket, SETTINGS.feedback_prefix, SETTINGS.feedback_endpoint_url
        )
        self.prediction_log = PredictionLog(
            SETTINGS.prediction_log_dir, SETTINGS.prediction_log_max_bytes, SETTINGS.prediction_log_backups
        )

    def _call_size(self) -> int:
        """``AIID_MAX_BATCH_SIZE`` when set; else the call size at which the model is fastest here."""
        if SETTINGS.max_batch_size is not None or not SETTINGS.batching:
            return SETTINGS.max_batch_size or 1
        size = self.model.input_size
        chosen, speeds = fastest_call_size(self.scorer.score, (size, size, 3))
        logger.info(
            "model calls carry up to %d crops: the fastest per crop here (crops/s by call size: %s)",
            chosen,
            ", ".join(f"{calls}: {speed:.1f}" for calls, speed in speeds.items()),
        )
        return chosen

    def __del__(self) -> None:
        """Write out the prediction log's queued lines; stop the model thread (those that started)."""
        for part in ("prediction_log", "batcher"):
            if hasattr(self, part):
                getattr(self, part).close()

    async def _scores(self, crops: np.ndarray) -> np.ndarray:
        """Each crop's row from the model, in a call shared with concurrent requests: ``[N, 1 + K]``.

        Column 0 is the crop's P(AI); the others, for a model that attributes, its family probabilities.
        Up to ``max_queued_requests`` requests wait for the model at once (load is queued, not shed);
        one more is refused at once.

        Raises:
            ClientError: 503 ``overloaded`` with ``Retry-After`` when the queue is full.
        """
        try:
            return await self.batcher.score(np.ascontiguousarray(crops, dtype=np.uint8))
        except QueueFullError:
            message = (
                f"the service is at capacity ({self.batcher.max_queued_requests} requests already wait "
                "for the model); retry shortly"
            )
            logger.warning("queue full: refusing a request")
            raise ClientError("overloaded", message, 503, SETTINGS.retry_after_s) from None

    async def _verdict(self, upload: Path, endpoint: Endpoint, name: str = "image") -> ImageVerdict:
        """The verdict on one upload; its pixels are released before its crops are scored."""
        decoded, examined = await self.examiner.examine(
            upload, name, self.model.input_size, self.model.max_tiles
        )
        del decoded
        return await self._judge(examined, endpoint)

    async def _image_and_verdict(self, upload: Path, endpoint: Endpoint) -> tuple[DecodedImage, ImageVerdict]:
        """The decoded upload (for endpoints that draw on it) and its verdict."""
        decoded, examined = await self.examiner.examine(
            upload, "image", self.model.input_size, self.model.max_tiles
        )
        return decoded, await self._judge(examined, endpoint)

    async def _judge(self, examined: Examined, endpoint: Endpoint) -> ImageVerdict:
        """Score the crops of one image; the verdict on it, logged, counted and remembered for feedback.

        Its P(AI) is the mean of its crops' (as in evaluation), and so is its attribution (the mean of
        their family probabilities) for a model that attributes.
        """
        mean = (await self._scores(examined.crops)).mean(axis=0, dtype=np.float64)
        families = None if self.model.families is None else mean[1:].tolist()
        prediction_id = f"p-{uuid.uuid4().hex}"
        answer = judge(
            float(mean[0]),
            len(examined.crops),
            examined.facts,
            self.model,
            examined.provenance,
            prediction_id,
            families,
        )
        latency_ms = (time.perf_counter() - examined.started) * 1000
        record = prediction_record(answer, endpoint, examined.size_bytes, examined.luma, latency_ms)
        self.prediction_log.write(record)
        self.recent_predictions.remember(record, examined.image_sha256)
        observe_verdict(answer.label, answer.decided_by, answer.probability_ai)
        return answer

    @bentoml.api
    @answers_client_errors
    async def predict(self, image: Path) -> ImageVerdict:
        """One image (multipart field ``image``): ``label`` is ``human``, ``inconclusive`` or ``ai``.

        ``probability_ai`` is the calibrated P(AI); below ``thresholds.human`` the answer is
        ``human``, at or above ``thresholds.ai`` it is ``ai``, and in between ``inconclusive``,
        with ``confidence`` null and a note: evaluation showed the model is unreliable there.
        Otherwise ``confidence`` is the calibrated probability of the stated class. ``summary``
        says it in one sentence.

        For a model that attributes, ``family_probabilities`` maps each family it was trained on
        (``human`` first) to its probability, averaged over the tiles, and ``closest_family`` (with
        ``closest_family_probability``) is the largest: the training family the image most
        resembles, not a finding of which generator made it. All three are null for a model
        without attribution.

        Images larger than the model input are scored as the mean of an odd grid of native-
        resolution crops, tiled as evaluation tiled them (the model's ``max_tiles``); smaller ones
        are zero-padded, never up-scaled.
        """
        return await self._verdict(image, "predict")

    @bentoml.api
    @answers_client_errors
    async def predict_batch(self, images: list[Path]) -> list[ImageVerdict]:
        """Several images (repeated multipart field ``images``): a verdict each, in the same order.

        The request is refused as a whole if it has too many files or any file is unusable (the
        message names which).
        """
        if not images:
            raise ClientError("no_images", "send at least one file in the field 'images'", 400)
        if len(images) > SETTINGS.max_files:
            raise ClientError(
                "too_many_files", f"{len(images)} files; at most {SETTINGS.max_files} per request", 400
            )
        return list(
            await asyncio.gather(
                *(
                    self._verdict(upload, "predict_batch", f"file #{index}")
                    for index, upload in enumerate(images)
                )
            )
        )

    @bentoml.api
    @answers_client_errors
    async def annotate(
        self, image: Path, context: bentoml.Context
    ) -> Annotated[Path, ContentType("image/jpeg")]:
        """The image (EXIF-upright, RGB) as JPEG with the verdict drawn on it.

        A banner names the answer (``Inconclusive`` in amber inside the band; ``AI-generated
        (declared)`` with the evidence when provenance decided) with P(AI), the confidence when
        there is one, and a bar with both thresholds marked. The ``X-Verdict``
        header carries the numbers as JSON (``label``, ``probability_ai``, ``confidence``,
        ``thresholds``, ``threshold``, ``model_version``, and ``closest_family`` with
        ``closest_family_probability``, null for a model without attribution).
        """
        decoded, verdict = await self._image_and_verdict(image, "annotate")
        band = (verdict.thresholds.human, verdict.thresholds.ai)
        declared_by = verdict.provenance.decisive if verdict.decided_by == "provenance" else None
        jpeg = await asyncio.to_thread(
            annotate,
            decoded.pixels,
            verdict.label,
            verdict.probability_ai,
            verdict.confidence,
            band,
            declared_by,
        )
        with tempfile.NamedTemporaryFile(suffix=".jpg", delete=False) as file:
            file.write(jpeg)
        context.response.background.add_task(Path(file.name).unlink, missing_ok=True)
        numbers = verdict.model_dump(
            include={
                "prediction_id",
                "label",
                "decided_by",
                "probability_ai",
                "confidence",
                "closest_family",
                "closest_family_probability",
                "thresholds",
                "threshold",
                "model_version",
            }
        )
        # ASCII-escaped: a header is Latin-1, and family names come from the model's metadata
        context.response.headers["X-Verdict"] = json.dumps(numbers, separators=(",", ":"))
        return Path(file.name)

    @bentoml.api
    @answers_client_errors
    async def explain(self, image: Path) -> Explanation:
        """Which regions drive the verdict, computed with the served model itself.

        An image larger than the model input is scanned (``method: "patches"``): each grid cell is
        scored on its own model-size crop, and ``grid`` holds those P(AI). An image no larger than
        the input is one crop, so it is probed instead (``method: "occlusion"``): ``grid`` holds how
        much P(AI) drops when the cell is hidden (positive: the cell pushes towards AI).

        Returns the verdict, ``method``, ``rows``/``cols``, ``grid`` (row-major) and ``heatmap_png``
        (a data URL: red towards AI, blue towards human, the image's aspect ratio).
        """
        decoded, verdict = await self._image_and_verdict(image, "explain")
        pixels = np.asarray(decoded.pixels)
        size, height, width = verdict.input_size, pixels.shape[0], pixels.shape[1]
        if max(height, width) <= size:
            method = "occlusion"
            crops, rows, cols = await asyncio.to_thread(occlusion_crops, pixels, size, SETTINGS.explain_grid)
            scores = (await self._scores(crops))[:, 0]
            grid = (scores[0] - scores[1:]).reshape(rows, cols)
            shading = occlusion_shading(grid)
        else:
            method = "patches"
            crops, rows, cols = await asyncio.to_thread(
                explanation_crops, pixels, size, SETTINGS.explain_grid
            )
            grid = shading = (await self._scores(crops))[:, 0].reshape(rows, cols)
        png = await asyncio.to_thread(heatmap_png, shading, width, height)
        return Explanation(
            **verdict.model_dump(),
            method=method,
            rows=rows,
            cols=cols,
            grid=grid.round(4).tolist(),
            heatmap_png="data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        )

    @bentoml.api
    @answers_client_errors
    async def feedback(
        self,
        prediction_id: str,
        label: Literal["ai", "human"],
        consent: bool = False,
        note: str | None = None,
        image: list[Path] = [],  # noqa: B006  BentoML 1.4 takes an optional file only as a list; pydantic copies it
    ) -> FeedbackReceipt:
        """Say that a verdict was wrong (multipart form): the true ``label`` of a predicted image.

        ``prediction_id`` is the verdict's; ``note`` is optional (at most 1000 characters). The
        image (field ``image``) is kept only when ``consent`` is true, and only if it is the very
        file that was predicted; without consent only the numbers are kept: the prediction's score,
        thresholds, model version and provenance, the claimed label and the note. Consented images
        may be used to train the next model. (``image`` is a list in the schema only because BentoML
        1.4 has no optional file field: send one file or none.)

        Errors: 404 ``unknown_prediction`` (the id is not among this instance's recent predictions),
        400 ``image_without_consent`` / ``image_mismatch`` / ``note_too_long``, 503
        ``feedback_unavailable`` (the feedback store cannot be reached).
        """
        remembered = self.recent_predictions.recall(prediction_id)
        note = checked_note(note)
        data = await asyncio.to_thread(kept_image, remembered, consent, image)
        image_format = remembered.record.format if data is not None else None
        record = feedback_record(remembered, label, note, consent, image_format, self.feedback_store.prefix)
        try:
            await asyncio.to_thread(self.feedback_store.put, record, data)
        except FeedbackUnavailableError as unavailable:
            raise ClientError("feedback_unavailable", str(unavailable), 503, SETTINGS.retry_after_s) from None
        kept = "the image and the numbers" if data is not None else "the numbers only, not the image"
        return FeedbackReceipt(
            feedback_id=record["feedback_id"],
            stored_image=data is not None,
            message=f"Thank you: kept {kept}.",
        )

    @bentoml.api
    async def info(self) -> ServiceInfo:
        """The model (thresholds, tiling, calibration) and the limits, for the web page and for clients."""
        return ServiceInfo(
            **self.model.model_dump(),
            max_bytes=SETTINGS.max_bytes,
            max_files=SETTINGS.max_files,
            max_pixels=SETTINGS.max_pixels,
            batching=SETTINGS.batching,
            max_batch_size=self.batcher.max_batch_size,
            formats=sorted(SUPPORTED_FORMATS),
        )


SERVICE: bentoml.Service[Detector] = Detector  # type: ignore[assignment]  # the decorator returns a Service
SERVICE.mount_asgi_app(StaticFiles(directory=STATIC_DIR, html=True), path="/ui", name="web_page")
SERVICE.add_asgi_middleware(
    RequestGuard,
    max_bytes=SETTINGS.max_bytes,
    forms={
        api.route: FormSpec(
            fields=frozenset(api.input_spec.model_fields),
            files=frozenset(api.input_spec.multipart_fields),
            required=frozenset(
                name for name, field in api.input_spec.model_fields.items() if field.is_required()
            ),
        )
        for api in SERVICE.apis.values()
        if api.input_spec.multipart_fields
    },
)
