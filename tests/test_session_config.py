"""The candidate namespaces follow the session's configuration: ``--env``/``KEDRO_ENV``, ``--conf-source``.

``kedro run --env <env> --conf-source <dir>`` calls ``KedroSession.create(env=..., conf_source=...)``
and then builds the pipelines it runs; the tests take that path up to the runner.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from kedro.framework.project import configure_project, pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.pipeline import Pipeline
from mlflow.tracking import MlflowClient

from ai_image_detection.pipelines.training.pipeline import create_pipeline
from tests.conftest import PROJECT_ROOT, scratch_project

BASE_CANDIDATES = {"small_cnn", "clip_vit_b16", "efficientnet_lite0"}
CANDIDATE_PIPELINES = ("training", "evaluation", "export")


def write_candidates(conf: Path, names: list[str]) -> None:
    """``conf/parameters_training.yml``: the base training section with candidates ``names``.

    Each is the base ``small_cnn`` under another name. The whole ``training`` section is written,
    because an environment replaces a top-level key of ``base`` (Kedro's destructive merge).
    """
    training = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "parameters_training.yml").read_text())
    small_cnn = training["training"]["candidates"]["small_cnn"]
    training["training"]["candidates"] = dict.fromkeys(names, small_cnn)
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "parameters_training.yml").write_text(yaml.safe_dump(training))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tracking: MlflowClient) -> Iterator[Path]:
    """The project's configuration in a scratch folder, plus an environment ``quick`` with one candidate."""
    scratch_project(tmp_path, monkeypatch)
    write_candidates(tmp_path / "conf" / "quick", ["quick_cnn"])
    yield tmp_path
    configure_project("ai_image_detection")  # forget the pipelines built from the scratch configuration


def candidates_of(pipeline: Pipeline) -> set[str]:
    """The candidates whose trained model the pipeline makes or reads."""
    return {
        name.removesuffix(".trained_model") for name in pipeline.datasets() if name.endswith(".trained_model")
    }


def session_candidates(project: Path, **session: Any) -> dict[str, set[str]]:
    """The candidates of each pipeline as a session built with ``session`` sees them."""
    bootstrap_project(project)
    with KedroSession.create(project_path=project, **session) as kedro_session:
        kedro_session.load_context()
        return {name: candidates_of(pipelines[name]) for name in CANDIDATE_PIPELINES}


def test_without_an_environment_the_pipelines_have_the_base_candidates(project: Path) -> None:
    assert session_candidates(project) == dict.fromkeys(CANDIDATE_PIPELINES, BASE_CANDIDATES)


def test_env_chooses_the_candidates_of_every_pipeline(project: Path) -> None:
    assert session_candidates(project, env="quick") == dict.fromkeys(CANDIDATE_PIPELINES, {"quick_cnn"})


def test_kedro_env_chooses_the_candidates(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEDRO_ENV", "quick")
    assert session_candidates(project) == dict.fromkeys(CANDIDATE_PIPELINES, {"quick_cnn"})


def test_conf_source_chooses_the_candidates(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "conf"
    shutil.copytree(project / "conf", elsewhere)
    write_candidates(elsewhere / "base", ["other_cnn", "small_cnn"])
    found = session_candidates(project, conf_source=str(elsewhere))
    assert found == dict.fromkeys(CANDIDATE_PIPELINES, {"other_cnn", "small_cnn"})


def test_without_a_session_kedro_env_in_the_project_decides(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kedro registry describe`` and tests build pipelines outside a session."""
    monkeypatch.chdir(project / "conf")  # inside the project, as the session finds it
    assert candidates_of(create_pipeline()) == BASE_CANDIDATES
    monkeypatch.setenv("KEDRO_ENV", "quick")
    assert candidates_of(create_pipeline()) == {"quick_cnn"}


def test_the_tracking_store_is_the_projects_own_wherever_the_session_starts(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``kedro run`` from elsewhere, or from a sub-folder, tracks into the project's ``mlflow.db``.

    A relative ``sqlite:///mlflow.db`` would follow the working directory (and MLflow keeps the
    first store it opened for a URI, so a second project in one process would write into the first).
    """
    own_store = f"sqlite:///{project.resolve().as_posix()}/mlflow.db"
    bootstrap_project(project)

    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    with KedroSession.create(project_path=project) as session:
        session.load_context()
    assert mlflow.get_tracking_uri() == own_store

    monkeypatch.chdir(project / "conf" / "base")  # `kedro run` from a sub-folder
    with KedroSession.create() as session:
        session.load_context()
    assert mlflow.get_tracking_uri() == own_store
