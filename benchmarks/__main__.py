"""``python -m benchmarks``: run every benchmark in turn (``make bench``)."""

import logging

from benchmarks import environment, inference, ingestion_scale, input_pipeline, serving_load

logging.basicConfig(level=logging.INFO, format="%(message)s")
environment.main()
input_pipeline.main()
inference.main()
serving_load.main()
ingestion_scale.main([])
