"""Kedro project settings (kedro-mlflow registers its own hooks as a plugin)."""

from kedro.config import OmegaConfigLoader

from ai_image_detection.hooks import SettingsChecks
from ai_image_detection.session_config import SESSION_CONFIG, project_path

HOOKS = (SESSION_CONFIG, SettingsChecks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
    "custom_resolvers": {"project_path": project_path},
}
