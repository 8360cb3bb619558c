"""The BentoML service: ``bentoml serve ai_image_detection.serving.service:Detector``.

Two services, each its own process under ``bentoml serve``: :class:`Detector` (the HTTP API and
the web page) decodes and checks every upload in a worker thread and cuts crops exactly as
training and evaluation do (:mod:`ai_image_detection.tiling`); :class:`Scorer`, its
dependency, runs the model behind one batchable API, ``score``, so that crops of concurrent
requests share ONNX Runtime calls (adaptive batching; the arrays travel pickled, not as JSON).
The model is the registry's champion, imported into the BentoML store by
``kedro run --pipelines package``; its input size, tiling, thresholds and calibration come from its
ONNX metadata (:mod:`ai_image_detection.serving.model_contract`), so that an image is scored exactly
as evaluation scored it. Answers are ``human``, ``ai`` or ``inconclusive``
(:mod:`ai_image_detection.serving.answers`); a model that attributes (a second output,
``family_probabilities``) also answers the training family an image most resembles, from the mean
of its tiles' family probabilities as its score is the mean of their P(AI).

Client mistakes never give a 500: each is a JSON ``{"error": {"code", "message"}}`` with a 4xx
status (oversized bodies and malformed forms are refused by :class:`RequestGuard` before the
framework parses them).
"""

import asyncio
import base64
import functools
import json
import logging
import re
import tempfile
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException, ServiceUnavailable
from bentoml.validators import ContentType
from starlette.responses import JSONResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ai_image_detection.contract import FAMILY_OUTPUT_NAME, INPUT_NAME, OUTPUT_NAME
from ai_image_detection.serving.answers import Explanation, ImageFacts, ImageVerdict, ServiceInfo, judge
from ai_image_detection.serving.model_contract import ModelDescription, describe_model
from ai_image_detection.serving.settings import ServingSettings

with bentoml.importing():
    import onnxruntime as ort

    from ai_image_detection.image_io import (
        SUPPORTED_FORMATS,
        DecodedImage,
        ImageLimits,
        ImageRejectedError,
        decode_image,
    )
    from ai_image_detection.serving.imaging import (
        annotate,
        explanation_crops,
        heatmap_png,
        occlusion_crops,
        occlusion_shading,
    )
    from ai_image_detection.tiling import tile_crops

logger = logging.getLogger(__name__)

SETTINGS = ServingSettings.from_env()
STATIC_DIR = Path(__file__).parent / "static"
STATUS_BY_REASON = {
    "empty": 400,
    "not_an_image": 415,
    "unsupported_format": 415,
    "unsupported_mode": 415,
    "corrupt": 422,
    "too_small": 422,
    "too_many_pixels": 413,
}
"""HTTP status for each :class:`ImageRejectedError` reason."""
WARM_UP_ROUNDS = 8
WARM_UP_CONCURRENCY = 3
"""Enough calls, in batches of 1 to 3, for the dispatcher to fit its latency model (it needs 11)."""


P = ParamSpec("P")
R = TypeVar("R")


class ClientError(Exception):
    """A request the service refuses: a stable ``code``, a message, a status (4xx, or 503 to retry)."""

    def __init__(self, code: str, message: str, status: int, retry_after_s: int | None = None) -> None:
        """Create the error.

        Args:
            code: Machine-readable reason (``"too_many_files"``, ``"not_an_image"``, ...).
            message: What is wrong and what would be accepted.
            status: The HTTP status (4xx, or 503 when the client should come back).
            retry_after_s: When to come back (``Retry-After``), for a 503.
        """
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.retry_after_s = retry_after_s


