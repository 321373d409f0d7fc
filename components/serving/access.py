"""What a served endpoint serves and who may call it: the registry's champion, the API key.
Shared by the deploy stage and the canary."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.config import DeployParams
from components.constants import ALIAS_CHAMPION, MODEL_POLICY

log = logging.getLogger(__name__)


class NoChampionError(LookupError):
    """No registered version holds the champion alias."""


class ApiKeyError(RuntimeError):
    """A production server would start without an API key, or the key file is unusable."""


def champion_version(mlflow_client: MlflowClient, name: str = MODEL_POLICY) -> ModelVersion:
    try:
        return mlflow_client.get_model_version_by_alias(name, ALIAS_CHAMPION)
    except MlflowException as err:
        raise NoChampionError(
            f"no model holds the {ALIAS_CHAMPION} alias of {name!r}; run the promote stage "
            f"(`dvc repro promote`) or set the alias in the MLflow registry ({err.message})"
        ) from err


def api_key(cfg: DeployParams, *, one_time_ok: bool) -> str | None:
    """The key the server requires: deploy.api_key_file, else $<deploy.api_key_env>; else a
    random one-time key when `one_time_ok` (the deploy stage's private server), else an error
    unless deploy.require_api_key is false."""
    if cfg.api_key_file:
        path = Path(cfg.api_key_file)
        key = path.read_text().strip() if path.is_file() else ""
        if not key:
            raise ApiKeyError(
                f"deploy.api_key_file is {path} but it is missing or empty: write the key "
                "there (one line) or unset deploy.api_key_file to read it from "
                f"${cfg.api_key_env}"
            )
        return key
    if cfg.api_key_env and (key := os.environ.get(cfg.api_key_env, "").strip()):
        return key
    if one_time_ok:
        return secrets.token_urlsafe(24)
    if cfg.require_api_key:
        raise ApiKeyError(
            f"no API key for the server: set ${cfg.api_key_env} (deploy.api_key_env) or "
            "deploy.api_key_file; for a local development server without one set "
            "deploy.require_api_key: false"
        )
    log.warning("serving WITHOUT an API key (deploy.require_api_key: false)")
    return None


def one_time(cfg: DeployParams) -> bool:
    return not cfg.api_key_file and not (cfg.api_key_env and os.environ.get(cfg.api_key_env))
