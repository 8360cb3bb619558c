"""Steady-state calls per second of a function: the one timing loop of the project.

Model selection, the int8 report and ``make bench`` time models through
:func:`ai_image_detection.inference_cost.images_per_second`, and the service times its model at
start-up to choose its call size (:func:`ai_image_detection.serving.batching.fastest_call_size`);
both run this loop. It needs only NumPy, so the service's image can carry it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def calls_per_second(
    run: Callable[[np.ndarray], object],
    batch: np.ndarray,
    min_seconds: float,
    min_calls: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Calls of ``run`` on ``batch`` per second, after one untimed warm-up call.

    Calls go on until both ``min_calls`` and ``min_seconds`` are reached.

    Args:
        run: What is timed (a model on a batch of images).
        batch: Its input, as it is passed.
        min_seconds: Shortest measured time.
        min_calls: Fewest measured calls.
        clock: Seconds, monotonic (a test passes its own).

    Returns:
        Measured calls per second.
    """
    run(batch)
    calls, started = 0, clock()
    while calls < min_calls or clock() - started < min_seconds:
        run(batch)
        calls += 1
    return calls / max(clock() - started, 1e-9)
