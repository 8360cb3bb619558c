"""``dvc.yaml``: each Kedro stage depends on all the code its pipelines import.

A module missing from a stage's ``deps`` means ``dvc repro`` calls the stage up to date after a
change to that module, and keeps serving results the code would no longer produce.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "ai_image_detection"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
KEDRO_STAGES = {name: stage for name, stage in STAGES.items() if "kedro run --pipelines" in stage["cmd"]}


def _module_file(module: str) -> Path | None:
    """The source file of a module of the package (a package's ``__init__.py``), if it exists."""
    path = SRC.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def _imported_modules(source: Path) -> set[str]:
    """The package's modules that ``source`` imports, at any depth of its code."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names if alias.name.startswith(PACKAGE))
    return modules


def _code_of(pipelines: list[str]) -> set[Path]:
    """Every file of the package that ``kedro run --pipelines`` imports: settings, the pipelines, theirs."""
    files: set[Path] = set()
    pending = [f"{PACKAGE}.settings", *(f"{PACKAGE}.pipelines.{name}" for name in pipelines)]
    while pending:
        module = pending.pop()
        source = _module_file(module)
        if source is None or source in files:
            continue
        files.add(source)
        parts = module.split(".")
        pending += [".".join(parts[:end]) for end in range(1, len(parts))]
        pending += _imported_modules(source)
    return files


@pytest.mark.parametrize("stage", sorted(KEDRO_STAGES))
def test_a_stage_depends_on_every_module_its_pipelines_import(stage: str) -> None:
    pipelines = KEDRO_STAGES[stage]["cmd"].split("--pipelines")[1].split()[0].split(",")
    deps = [ROOT / dep for dep in KEDRO_STAGES[stage]["deps"]]
    missing = sorted(
        str(source.relative_to(ROOT))
        for source in _code_of(pipelines)
        if not any(source == dep or dep in source.parents for dep in deps)
    )
    assert not missing, f"dvc.yaml stage {stage} misses deps: {missing}"
