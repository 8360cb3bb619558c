"""The environment `make setup` builds: the size of ``.venv`` and the TensorFlow distributions in it.

One TensorFlow distribution is the target (issue 12): ``tensorflow-cpu`` on x86_64, ``tensorflow``
elsewhere; both at once means two wheels writing one ``tensorflow`` package.
"""

from __future__ import annotations

import logging
import sys
from importlib import metadata
from pathlib import Path

from benchmarks.report import record

logger = logging.getLogger(__name__)
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-text")


def _size_mb(folder: Path) -> float:
    """The bytes of every file under ``folder`` (symbolic links not followed), in MB."""
    return (
        sum(path.lstat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())
        / 1e6
    )


def run() -> dict[str, object]:
    """The environment's size and its TensorFlow distributions."""
    installed = []
    for name in TENSORFLOW_DISTRIBUTIONS:
        try:
            installed.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return {
        "venv": sys.prefix,
        "venv_size_mb": round(_size_mb(Path(sys.prefix)), 1),
        "tensorflow_distributions": installed,
        "one_tensorflow": sum(not name.startswith("tensorflow-text") for name in installed) == 1,
    }


def main() -> None:
    """Run and record under ``"environment"``."""
    record("environment", run())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    main()
