"""Which version holds `champion`: read by the stages that compare against it (judge, promote)
and by rollback, and never mistaken for "none" when the registry cannot be read."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from components.constants import ALIAS_CHAMPION


class RegistryUnavailable(RuntimeError):
    """The registry could not be read: promotion must not decide on what it cannot see."""


def current_champion(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding `champion`, or None when the model or the alias does not exist.

    Absence is read from the registry's answer (no such model; an alias list without
    `champion`), never inferred from an error: any other failure raises RegistryUnavailable,
    so an outage cannot look like "no champion" and hand the alias to the challenger.
    """
    try:
        model = client.get_registered_model(name)
        if ALIAS_CHAMPION not in model.aliases:
            return None
        return client.get_model_version(name, str(model.aliases[ALIAS_CHAMPION]))
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise RegistryUnavailable(
            f"cannot read the {ALIAS_CHAMPION} alias of {name} from the model registry at "
            f"{mlflow.get_registry_uri()} ({err.error_code}: {err.message}); promotion stopped "
            "with every alias unchanged. Check the tracking/registry server (or the SQLite "
            "store), then re-run the promote stage"
        ) from err
