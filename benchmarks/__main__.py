"""``python -m benchmarks``: run every benchmark in turn (``make bench``)."""

import logging

from benchmarks import environment, inference, ingestion_scale, input_pipeline, serving_load

# force: importing the project's pipelines applies Kedro's logging configuration (root at WARNING),
# which would hide the figures every benchmark logs
logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
environment.main()
input_pipeline.main()
inference.main()
serving_load.main()
ingestion_scale.main([])
