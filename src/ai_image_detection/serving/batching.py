"""Crops of concurrent requests merged into shared model calls, in the service's own process.

:class:`CropBatcher` keeps one model call running at a time, on a thread of its own (ONNX Runtime
releases the GIL, so the event loop keeps accepting and decoding uploads meanwhile). The requests
that arrive while a call runs wait in a queue, and the next call takes as many of them, oldest
first, as fit in ``max_batch_size`` crops. A batch therefore grows with the load and needs no
timer or latency model: one request alone is scored at once, and under load every call carries
the crops of everyone who waited, up to the call size at which the model is fastest per crop on
this machine (:func:`fastest_call_size`, measured when the service starts unless it is set).
At most ``max_queued_requests`` requests wait or run at once; one more is refused at once
(:class:`QueueFullError`), so load is queued up to a known depth and shed only beyond it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ai_image_detection.throughput import calls_per_second

logger = logging.getLogger(__name__)

CropInference = Callable[[np.ndarray], np.ndarray]
"""The model: crops ``[N, S, S, 3]`` to one row per crop ``[N, C]``."""


CALL_SIZE_LIMIT = 64
"""Most crops a model call is ever measured at, or carries, when ``max_batch_size`` is not set."""
CALL_SIZE_TIE = 0.05
"""Call sizes within this share of the fastest are as fast: the smallest of them is chosen."""
CALL_SIZE_SLOWDOWN = 0.10
"""The search stops at the first call size this much slower per crop than the fastest so far."""
MIN_TIMED_SECONDS = 0.3
"""Each call size is timed over calls that add up to at least this (after one untimed call)."""
TIMING_PASSES = 2
"""Passes over the call sizes; each size's best pass counts (other work only ever slows a pass)."""


def fastest_call_size(
    infer: CropInference,
    crop_shape: tuple[int, ...],
    limit: int = CALL_SIZE_LIMIT,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, dict[int, float]]:
    """The crops per model call at which ``infer`` scores the most crops per second, on this machine.

    Batching is not free on a CPU: a larger call can be slower per crop (measured on 2 cores: CLIP
    ViT-B/16 at 20 crops/s one crop a call, 16 at 32 a call; small_cnn flat). So the batcher's call
    size is measured, not assumed: powers of two up to ``limit``, each after one untimed call (ONNX
    Runtime plans and allocates for a new shape), timed over calls of blank crops adding up to
    ``MIN_TIMED_SECONDS``. The first pass stops at the first size ``CALL_SIZE_SLOWDOWN`` slower than
    the fastest so far (beyond it, the working set has outgrown the caches); the sizes it tried are
    timed again, ``TIMING_PASSES`` in all, and each keeps its best. Among sizes within
    ``CALL_SIZE_TIE`` of the fastest, the smallest wins: as fast, and a request waits less for a
    smaller call.

    Args:
        infer: The model (:data:`CropInference`).
        crop_shape: One crop's shape ``(S, S, 3)``.
        limit: Largest call size tried.
        clock: Seconds, monotonic (a test passes its own).

    Returns:
        The chosen call size, and the best crops/s measured at each size tried.
    """

    def crops_per_second(size: int) -> float:
        crops = np.zeros((size, *crop_shape), dtype=np.uint8)
        return size * calls_per_second(infer, crops, MIN_TIMED_SECONDS, clock=clock)

    speeds: dict[int, float] = {}
    size = 1
    while size <= limit:
        speeds[size] = crops_per_second(size)
        if speeds[size] < (1 - CALL_SIZE_SLOWDOWN) * max(speeds.values()):
            break
        size *= 2
    for _ in range(TIMING_PASSES - 1):
        speeds = {size: max(speed, crops_per_second(size)) for size, speed in speeds.items()}
    fastest = max(speeds.values())
    return min(size for size, speed in speeds.items() if speed >= (1 - CALL_SIZE_TIE) * fastest), speeds


class QueueFullError(RuntimeError):
    """``max_queued_requests`` requests already wait for the model: this one is refused."""


