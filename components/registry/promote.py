"""promote stage: the policy becomes `challenger`; `champion` moves to it only if every gate
passes.

The gates are `promote.gates` in params.yaml: each names a metric of metrics/evaluate.json,
metrics/judge.json or metrics/safety.json (the challenger's), which way is better, and a bound,
either absolute or relative to the champion's recorded value (`eval.<metric>` tags on its model
version). Rules that keep a champion (set by the pipeline or by hand in the MLflow UI) until
something better comes:

- an `against: champion` gate needs the challenger to beat the champion by MORE than its margin
  (default `promote.min_delta`), so a tie keeps the champion unless the margin is negative;
- while a champion exists, at least one `against: champion` gate must pass;
- a metric that is missing (challenger or champion) never passes: its gate fails or, with
  `if_missing: skip`, is left out of the decision and reported as skipped;
- a version that was rolled back (`llmops promote --rollback`) is not made champion again;
- an unreadable registry stops the stage before anything is written (RegistryUnavailable).

Every decision is an audit record: this stage's MLflow run (tags + promotion/decision.json) and
`promotion.*` tags on the challenger's model version (components/registry/audit.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from components.config import GateRule, PromoteParams, StageParams
from components.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, MODEL_POLICY
from components.registry import audit
from components.stage import StageResult
from components.tracking import lineage
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

EVAL_TAG_PREFIX = "eval."
Status = Literal["pass", "fail", "skip"]


class Reads(StageParams):
    promote: PromoteParams


@dataclass(frozen=True)
class Paths:
    policy: Path  # the aligned policy directory (its registry record names the version)
    evaluation: Path  # metrics/evaluate.json
    judge: Path  # metrics/judge.json (pairwise judge vs the champion)
    safety: Path  # metrics/safety.json (toxicity and regurgitation rates)
    metrics: Path


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    against: str
    status: Status
    value: float | None  # the challenger's
    bound: float | None  # what it was compared with (threshold, or champion ± margin)
    champion: float | None
    reason: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    gates: tuple[GateResult, ...] = ()


def _missing(name: str, metric: str, rule: GateRule, what: str, **kw: Any) -> GateResult:
    status: Status = "skip" if rule.if_missing == "skip" else "fail"
    return GateResult(
        name, metric, rule.against, status, reason=f"{what} (if_missing={status})", **kw
    )


def check_gate(
    name: str,
    metric: str,
    rule: GateRule,
    min_delta: float,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
) -> GateResult:
    """One gate on the challenger's value, against its threshold or the champion's value."""
    value = challenger.get(metric)
    if value is None:
        return _missing(
            name, metric, rule, f"challenger has no {metric}", value=None, bound=None, champion=None
        )
    higher = rule.better == "higher"
    if rule.against == "absolute":
        bound, old = float(rule.threshold), None  # validated: absolute gates have one
        ok = value >= bound if higher else value <= bound
        op = (">=" if higher else "<=") if ok else ("<" if higher else ">")
        reason = f"{metric}={value:.4g} {op} {bound:.4g}"
    else:
        if champion is None:
            return GateResult(
                name, metric, rule.against, "skip", value, None, None, "no champion to compare"
            )
        old = champion.get(metric)
        if old is None:
            return _missing(
                name,
                metric,
                rule,
                f"champion has no recorded {metric} (tag {EVAL_TAG_PREFIX}{metric})",
                value=value,
                bound=None,
                champion=None,
            )
        margin = min_delta if rule.threshold is None else rule.threshold
        bound = old + margin if higher else old - margin
        ok = value > bound if higher else value < bound  # strict: a tie keeps the champion
        op = (">" if higher else "<") if ok else ("<=" if higher else ">=")
        reason = f"{metric}={value:.4g} {op} champion {old:.4g} {'+' if higher else '-'} {margin:g}"
    return GateResult(
        name, metric, rule.against, "pass" if ok else "fail", value, bound, old, reason
    )


def decide(
    cfg: PromoteParams, challenger: dict[str, float], champion: dict[str, float] | None
) -> Decision:
    """Pure gate: promote iff no gate fails and, while a champion exists, the challenger is
    shown to be better than it on at least one `against: champion` gate."""
    results = tuple(
        check_gate(name, metric, rule, cfg.min_delta, challenger, champion)
        for name, (metric, rule) in cfg.rules().items()
    )
    summary = "; ".join(f"{r.gate} {r.status}: {r.reason}" for r in results)
    failed = [r.gate for r in results if r.status == "fail"]
    if failed:
        return Decision(False, f"gates failed ({', '.join(failed)}): {summary}", results)
    if champion is None:
        return Decision(True, f"no current champion; {summary}", results)
    if not any(r.status == "pass" and r.against == "champion" for r in results):
        return Decision(
            False,
            "no `against: champion` gate passed, so the challenger is not shown to be better "
            f"than the champion; {summary}",
            results,
        )
    return Decision(True, f"all gates passed; {summary}", results)


def recorded_metrics(version: ModelVersion) -> dict[str, float]:
    """The `eval.<metric>` tags the promote stage wrote on a version."""
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


def challenger_metrics(cfg: PromoteParams, evaluation: dict[str, Any]) -> dict[str, float]:
    """What is recorded on the challenger's version: the gates' metrics and every plain
    (challenger-level, undotted) number of the evaluation."""
    keys = {m for m, _ in cfg.rules().values()} | {k for k in evaluation if "." not in k}
    return {
        k: float(evaluation[k])
        for k in sorted(keys)
        if isinstance(evaluation.get(k), int | float) and not isinstance(evaluation[k], bool)
    }


def challenger_evaluation(paths: Paths) -> dict[str, Any]:
    """The challenger's numbers from every evaluating stage, in one dict (their keys are
    disjoint: evaluate's model metrics, `judge_*`/`judge.*`, safety's rates)."""
    merged: dict[str, Any] = {}
    for path in (paths.evaluation, paths.judge, paths.safety):
        merged.update(json.loads(path.read_text()))
    return merged


def _decide_for(
    cfg: PromoteParams,
    candidate: ModelVersion,
    challenger: dict[str, float],
    champ: ModelVersion | None,
) -> tuple[Decision, str]:
    """The decision and its verdict word (promoted | kept | already_champion)."""
    version = str(candidate.version)
    if champ is not None and str(champ.version) == version:
        reason = f"version {version} already holds {ALIAS_CHAMPION}"
        return Decision(True, reason), "already_champion"
    if audit.TAG_ROLLED_BACK in candidate.tags:
        return Decision(
            False,
            f"version {version} was rolled back ({audit.TAG_ROLLED_BACK} tag); it is not made "
            f"{ALIAS_CHAMPION} again automatically. Delete that tag to let the gates decide",
        ), "kept"
    decision = decide(cfg, challenger, recorded_metrics(champ) if champ else None)
    return decision, "promoted" if decision.promote else "kept"


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.promote
    # The record if it describes these weights, else the registry by content hash (DVC restores
    # a model directory without its record).
    name, version = lineage.parent_model(paths.policy).rsplit("/", 1)
    if name != MODEL_POLICY:
        raise ValueError(f"{paths.policy} holds {name}, expected {MODEL_POLICY}")
    challenger = challenger_metrics(cfg, challenger_evaluation(paths))

    client = MlflowClient()
    # Read the champion before writing anything: an unreadable registry leaves aliases as
    # they were.
    champ = current_champion(client, MODEL_POLICY)
    candidate = client.get_model_version(MODEL_POLICY, version)
    for key, value in challenger.items():
        client.set_model_version_tag(MODEL_POLICY, version, EVAL_TAG_PREFIX + key, str(value))
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHALLENGER, version)

    decision, verdict = _decide_for(cfg, candidate, challenger, champ)
    before = str(champ.version) if champ else ""
    if verdict == "promoted":
        client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, version)
        client.set_model_version_tag(MODEL_POLICY, version, audit.TAG_PREVIOUS_CHAMPION, before)
    after = version if decision.promote else before
    (log.info if decision.promote else log.warning)("promotion: %s", decision.reason)

    entry = {
        "verdict": verdict,
        "reason": decision.reason,
        "challenger_version": version,
        "champion_before": before,
        "champion_after": after,
        "metrics": challenger,
        "gates": [dataclasses.asdict(g) for g in decision.gates],
        "thresholds": {n: r.model_dump() for n, r in cfg.gates.items()},
        "min_delta": cfg.min_delta,
        **audit.stamp(tracker.run_id),
    }
    tracker.log_dict(entry, "promotion/decision.json")
    tracker.set_tags(audit.as_tags({k: v for k, v in entry.items() if k != "metrics"}))
    audit.tag_version(client, MODEL_POLICY, version, entry)

    metrics: dict[str, Any] = {
        "promoted": int(verdict != "kept"),
        "challenger_version": int(version),
        "champion_version": int(after) if after else -1,
        "reason": decision.reason,
        **{f"challenger.{k}": v for k, v in challenger.items()},
        **{f"gate.{g.gate}": g.status for g in decision.gates},
    }
    if champ is not None and before != version:
        metrics.update({f"previous_champion.{k}": v for k, v in recorded_metrics(champ).items()})
    return StageResult(metrics=metrics)
