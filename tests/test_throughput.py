"""The timing loop: an untimed warm-up call, then calls until both minimums are reached."""

from __future__ import annotations

import numpy as np
import pytest

from ai_image_detection.throughput import calls_per_second


def test_the_warm_up_call_is_not_timed_and_both_minimums_hold() -> None:
    clock = [0.0]
    calls: list[int] = []

    def run(batch: np.ndarray) -> None:
        calls.append(len(batch))
        clock[0] += 5.0 if len(calls) == 1 else 0.1  # the first call pays for planning

    speed = calls_per_second(run, np.zeros((3, 2)), min_seconds=0.35, min_calls=2, clock=lambda: clock[0])
    assert len(calls) == 1 + 4, "one warm-up, then 4 calls of 0.1 s to pass 0.35 s"
    assert speed == pytest.approx(10.0)
    calls.clear()
    calls.append(0)  # no more warm-up cost from here
    assert calls_per_second(run, np.zeros((3, 2)), min_seconds=0.0, min_calls=6, clock=lambda: clock[0]) == (
        pytest.approx(10.0)
    )
    assert len(calls) == 1 + 1 + 6
