"""Kedro pipelines, one folder each; registered by ``find_pipelines``."""

from collections.abc import Callable
from functools import partial, update_wrapper
from typing import Any


def bind(func: Callable[..., Any], **keywords: Any) -> Callable[..., Any]:
    """``func`` with ``keywords`` fixed, keeping its name and docstring (for Kedro nodes).

    Namespaced and multi-candidate pipelines use it to give a node what Kedro datasets cannot
    carry, such as the candidate's name.
    """
    return update_wrapper(partial(func, **keywords), func)