def error_response(code: str, message: str, status: int, retry_after_s: int | None = None) -> JSONResponse:
    """The one shape of every error the service itself answers (with ``Retry-After`` when given)."""
    headers = None if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def answers_client_errors(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Turn a :class:`ClientError` raised by an endpoint into its JSON 4xx answer.

    BentoML sends a Starlette response returned by an endpoint as it is, so the endpoint keeps
    its declared return type (and its OpenAPI schema) for the successful case.
    """

    @functools.wraps(func)
    async def endpoint(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except ClientError as error:
            logger.info("refused (%s): %s", error.code, error.message)
            for argument in (*args, *kwargs.values()):
                if isinstance(argument, bentoml.Context):  # BentoML applies its status to the response
                    argument.response.status_code = error.status
            return error_response(  # type: ignore[return-value]
                error.code, error.message, error.status, error.retry_after_s
            )

    return endpoint


class RequestGuard:
    """ASGI middleware: refuse what the framework would parse badly, before it parses anything.

    - a POST body over ``max_bytes``: 413 (a declared ``Content-Length`` at once, a chunked body
      as it arrives);
    - an upload endpoint called without ``multipart/form-data``: 415;
    - a form with a field the endpoint does not take, or without the one it needs: 400.

    Bodies that pass are replayed to the app unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, form_fields: dict[str, frozenset[str]]) -> None:
        """Wrap ``app``.

        Args:
            app: The service's ASGI app.
            max_bytes: Largest accepted body.
            form_fields: For each upload route, the multipart fields it takes.
        """
        self.app, self.max_bytes, self.form_fields = app, max_bytes, form_fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass through, or answer the 4xx."""
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send, "payload_too_large", self._too_large(int(declared)), 413)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send, "payload_too_large", self._too_large(size), 413)
                return
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        boundary = _multipart_boundary(content_type)
        problem = self._form_problem(scope["path"], content_type, boundary, body)
        if problem is not None:
            await self._refuse(scope, receive, send, *problem)
            return
        if boundary is not None:  # the framework reads only the lower-case, boundary-first spelling
            canonical = f'multipart/form-data; boundary="{boundary}"'.encode("latin-1")
            scope = {
                **scope,
                "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
                + [(b"content-type", canonical)],
            }
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: int) -> str:
        return f"the request body has {size:,} bytes or more; the limit is {self.max_bytes:,} bytes"

    def _form_problem(
        self, path: str, content_type: str, boundary: str | None, body: bytes
    ) -> tuple[str, str, int] | None:
        """What is wrong with an upload's form, or None (also for routes that take no upload)."""
        expected = self.form_fields.get(path.rstrip("/"))
        if expected is None:
            return None
        wanted = " and ".join(f"'{field}'" for field in sorted(expected))
        if boundary is None:
            message = (
                f"send multipart/form-data with the image file in the field {wanted}; got {content_type!r}"
            )
            return "not_multipart", message, 415
        names, files = set(), set()
        for part in body.split(b"--" + boundary.encode("latin-1"))[1:]:
            head = part.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            for disposition in _DISPOSITION.findall(head):
                name = _FIELD_NAME.search(disposition)
                if name:
                    names.add(name.group(1))
                    if _FILE_NAME.search(disposition):
                        files.add(name.group(1))
        if unexpected := names - expected:
            message = (
                f"unexpected form field(s) {sorted(unexpected)}; send the image file in the field {wanted}"
            )
            return "unexpected_field", message, 400
        if missing := expected - names:
            return "missing_field", f"the form has no field {sorted(missing)}; send the image file in it", 400
        if not_files := names - files:
            message = f"form field(s) {sorted(not_files)} hold text, not a file; send the image file in them"
            return "not_a_file", message, 400
        return None

    @staticmethod
    async def _refuse(
        scope: Scope, receive: Receive, send: Send, code: str, message: str, status: int
    ) -> None:
        logger.info("refused (%s): %s", code, message)
        await error_response(code, message, status)(scope, receive, send)


def _multipart_boundary(content_type: str) -> str | None:
    """The boundary of a ``multipart/form-data`` content type (any case, any parameter order), or None."""
    header = EmailMessage()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not isinstance(boundary, str) or not boundary:
        return None
    return boundary


