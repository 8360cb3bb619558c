"""Inspect one image file on disk: hash it, validate it, normalise it if a plain decoder would misread it.

Ingestion runs this in worker processes, so the module imports only what a worker needs (no
pandas, no scikit-learn): spawned workers start in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

from ai_image_detection.image_io import ImageLimits, ImageRejectedError, decode_image

INSPECTION_COLUMNS = ["sha256", "stored_path", "width", "height", "format", "mode", "reason", "message"]
"""What :func:`inspect_file` returns for every file."""


def inspect_file(task: tuple[str, ImageLimits, str]) -> dict[str, Any]:
    """Hash, validate and (if needed) normalise one file; runs in a worker process.

    Args:
        task: ``(path, limits, normalised_dir)``.

    Returns:
        ``sha256``, ``stored_path``, ``width``, ``height``, ``format``, ``mode``, and
        ``reason``/``message`` (``None`` when the file is valid).
    """
    path, limits, normalised_dir = task
    record: dict[str, Any] = dict.fromkeys(INSPECTION_COLUMNS)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return {**record, "reason": "unreadable", "message": str(error)}
    record["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        decoded = decode_image(data, limits)
    except ImageRejectedError as error:
        return {**record, "reason": error.reason, "message": str(error)}
    stored_path = path
    if decoded.needs_normalisation:
        target = Path(normalised_dir) / f"{record['sha256']}.png"
        if not target.exists():
            # Own temporary name: identical files may be normalised by two workers at once.
            partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
            decoded.pixels.save(partial, format="PNG")
            partial.replace(target)
        stored_path = str(target)
    width, height = decoded.pixels.size
    return {
        **record,
        "stored_path": stored_path,
        "width": width,
        "height": height,
        "format": decoded.format,
        "mode": decoded.original_mode,
    }
