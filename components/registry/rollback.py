"""`llmops rollback`: give `champion` back to the version that held it before.

Each version the promote stage made champion carries the version it replaced
(`promotion.previous_champion`), so rollbacks walk back that chain. The rolled-back version is
tagged so the pipeline does not promote it again by itself; the move is its own audit record
(an MLflow run `promote-rollback` and `promotion.*` tags on both versions).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from components.constants import ALIAS_CHAMPION, MODEL_POLICY, RUN_TAG_STAGE
from components.registry import audit
from components.registry.champion import current_champion
from components.tracking import mlflow_env

RUN_NAME = "promote-rollback"


class RollbackError(RuntimeError):
    """There is nothing to roll back to, or the named version does not exist."""


@dataclass(frozen=True)
class Rollback:
    from_version: str
    to_version: str
    run_id: str


def _target(client: MlflowClient, name: str, current: str, to: str | None, tags: dict) -> str:
    target = to or tags.get(audit.TAG_PREVIOUS_CHAMPION, "")
    if not target:
        raise RollbackError(
            f"{name} version {current} holds {ALIAS_CHAMPION} but has no recorded previous "
            f"champion (it was the first one, or the alias was set by hand); name the version "
            f"to go back to: llmops rollback --to VERSION"
        )
    if target == current:
        raise RollbackError(f"version {target} already holds {ALIAS_CHAMPION} of {name}")
    try:
        client.get_model_version(name, target)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise RollbackError(f"{name} has no version {target} to roll back to") from err
        raise
    return target


def rollback(reason: str = "", to: str | None = None, name: str = MODEL_POLICY) -> Rollback:
    """Move `champion` of `name` to its previous holder (or to version `to`), with an audit
    record. Reads before it writes: an unreadable registry raises RegistryUnavailable."""
    mlflow_env.configure()
    client = MlflowClient()
    champ = current_champion(client, name)
    if champ is None:
        raise RollbackError(f"no version of {name} holds {ALIAS_CHAMPION}: nothing to roll back")
    current = str(champ.version)
    target = _target(client, name, current, to, dict(champ.tags))
    with mlflow.start_run(run_name=RUN_NAME, tags={RUN_TAG_STAGE: RUN_NAME}) as run:
        entry = {
            "verdict": "rolled_back",
            "reason": reason or "rollback requested",
            "champion_before": current,
            "champion_after": target,
            **audit.stamp(run.info.run_id),
        }
        mlflow.log_dict(entry, "promotion/decision.json")
        mlflow.set_tags(audit.as_tags(entry))
        client.set_registered_model_alias(name, ALIAS_CHAMPION, target)
        audit.tag_version(client, name, current, entry)
        client.set_model_version_tag(name, current, audit.TAG_ROLLED_BACK, entry["at"])
        audit.tag_version(client, name, target, {**entry, "verdict": "restored"})
        if audit.TAG_ROLLED_BACK in client.get_model_version(name, target).tags:
            # Chosen by name: the user has decided, the guard against re-promotion is lifted.
            client.delete_model_version_tag(name, target, audit.TAG_ROLLED_BACK)
    return Rollback(current, target, run.info.run_id)
