"""The BentoML service: HTTP API, adaptive batching, explanations and the web page."""