@dataclass(frozen=True)
class _Waiting:
    crops: np.ndarray
    answer: asyncio.Future[np.ndarray]


class CropBatcher:
    """One model call at a time, each carrying the crops of every request that waited for it.

    Attributes:
        batching: Whether a call may carry several requests' crops (off: each request is a call
            of its own, to measure what batching buys).
        max_batch_size: Most crops in one call, unless a single request has more (it then runs alone).
        max_queued_requests: Most requests waiting for or in a model call at once.
    """

    def __init__(
        self,
        infer: CropInference,
        *,
        batching: bool,
        max_batch_size: int,
        max_queued_requests: int,
        on_call: Callable[[int, int], None] | None = None,
    ) -> None:
        """Set up the queue; the calls run on a single thread of their own.

        Args:
            infer: The model (:data:`CropInference`); called from the batcher's thread only.
            batching: See the class attributes.
            max_batch_size: See the class attributes.
            max_queued_requests: See the class attributes.
            on_call: Told ``(requests, crops)`` of each call, for the service's metrics.
        """
        if max_batch_size < 1 or max_queued_requests < 1:
            raise ValueError(
                f"max_batch_size ({max_batch_size}) and max_queued_requests ({max_queued_requests}) "
                "must be at least 1"
            )
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.max_queued_requests = max_queued_requests
        self._infer = infer
        self._on_call = on_call
        self._queue: deque[_Waiting] = deque()
        self._requests = 0
        self._calling: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    @property
    def requests(self) -> int:
        """Requests waiting for, or in, a model call now."""
        return self._requests

    async def score(self, crops: np.ndarray) -> np.ndarray:
        """The model's rows for ``crops``, from a call shared with the requests that waited alongside.

        Raises:
            QueueFullError: If ``max_queued_requests`` requests already wait; this one is not queued.
            Exception: Whatever the model raised on the call that carried these crops.
        """
        if self._requests >= self.max_queued_requests:
            raise QueueFullError(f"{self._requests} requests already wait for the model")
        answer: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(crops, answer))
        self._requests += 1
        try:
            if self._calling is None or self._calling.done():
                self._calling = asyncio.create_task(self._call_while_waiting())
            return await answer
        finally:
            self._requests -= 1

    def close(self) -> None:
        """Stop the model thread once its current call returns."""
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def _call_while_waiting(self) -> None:
        """Run calls until no request waits: each takes the oldest waiting requests that fit."""
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._next_batch()
            if not batch:
                continue
            sizes = [len(waiting.crops) for waiting in batch]
            if self._on_call is not None:
                self._on_call(len(batch), sum(sizes))
            try:
                crops = (
                    np.concatenate([waiting.crops for waiting in batch]) if len(batch) > 1 else batch[0].crops
                )
                rows = await loop.run_in_executor(self._thread, self._infer, crops)
                if len(rows) != len(crops):
                    raise ValueError(f"the model answered {len(rows)} rows for {len(crops)} crops")
            except Exception as failure:  # every request of the call gets the error; the next call runs
                logger.exception("a model call of %d crops failed", sum(sizes))
                for waiting in batch:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(failure)
                continue
            for waiting, own_rows in zip(batch, np.split(rows, np.cumsum(sizes)[:-1]), strict=True):
                if not waiting.answer.done():  # its client may have gone meanwhile
                    waiting.answer.set_result(own_rows)

    def _next_batch(self) -> list[_Waiting]:
        """The oldest waiting requests whose crops fit in one call (at least one); cancelled ones dropped."""
        batch: list[_Waiting] = []
        crops = 0
        while self._queue:
            waiting = self._queue[0]
            if waiting.answer.done():  # cancelled while it waited
                self._queue.popleft()
                continue
            if batch and (not self.batching or crops + len(waiting.crops) > self.max_batch_size):
                break
            batch.append(self._queue.popleft())
            crops += len(waiting.crops)
        return batch
