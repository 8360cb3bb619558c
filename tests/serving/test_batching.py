"""The crop batcher: requests that wait during a model call share the next one, up to a known depth."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from ai_image_detection.serving.batching import (
    CALL_SIZE_LIMIT,
    CropBatcher,
    QueueFullError,
    fastest_call_size,
)

SIDE = 4


def crops_of(request: int, count: int) -> np.ndarray:
    """``count`` crops whose every pixel is ``request``: a row tells which request it came from."""
    return np.full((count, SIDE, SIDE, 3), request, dtype=np.uint8)


class HeldModel:
    """A model whose first call waits for ``release``; a row is its crop's pixel value and position."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.release = threading.Event()
        self.calls: list[list[int]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Record the call's crops; hold the first call; fail the ``fail_on_call``-th."""
        self.calls.append(crops[:, 0, 0, 0].tolist())
        if len(self.calls) == 1 and not self.release.wait(timeout=30):
            raise TimeoutError("the test never released the first call")
        if self.fail_on_call == len(self.calls):
            raise RuntimeError("the model broke")
        values = crops[:, 0, 0, 0].astype(np.float32)
        return np.stack([values, np.arange(len(crops), dtype=np.float32)], axis=1)


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.005)


def batcher_of(model: HeldModel, **settings: object) -> CropBatcher:
    options: dict[str, object] = {"batching": True, "max_batch_size": 64, "max_queued_requests": 16}
    return CropBatcher(model, **{**options, **settings})  # type: ignore[arg-type]


async def hold_first_then(batcher: CropBatcher, model: HeldModel, sizes: list[int]) -> list[np.ndarray]:
    """Request 1 (2 crops) starts a held call; requests 2, 3, ... of ``sizes`` crops wait; every answer."""
    first = asyncio.create_task(batcher.score(crops_of(1, 2)))
    await until(lambda: len(model.calls) == 1)
    waiting = [
        asyncio.create_task(batcher.score(crops_of(request, count)))
        for request, count in enumerate(sizes, start=2)
    ]
    await asyncio.sleep(0)
    model.release.set()
    return list(await asyncio.gather(first, *waiting))


def test_a_lone_request_is_one_call_of_its_own_crops() -> None:
    model = HeldModel()
    model.release.set()
    rows = asyncio.run(batcher_of(model).score(crops_of(5, 3)))
    assert rows.tolist() == [[5, 0], [5, 1], [5, 2]]
    assert model.calls == [[5, 5, 5]]


def test_the_requests_that_wait_during_a_call_share_the_next_one_and_each_gets_its_own_rows() -> None:
    model = HeldModel()
    batcher = batcher_of(model)
    answers = asyncio.run(hold_first_then(batcher, model, [3, 1, 2]))
    assert model.calls == [[1, 1], [2, 2, 2, 3, 4, 4]], "one call for all who waited, oldest first"
    assert [rows[:, 0].tolist() for rows in answers] == [[1, 1], [2, 2, 2], [3], [4, 4]]
    assert answers[3][:, 1].tolist() == [4, 5], "rows are the request's own, in its crops' order"
    assert batcher.requests == 0


def test_a_call_carries_at_most_max_batch_size_crops_and_a_larger_request_runs_alone() -> None:
    model = HeldModel()
    answers = asyncio.run(hold_first_then(batcher_of(model, max_batch_size=4), model, [3, 2, 6, 1]))
    assert [len(call) for call in model.calls] == [2, 3, 2, 6, 1]
    assert [len(rows) for rows in answers] == [2, 3, 2, 6, 1]


def test_without_batching_each_request_is_a_call_of_its_own() -> None:
    model = HeldModel()
    asyncio.run(hold_first_then(batcher_of(model, batching=False), model, [3, 1]))
    assert model.calls == [[1, 1], [2, 2, 2], [3]]


def test_beyond_the_queue_depth_a_request_is_refused_at_once_and_the_queued_ones_are_answered() -> None:
    model = HeldModel()
    batcher = batcher_of(model, max_queued_requests=3)

    async def burst() -> tuple[list[np.ndarray], QueueFullError]:
        queued = [asyncio.create_task(batcher.score(crops_of(request, 1))) for request in (1, 2, 3)]
        await until(lambda: len(model.calls) == 1)
        with pytest.raises(QueueFullError) as refused:
            await batcher.score(crops_of(4, 1))
        model.release.set()
        return list(await asyncio.gather(*queued)), refused.value

    answered, refused = asyncio.run(burst())
    assert [rows[:, 0].tolist() for rows in answered] == [[1], [2], [3]]
    assert "3 requests already wait" in str(refused)
    assert batcher.requests == 0


