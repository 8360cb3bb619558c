"""The service's own Prometheus metrics, next to BentoML's on ``/metrics`` (internal only).

- ``aiid_probability_ai``: histogram of the calibrated P(AI) of every verdict;
- ``aiid_verdicts_total{label, decided_by}``: verdicts by answer and by what decided it;
- ``aiid_errors_total{code}``: refused requests by error code (every error answer is counted once,
  where it is built: :func:`ai_image_detection.serving.http_guard.error_response`);
- ``aiid_model_call_requests`` and ``aiid_model_call_crops``: histograms of the requests and the
  crops each model call carried (how much batching the load gives).

``prometheus_client`` is imported on first use, in the worker: BentoML sets the multi-process
directory when a worker starts, after the service module is imported, and metrics created before
would not reach ``/metrics``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

PROBABILITY_BUCKETS = tuple(round(step / 20, 2) for step in range(1, 21))
"""P(AI) histogram buckets: every 0.05 up to 1."""
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Requests or crops per model call."""


@dataclass(frozen=True)
class _Metrics:
    probability_ai: Any
    verdicts: Any
    errors: Any
    call_requests: Any
    call_crops: Any


@functools.cache
def _metrics() -> _Metrics:
    import prometheus_client  # noqa: PLC0415  in the worker, once BentoML set its multi-process directory

    return _Metrics(
        probability_ai=prometheus_client.Histogram(
            "aiid_probability_ai", "Calibrated P(AI) of each verdict", buckets=PROBABILITY_BUCKETS
        ),
        verdicts=prometheus_client.Counter(
            "aiid_verdicts", "Verdicts by answer and by what decided it", ["label", "decided_by"]
        ),
        errors=prometheus_client.Counter("aiid_errors", "Refused requests by error code", ["code"]),
        call_requests=prometheus_client.Histogram(
            "aiid_model_call_requests", "Requests whose crops one model call carried", buckets=BATCH_BUCKETS
        ),
        call_crops=prometheus_client.Histogram(
            "aiid_model_call_crops", "Crops one model call carried", buckets=BATCH_BUCKETS
        ),
    )


def observe_verdict(label: str, decided_by: str, probability_ai: float) -> None:
    """Count one verdict and record its P(AI)."""
    metrics = _metrics()
    metrics.verdicts.labels(label=label, decided_by=decided_by).inc()
    metrics.probability_ai.observe(probability_ai)


def observe_model_call(requests: int, crops: int) -> None:
    """Record what one model call carried."""
    metrics = _metrics()
    metrics.call_requests.observe(requests)
    metrics.call_crops.observe(crops)


def count_error(code: str) -> None:
    """Count one refused request."""
    _metrics().errors.labels(code=code).inc()
