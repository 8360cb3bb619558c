"""``python -m benchmarks``: run every benchmark in turn (``make bench``)."""

import logging

from benchmarks import ingestion_scale

logging.basicConfig(level=logging.INFO, format="%(message)s")
ingestion_scale.main([])
