"""Record benchmark figures: one JSON file, one key per benchmark."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPORT = Path("data/08_reporting/benchmarks.json")


def record(key: str, figures: dict[str, Any], report: Path = REPORT) -> None:
    """Merge ``figures`` under ``key`` into the report and log them as a table.

    Args:
        key: The benchmark's key (e.g. ``"ingestion"``).
        figures: Flat mapping of figure name to value.
        report: The JSON file holding every benchmark's figures.
    """
    existing = json.loads(report.read_text()) if report.exists() else {}
    existing[key] = figures
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(existing, indent=2) + "\n")
    width = max(len(name) for name in figures)
    lines = [f"  {name:<{width}}  {value}" for name, value in figures.items()]
    logger.info("%s\n%s\n(written to %s)", key, "\n".join(lines), report)