_DISPOSITION = re.compile(r"^content-disposition:\s*form-data\s*;([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_FIELD_NAME = re.compile(r'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_FILE_NAME = re.compile(r"(?:^|;)\s*filename\*?=", re.IGNORECASE)


def _image_facts(decoded: DecodedImage) -> ImageFacts:
    """What a verdict reports about the image itself."""
    width, height = decoded.pixels.size
    return ImageFacts(
        width=width,
        height=height,
        format=decoded.format,
        frames=decoded.frames,
        exif_rotated=decoded.exif_rotated,
    )


@bentoml.service(name="ai_image_scorer", traffic={"timeout": 60}, workers=1)
class Scorer:
    """The champion ONNX model behind one batchable API: the only place the model runs.

    Served as its own process (a dependency of :class:`Detector`), so ONNX Runtime's threads
    never compete with the decoding of uploads, and crops from concurrent requests are merged into
    one ``session.run`` by BentoML's adaptive batching.
    """

    bento_model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        """Load the ONNX model, read its contract from the metadata, warm it up.

        Raises:
            ValueError: If the model's metadata is incomplete or malformed (the message says which key).
        """
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle ONNX Runtime threads sleep instead of spinning: the API process decodes uploads on
        # the same cores, and spinning threads would take their time.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            self.bento_model.path_of("model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        metadata = self.bento_model.info.metadata
        self.model = describe_model(
            self.session.get_modelmeta().custom_metadata_map,
            {output.name: output.shape for output in self.session.get_outputs()},
            model_name=str(metadata.get("registered_model", self.bento_model.tag.name)),
            model_version=str(metadata.get("registered_version", self.bento_model.tag.version)),
            settings=SETTINGS,
        )
        self.outputs = [OUTPUT_NAME] if self.model.families is None else [OUTPUT_NAME, FAMILY_OUTPUT_NAME]
        # the first run allocates and plans; BentoML serves only once __init__ has returned
        self._infer(np.zeros((1, self.model.input_size, self.model.input_size, 3), dtype=np.uint8))
        logger.info(
            "scoring with %s v%s (%d px, up to %d tiles; human below %.4f, ai from %.4f, forced-choice "
            "threshold %.4f; calibration %s; attribution %s), batching %s",
            self.model.model_name,
            self.model.model_version,
            self.model.input_size,
            self.model.max_tiles,
            self.model.thresholds.human,
            self.model.thresholds.ai,
            self.model.threshold,
            json.dumps(self.model.calibration),
            "off" if self.model.families is None else f"to {json.dumps(self.model.families)}",
            f"up to {SETTINGS.max_batch_size} crops" if SETTINGS.batching else "off",
        )

    def _infer(self, crops: np.ndarray) -> np.ndarray:
        """Each crop's row (:meth:`score`) for crops ``[N, S, S, 3]``, straight from ONNX Runtime."""
        outputs = self.session.run(self.outputs, {INPUT_NAME: crops.astype(np.float32)})
        return np.concatenate(
            [np.asarray(output, dtype=np.float32).reshape(len(crops), -1) for output in outputs], axis=1
        )

    @bentoml.api(
        batchable=SETTINGS.batching,
        batch_dim=0,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def score(self, crops: np.ndarray) -> np.ndarray:
        """A row per crop of a uint8 ``[N, S, S, 3]`` array: the API every endpoint scores through.

        Each row is the crop's P(AI), then, for a model that attributes, its probability of each of
        ``families`` (``[N, 1 + K]``); ``[N, 1]`` for a model without attribution.
        """
        size = self.model.input_size
        if crops.shape[1:] != (size, size, 3):
            raise ValueError(f"crops must be [N, {size}, {size}, 3], got {list(crops.shape)}")
        return self._infer(crops)

    @bentoml.api
    def describe(self) -> ModelDescription:
        """The served model: registry name and version, input size, thresholds, tiling, calibration."""
        return self.model


@bentoml.service(name="ai_image_detector", traffic={"timeout": 60}, workers=1)
class Detector:
    """The HTTP API and the web page (mounted at ``/ui``); the model runs in :class:`Scorer`."""

    scorer = bentoml.depends(Scorer)

    def __init__(self) -> None:
        """Image limits from the settings; the model is described by the scorer on first use."""
        self.limits = ImageLimits(min_side=SETTINGS.min_side, max_pixels=SETTINGS.max_pixels)
        self._model: ModelDescription | None = None
        self._warm = False
        self._warming = asyncio.Lock()
        self._decoding = asyncio.Semaphore(SETTINGS.max_decoding)
        self._waiting_for_model = 0

    async def __is_ready__(self) -> bool:
        """``/readyz``: ready once the scorer has answered warm-up calls through its batch dispatcher.

        BentoML's dispatcher fits how long a call takes on its first dozen calls, and the model's
        first runs allocate and plan. Doing both before reporting ready means the first burst after
        a start or a rollout meets a dispatcher that batches and a model that is warm.
        """
        async with self._warming:
            if not self._warm:
                try:
                    await self._warm_up()
                except (ClientError, BentoMLException, aiohttp.ClientError) as not_yet:
                    logger.info("scorer not ready yet: %s", not_yet)
                    return False
                self._warm = True
        return True

    async def _warm_up(self) -> None:
        """Score ``WARM_UP_ROUNDS`` rounds of ``WARM_UP_CONCURRENCY`` concurrent requests of blank crops."""
        model = await self._described_model()
        crops = np.zeros((model.max_tiles, model.input_size, model.input_size, 3), dtype=np.uint8)
        for _ in range(WARM_UP_ROUNDS):
            await asyncio.gather(*(self._call_scorer(crops) for _ in range(WARM_UP_CONCURRENCY)))
        logger.info("warmed up: %d calls to the scorer", WARM_UP_ROUNDS * WARM_UP_CONCURRENCY)

    async def _described_model(self) -> ModelDescription:
        """The scorer's model description, asked once.

        Raises:
            ClientError: 503 while the scorer cannot answer yet (starting, or restarting).
        """
        if self._model is None:
            try:
                described = await self.scorer.to_async.describe()
            except (BentoMLException, aiohttp.ClientError) as unavailable:
                logger.warning("the scorer cannot describe its model yet: %s", unavailable)
                message = "the model is not loaded yet; retry shortly"
                raise ClientError("starting", message, 503, SETTINGS.retry_after_s) from None
            self._model = ModelDescription.model_validate(described)
        return self._model

    async def _scores(self, crops: np.ndarray) -> np.ndarray:
        """Each crop's row from the scorer (through adaptive batching when it is on): ``[N, 1 + K]``.

        Column 0 is the crop's P(AI); the others, for a model that attributes, its family probabilities.
        Up to ``max_queued_requests`` calls wait for the model at once (load is queued, not shed);
        one more is refused at once.

        Raises:
            ClientError: 503 with ``Retry-After`` when the queue is full, or the scorer sheds load,
                does not answer within its timeout or cannot be reached (the client should retry).
        """
        if self._waiting_for_model >= SETTINGS.max_queued_requests:
            message = (
                f"the service is at capacity ({SETTINGS.max_queued_requests} requests already wait "
                "for the model); retry shortly"
            )
            logger.warning("queue full: refusing a request")
            raise ClientError("overloaded", message, 503, SETTINGS.retry_after_s)
        self._waiting_for_model += 1
        try:
            scores = await self._call_scorer(np.ascontiguousarray(crops, dtype=np.uint8))
        except (ServiceUnavailable, aiohttp.ClientError, TimeoutError) as busy:
            # TimeoutError: the call waited for the model longer than the scorer's request timeout
            message = "the service is at capacity (the model could not answer in time); retry shortly"
            logger.warning("shedding load: %s", busy)
            raise ClientError("overloaded", message, 503, SETTINGS.retry_after_s) from None
        finally:
            self._waiting_for_model -= 1
        return np.asarray(scores, dtype=np.float32).reshape(len(crops), -1)

    async def _call_scorer(self, crops: np.ndarray) -> Any:
        """``Scorer.score``, sent once more if the connection drops.

        BentoML 1.4's client replaces its pooled session every 100 calls and closes the old one with
        the calls still in flight on it, which fail with "Server disconnected" (bentoml/BentoML
        issues 5544 and 4971). Scoring is idempotent, so a dropped call is simply repeated.
        """
        try:
            return await self.scorer.to_async.score(crops)
        except aiohttp.ClientConnectionError as dropped:
            logger.warning("scorer connection dropped (%s): sending the crops again", dropped)
            return await self.scorer.to_async.score(crops)

    def _decode(self, upload: Path, name: str = "image") -> DecodedImage:
        try:
            return decode_image(upload.read_bytes(), self.limits)
        except ImageRejectedError as rejected:
            raise ClientError(
                rejected.reason, f"{name}: {rejected}", STATUS_BY_REASON[rejected.reason]
            ) from None

    async def _examine(
        self, upload: Path, name: str, model: ModelDescription
    ) -> tuple[DecodedImage, np.ndarray]:
        """Decode and tile one upload as evaluation did; at most ``AIID_MAX_DECODING`` are decoded at once."""
        async with self._decoding:
            decoded = await asyncio.to_thread(self._decode, upload, name)
            crops = await asyncio.to_thread(
                tile_crops, np.asarray(decoded.pixels), model.input_size, model.max_tiles
            )
        return decoded, crops

    async def _verdict(self, upload: Path, name: str = "image") -> ImageVerdict:
        """The verdict on one upload; its pixels are released before its crops are scored."""
        model = await self._described_model()
        decoded, crops = await self._examine(upload, name, model)
        facts = _image_facts(decoded)
        del decoded
        return await self._judge(crops, facts, model)

    async def _image_and_verdict(self, upload: Path) -> tuple[DecodedImage, ImageVerdict]:
        """The decoded upload (for endpoints that draw on it) and its verdict."""
        model = await self._described_model()
        decoded, crops = await self._examine(upload, "image", model)
        return decoded, await self._judge(crops, _image_facts(decoded), model)

    async def _judge(self, crops: np.ndarray, facts: ImageFacts, model: ModelDescription) -> ImageVerdict:
        """Score the crops of one image; the verdict on it.

        Its P(AI) is the mean of its crops' (as in evaluation), and so is its attribution (the mean of
        their family probabilities) for a model that attributes.
        """
        mean = (await self._scores(crops)).mean(axis=0, dtype=np.float64)
        families = None if model.families is None else mean[1:].tolist()
        return judge(float(mean[0]), len(crops), facts, model, families)

    @bentoml.api
    @answers_client_errors
    async def predict(self, image: Path) -> ImageVerdict:
        """One image (multipart field ``image``): ``label`` is ``human``, ``inconclusive`` or ``ai``.

        ``probability_ai`` is the calibrated P(AI); below ``thresholds.human`` the answer is
        ``human``, at or above ``thresholds.ai`` it is ``ai``, and in between ``inconclusive``,
        with ``confidence`` null and a note: validation showed the model is unreliable there.
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
        return await self._verdict(image)

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
                *(self._verdict(upload, f"file #{index}") for index, upload in enumerate(images))
            )
        )

    @bentoml.api
    @answers_client_errors
    async def annotate(
        self, image: Path, context: bentoml.Context
    ) -> Annotated[Path, ContentType("image/jpeg")]:
        """The image (EXIF-upright, RGB) as JPEG with the verdict drawn on it.

        A banner names the answer (``Inconclusive`` in amber inside the band) with P(AI), the
        confidence when there is one, and a bar with both thresholds marked. The ``X-Verdict``
        header carries the numbers as JSON (``label``, ``probability_ai``, ``confidence``,
        ``thresholds``, ``threshold``, ``model_version``, and ``closest_family`` with
        ``closest_family_probability``, null for a model without attribution).
        """
        decoded, verdict = await self._image_and_verdict(image)
        band = (verdict.thresholds.human, verdict.thresholds.ai)
        jpeg = await asyncio.to_thread(
            annotate, decoded.pixels, verdict.label, verdict.probability_ai, verdict.confidence, band
        )
        with tempfile.NamedTemporaryFile(suffix=".jpg", delete=False) as file:
            file.write(jpeg)
        context.response.background.add_task(Path(file.name).unlink, missing_ok=True)
        numbers = verdict.model_dump(
            include={
                "label",
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
        decoded, verdict = await self._image_and_verdict(image)
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
    async def info(self) -> ServiceInfo:
        """The model (thresholds, tiling, calibration) and the limits, for the web page and for clients."""
        return ServiceInfo(
            **(await self._described_model()).model_dump(),
            max_bytes=SETTINGS.max_bytes,
            max_files=SETTINGS.max_files,
            max_pixels=SETTINGS.max_pixels,
            batching=SETTINGS.batching,
            formats=sorted(SUPPORTED_FORMATS),
        )


SERVICE: bentoml.Service[Detector] = Detector  # type: ignore[assignment]  # the decorator returns a Service
SERVICE.mount_asgi_app(StaticFiles(directory=STATIC_DIR, html=True), path="/ui", name="web_page")
SERVICE.add_asgi_middleware(
    RequestGuard,
    max_bytes=SETTINGS.max_bytes,
    form_fields={
        api.route: frozenset(api.input_spec.multipart_fields)
        for api in SERVICE.apis.values()
        if api.input_spec.multipart_fields
    },
)
