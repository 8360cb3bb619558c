"""The training candidates, read from the configuration of the Kedro session that builds the pipelines.

The training, evaluation and export pipelines have one namespace per candidate of
``training.candidates``, so they need the list when Kedro builds them, before any node receives
parameters, and Kedro calls ``create_pipeline`` without arguments. Within a session (``kedro
run``, ``kedro viz``, ``kedro ipython``, ``KedroSession.create``) the :class:`SessionConfig` hook
hands over the session's own config loader as soon as the context exists, which is before Kedro
first builds the pipelines: ``--env`` (or ``KEDRO_ENV``), ``--conf-source`` and ``--params``
shape the namespaces exactly as they shape the nodes' parameters. Without a session (``kedro
registry``, a test that builds a pipeline) the configuration is loaded as a session would load
it: the project's ``settings.CONF_SOURCE`` with ``KEDRO_ENV``.

Kedro builds a process's pipelines once and keeps them until ``bootstrap_project`` (or
``configure_project``) runs again, so a second session in one process with another candidate
list needs that call first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.config import AbstractConfigLoader
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.framework.project import settings
from kedro.utils import find_kedro_project


class SessionConfig:
    """The project folder and config loader of the current Kedro session (a hook in ``settings.HOOKS``)."""

    def __init__(self) -> None:
        self._loader: AbstractConfigLoader | None = None
        self._project: Path | None = None

    @hook_impl(tryfirst=True)
    def after_context_created(self, context: KedroContext) -> None:
        """Keep the session's project folder and its config loader (``conf_source``, ``env``, parameters)."""
        self._project = context.project_path
        self._loader = context.config_loader

    def project(self) -> Path:
        """The session's project folder, or, outside a session, the project around the working directory."""
        return (self._project or find_kedro_project(Path.cwd()) or Path.cwd()).resolve()

    def loader(self) -> AbstractConfigLoader:
        """The session's config loader, or, outside a session, one built the way a session builds it."""
        if self._loader is not None:
            return self._loader
        return settings.CONFIG_LOADER_CLASS(
            conf_source=str(self.project() / settings.CONF_SOURCE),
            env=os.getenv("KEDRO_ENV"),
            **settings.CONFIG_LOADER_ARGS,
        )


SESSION_CONFIG = SessionConfig()


def project_path() -> str:
    """The ``${project_path:}`` resolver: the current project's folder as a POSIX path.

    ``conf/base/mlflow.yml`` anchors the tracking store there, so that ``kedro run`` from any folder
    of the project, or ``KedroSession.create(project_path=...)`` from elsewhere, tracks into the
    project's own ``mlflow.db``. (A relative ``sqlite:///mlflow.db`` follows the working directory,
    and MLflow keeps one store per URI in a process: a second project would write into the first.)
    """
    return SESSION_CONFIG.project().as_posix()


def candidates() -> dict[str, dict[str, Any]]:
    """Every candidate of ``training.candidates`` with its settings, in the configuration's order."""
    return dict(SESSION_CONFIG.loader()["parameters"]["training"]["candidates"])


def candidate_names() -> list[str]:
    """The candidates' names: one namespace each in the training, evaluation and export pipelines."""
    return list(candidates())