def test_a_model_error_reaches_every_request_of_its_call_and_the_next_call_still_runs() -> None:
    model = HeldModel(fail_on_call=2)
    batcher = batcher_of(model)

    async def scenario() -> tuple[list[object], np.ndarray]:
        first = asyncio.create_task(batcher.score(crops_of(1, 1)))
        await until(lambda: len(model.calls) == 1)
        failing = [asyncio.create_task(batcher.score(crops_of(request, 1))) for request in (2, 3)]
        await asyncio.sleep(0)
        model.release.set()
        outcomes = await asyncio.gather(first, *failing, return_exceptions=True)
        return outcomes, await batcher.score(crops_of(4, 1))

    (first, second, third), after = asyncio.run(scenario())
    assert isinstance(first, np.ndarray) and first[:, 0].tolist() == [1]
    assert [str(outcome) for outcome in (second, third)] == ["the model broke"] * 2
    assert after[:, 0].tolist() == [4]


def test_a_request_cancelled_while_it_waits_is_left_out_of_the_next_call() -> None:
    model = HeldModel()
    batcher = batcher_of(model)

    async def scenario() -> list[np.ndarray]:
        first = asyncio.create_task(batcher.score(crops_of(1, 1)))
        await until(lambda: len(model.calls) == 1)
        gone = asyncio.create_task(batcher.score(crops_of(2, 1)))
        kept = asyncio.create_task(batcher.score(crops_of(3, 1)))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        model.release.set()
        return list(await asyncio.gather(first, kept))

    answers = asyncio.run(scenario())
    assert model.calls == [[1], [3]]
    assert [rows[:, 0].tolist() for rows in answers] == [[1], [3]]
    assert batcher.requests == 0


def test_every_call_is_reported_with_its_requests_and_crops() -> None:
    model = HeldModel()
    reported: list[tuple[int, int]] = []
    batcher = batcher_of(model, on_call=lambda requests, crops: reported.append((requests, crops)))
    asyncio.run(hold_first_then(batcher, model, [3, 1]))
    assert reported == [(1, 2), (2, 4)]


@pytest.mark.parametrize(("size", "depth"), [(0, 4), (4, 0)])
def test_a_batch_size_or_queue_depth_below_one_is_refused(size: int, depth: int) -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        CropBatcher(HeldModel(), batching=True, max_batch_size=size, max_queued_requests=depth)


def test_a_model_that_answers_the_wrong_number_of_rows_fails_its_call_not_the_batcher() -> None:
    calls: list[int] = []

    def short_model(crops: np.ndarray) -> np.ndarray:
        calls.append(len(crops))
        rows = crops[:, 0, 0, :1].astype(np.float32)
        return rows[:-1] if len(calls) == 1 else rows

    batcher = CropBatcher(short_model, batching=True, max_batch_size=64, max_queued_requests=4)

    async def twice() -> np.ndarray:
        with pytest.raises(ValueError, match="answered 1 rows for 2 crops"):
            await batcher.score(crops_of(1, 2))
        return await batcher.score(crops_of(2, 2))

    assert asyncio.run(twice()).tolist() == [[2], [2]]


class TimedModel:
    """A model on a clock of its own: a call of ``n`` crops takes ``cost(n)`` seconds of it."""

    def __init__(self, cost: Callable[[int], float]) -> None:
        self.cost = cost
        self.now = 0.0
        self.calls: list[int] = []

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Advance the clock by the call's cost; a zero row per crop."""
        assert crops.shape[1:] == (SIDE, SIDE, 3) and crops.dtype == np.uint8
        self.calls.append(len(crops))
        self.now += self.cost(len(crops))
        return np.zeros((len(crops), 1), dtype=np.float32)

    def clock(self) -> float:
        """The model's own time, in seconds."""
        return self.now


def test_a_model_slower_per_crop_in_larger_calls_is_called_one_crop_at_a_time() -> None:
    model = TimedModel(lambda crops: 0.01 * crops**1.3)  # 2 crops a call: 19 % slower per crop
    size, speeds = fastest_call_size(model, (SIDE, SIDE, 3), clock=model.clock)
    assert size == 1
    assert list(speeds) == [1, 2], "the search stops at the first size clearly slower than the best"
    assert speeds[1] == pytest.approx(100.0)
    assert model.calls.count(2) >= 2, "an untimed call, then timed ones"


def test_the_smallest_call_size_about_as_fast_as_the_fastest_is_chosen() -> None:
    model = TimedModel(lambda crops: 0.02 + 0.01 * crops)  # a fixed cost per call: larger calls pay off
    size, speeds = fastest_call_size(model, (SIDE, SIDE, 3), clock=model.clock)
    assert list(speeds) == [1, 2, 4, 8, 16, 32, 64] and max(speeds) == CALL_SIZE_LIMIT
    assert max(speeds, key=lambda calls: speeds[calls]) == 64
    assert size == 32, "94 crops/s at 32 is within 5 % of 97 at 64, and a request waits less"
    limited, tried = fastest_call_size(model, (SIDE, SIDE, 3), limit=8, clock=model.clock)
    assert (limited, list(tried)) == (8, [1, 2, 4, 8])
