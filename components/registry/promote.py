"""promote stage: the policy becomes `challenger`; `champion` moves to it only if gates pass.

Compares challenger, base model and current champion on the metric named in params, logs all
three, and says why when it keeps the current champion.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from components.config import PromoteParams, StageParams
from components.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, MODEL_POLICY, REGISTRY_RECORD
from components.stage import StageResult
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

# Metric direction: does a larger value mean a better model?
HIGHER_IS_BETTER = {"eval_accuracy": True, "perplexity": False}
EVAL_TAG_PREFIX = "eval."


class Reads(StageParams):
    promote: PromoteParams


@dataclass(frozen=True)
class Paths:
    policy: Path  # the aligned policy directory (its registry record names the version)
    evaluation: Path  # metrics/evaluate.json
    metrics: Path


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    cfg: PromoteParams, challenger: dict[str, float], champion: dict[str, float] | None
) -> Decision:
    """Pure gate: absolute perplexity bound, then the metric against the champion."""
    ppl = challenger.get("perplexity")
    if ppl is None or ppl > cfg.max_perplexity:
        return Decision(
            False, f"challenger perplexity {ppl} exceeds max_perplexity {cfg.max_perplexity}"
        )
    if champion is None:
        return Decision(True, "no current champion")
    metric = cfg.metric
    if metric not in champion:
        return Decision(True, f"current champion has no recorded {metric}")
    new, old = challenger[metric], champion[metric]
    if HIGHER_IS_BETTER[metric]:
        ok, need = new >= old + cfg.min_delta, f">= {old + cfg.min_delta:.4f}"
    else:
        ok, need = new <= old - cfg.min_delta, f"<= {old - cfg.min_delta:.4f}"
    verdict = "passes" if ok else "fails"
    return Decision(
        ok,
        f"challenger {metric}={new:.4f} {verdict} the gate {need} "
        f"(champion {metric}={old:.4f}, min_delta={cfg.min_delta})",
    )


def _eval_tags(version) -> dict[str, float]:
    return {
        k[len(EVAL_TAG_PREFIX) :]: float(v)
        for k, v in version.tags.items()
        if k.startswith(EVAL_TAG_PREFIX)
    }


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


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.promote
    record = json.loads((paths.policy / REGISTRY_RECORD).read_text())
    if record["name"] != MODEL_POLICY:
        raise ValueError(f"{paths.policy} holds {record['name']}, expected {MODEL_POLICY}")
    evaluation = json.loads(paths.evaluation.read_text())
    challenger = {k: float(evaluation[k]) for k in HIGHER_IS_BETTER if k in evaluation}
    if cfg.metric not in challenger:
        raise KeyError(
            f"promote.metric={cfg.metric!r} is not in {paths.evaluation}; "
            f"available: {sorted(evaluation)}"
        )

    client = MlflowClient()
    version = str(record["version"])
    # Read the champion before writing anything: an unreadable registry leaves aliases as
    # they were.
    champ = current_champion(client, MODEL_POLICY)
    for key, value in challenger.items():
        client.set_model_version_tag(MODEL_POLICY, version, EVAL_TAG_PREFIX + key, str(value))
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHALLENGER, version)

    if champ is not None and str(champ.version) == version:
        decision = Decision(True, f"version {version} already holds {ALIAS_CHAMPION}")
        champion_metrics = challenger
    else:
        champion_metrics = _eval_tags(champ) if champ else None
        decision = decide(cfg, challenger, champion_metrics)
        if decision.promote:
            client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, version)
    (log.info if decision.promote else log.warning)("promotion: %s", decision.reason)
    tracker.set_tags(
        {
            "promotion.decision": "promoted" if decision.promote else "kept",
            "promotion.reason": decision.reason[:500],
        }
    )

    serving = version if decision.promote else (str(champ.version) if champ else "")
    metrics: dict = {
        "promoted": int(decision.promote),
        "challenger_version": int(version),
        "champion_version": int(serving) if serving else -1,
        "reason": decision.reason,
        f"challenger.{cfg.metric}": challenger[cfg.metric],
    }
    if champion_metrics and cfg.metric in champion_metrics:
        metrics[f"previous_champion.{cfg.metric}"] = champion_metrics[cfg.metric]
    if f"base.{cfg.metric}" in evaluation:
        metrics[f"base.{cfg.metric}"] = float(evaluation[f"base.{cfg.metric}"])
    return StageResult(metrics=metrics)
