"""promote stage: the policy becomes `challenger`; `champion` moves to it only if every gate
passes.

The gates are `promote.gates` in params.yaml: each names a metric of metrics/evaluate.json,
metrics/judge.json or metrics/safety.json (the challenger's), which way is better, and a bound,
either absolute or relative to the champion's recorded value (`eval.<metric>` tags on its model
version). Rules that keep a champion (set by the pipeline or by hand in the MLflow UI) until
something better comes:

- an `against: champion` gate needs the challenger to beat the champion by MORE than its margin
  (default `promote.min_delta`), so a tie keeps the champion unless the margin is negative;
  with `test: mcnemar` it must also be significantly better on the same items (a paired exact
  test at `promote.confidence` on per-item correctness: the challenger's from
  reports/predictions.jsonl, the champion's from the items artifact its own promotion logged);
- an absolute gate with `bound` compares that key (an interval's bound) instead of the value;
- a gate with `independence` whose evidence shares training signal with the challenger (the
  reward-model judge) can fail but never pass: its pass is reported skipped;
- when accuracy's paired test and the judge's interval point opposite ways,
  `promote.on_disagreement` decides, whatever the gates say one by one;
- while a champion exists, at least one `against: champion` gate must pass;
- a metric that is missing (challenger or champion) never passes: its gate fails or, with
  `if_missing: skip`, is left out of the decision and reported as skipped;
- a version that was rolled back (`llmops rollback`) is not made champion again;
- an unreadable registry stops the stage before anything is written (RegistryUnavailable);
- with `deploy.canary.enabled` and a champion in place, passing every gate sends the challenger
  to the canary instead (verdict `canary`): `champion` stays, and the deploy stage's live
  window decides (components/serving/canary.py).

Every decision is an audit record: this stage's MLflow run (tags + promotion/decision.json) and
`promotion.*` tags on the challenger's model version (components/registry/audit.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.config import DeployParams, PromoteParams, StageParams
from components.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, EVAL_TAG_PREFIX, MODEL_POLICY
from components.evaluation.significance import (
    Direction,
    TooFewItems,
    disagreement,
    interval_direction,
    mcnemar,
    per_item,
)
from components.registry import audit
from components.registry.champion import current_champion
from components.registry.gates import GateResult, PairedEvidence, check_gate, independent_only
from components.stage import StageResult
from components.tracking import lineage
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

TO_CANARY = "deploy.canary.enabled: the champion stays until the deploy stage's live canary decides"
ITEMS_ARTIFACT = "promotion/items.json"  # {metric: {item id: correct}} of the challenger


class Reads(StageParams):
    promote: PromoteParams
    deploy: DeployParams  # deploy.canary.enabled: the live canary decides instead


@dataclass(frozen=True)
class Paths:
    policy: Path  # the aligned policy directory (its registry record names the version)
    evaluation: Path  # metrics/evaluate.json
    predictions: Path  # reports/predictions.jsonl (per-item correctness, every model)
    judge: Path  # metrics/judge.json (pairwise judge vs the champion)
    safety: Path  # metrics/safety.json (toxicity and regurgitation rates)
    metrics: Path


@dataclass(frozen=True)
class Signals:
    """Which way accuracy (paired test) and the judge (interval vs 1/2) point."""

    accuracy: Direction = "none"
    judge: Direction = "none"
    judge_independent: bool = False

    @property
    def disagree(self) -> bool:
        return disagreement(self.accuracy, self.judge)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    gates: tuple[GateResult, ...] = ()
    signals: Signals = Signals()


def signals(
    cfg: PromoteParams, challenger: dict[str, float], results: tuple[GateResult, ...]
) -> Signals:
    """Accuracy's direction from the first paired test, the judge's from its interval."""
    tests = [r.paired for r in results if r.paired is not None]
    accuracy: Direction = tests[0]["direction"] if tests else "none"
    judge: Direction = "none"
    rule = cfg.gates.get(cfg.disagreement_judge)
    if rule is not None:
        metric = rule.metric or cfg.disagreement_judge
        low, high = challenger.get(f"{metric}_ci_low"), challenger.get(f"{metric}_ci_high")
        if low is not None and high is not None:
            judge = interval_direction(low, high)
    independent = rule is not None and (
        rule.independence is None or challenger.get(rule.independence) == 1
    )
    return Signals(accuracy, judge, independent)


def _overrule(results: tuple[GateResult, ...], gates: set[str], why: str) -> tuple[GateResult, ...]:
    return tuple(
        dataclasses.replace(r, status="skip", reason=f"{r.reason}; overruled: {why}")
        if r.gate in gates and r.status != "skip"
        else r
        for r in results
    )


def decide(
    cfg: PromoteParams,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    paired: dict[str, PairedEvidence] | None = None,
) -> Decision:
    """Pure gate: promote iff no gate fails and, while a champion exists, the challenger is
    shown to be better than it on at least one `against: champion` gate. When accuracy and the
    judge disagree, `on_disagreement` decides instead of the gates one by one."""
    results = tuple(
        independent_only(
            check_gate(
                name, metric, rule, cfg.min_delta, challenger, champion, (paired or {}).get(metric)
            ),
            rule,
            challenger,
        )
        for name, (metric, rule) in cfg.rules().items()
    )
    sig = signals(cfg, challenger, results)
    if sig.disagree:
        why = (
            f"accuracy says {sig.accuracy}, the judge says {sig.judge}, each beyond its "
            f"interval; promote.on_disagreement={cfg.on_disagreement}"
        )
        paired_gates = {r.gate for r in results if r.paired is not None}
        if cfg.on_disagreement == "accuracy":
            results = _overrule(results, {cfg.disagreement_judge}, why)
        elif cfg.on_disagreement == "judge" and sig.judge_independent:
            results = _overrule(results, paired_gates, why)
            if sig.judge == "better":  # the judge, against the champion, shows it better
                return _decided(results, sig, champion, f"{why}: the judge shows it better")
        else:
            dependent = "" if sig.judge_independent else " (the judge is not independent)"
            return Decision(False, f"signals disagree{dependent}: {why}", results, sig)
    return _decided(results, sig, champion, "")


def _decided(
    results: tuple[GateResult, ...], sig: Signals, champion: dict[str, float] | None, shown: str
) -> Decision:
    summary = "; ".join(f"{r.gate} {r.status}: {r.reason}" for r in results)
    failed = [r.gate for r in results if r.status == "fail"]
    if failed:
        return Decision(False, f"gates failed ({', '.join(failed)}): {summary}", results, sig)
    if champion is None:
        return Decision(True, f"no current champion; {summary}", results, sig)
    if shown:
        return Decision(True, f"{shown}; {summary}", results, sig)
    if not any(r.status == "pass" and r.against == "champion" for r in results):
        return Decision(
            False,
            "no `against: champion` gate passed, so the challenger is not shown to be better "
            f"than the champion; {summary}",
            results,
            sig,
        )
    return Decision(True, f"all gates passed; {summary}", results, sig)


def recorded_metrics(version: ModelVersion) -> dict[str, float]:
    """The `eval.<metric>` tags the promote stage wrote on a version."""
    return {
        k[len(EVAL_TAG_PREFIX) :]: float(v)
        for k, v in version.tags.items()
        if k.startswith(EVAL_TAG_PREFIX)
    }


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


def champion_items(champ: ModelVersion) -> dict[str, dict[str, bool]] | str:
    """The per-item results logged when the champion was promoted, or why there are none."""
    uri = champ.tags.get(audit.TAG_ITEMS)
    if not uri:
        return (
            f"champion version {champ.version} has no {audit.TAG_ITEMS} tag (set by the promote "
            "stage that made it champion)"
        )
    try:
        return mlflow.artifacts.load_dict(uri)
    except (MlflowException, OSError) as err:
        return f"cannot read the champion's per-item results {uri}: {err}"


def paired_tests(
    cfg: PromoteParams,
    mine: dict[str, dict[str, bool]],
    theirs: dict[str, dict[str, bool]] | str,
) -> dict[str, PairedEvidence]:
    """A paired test per metric of a `test: mcnemar` gate, or the reason there is none."""
    out: dict[str, PairedEvidence] = {}
    for metric, rule in cfg.rules().values():
        if rule.test != "mcnemar":
            continue
        if isinstance(theirs, str):
            out[metric] = theirs
        elif metric not in mine or metric not in theirs:
            out[metric] = f"no per-item results of {metric} for both models"
        else:
            try:
                out[metric] = mcnemar(mine[metric], theirs[metric], cfg.confidence)
            except TooFewItems as err:
                out[metric] = str(err)
    return out


def _decide_for(
    cfg: PromoteParams,
    candidate: ModelVersion,
    challenger: dict[str, float],
    champ: ModelVersion | None,
    paired: dict[str, PairedEvidence],
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
    decision = decide(cfg, challenger, recorded_metrics(champ) if champ else None, paired)
    return decision, "promoted" if decision.promote else "kept"


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.promote
    # The record if it describes these weights, else the registry by content hash (DVC restores
    # a model directory without its record).
    name, version = lineage.parent_model(paths.policy).rsplit("/", 1)
    if name != MODEL_POLICY:
        raise ValueError(f"{paths.policy} holds {name}, expected {MODEL_POLICY}")
    evaluation = challenger_evaluation(paths)
    challenger = challenger_metrics(cfg, evaluation)
    items = per_item(paths.predictions)

    client = MlflowClient()
    # Read the champion before writing anything: an unreadable registry leaves aliases as
    # they were.
    champ = current_champion(client, MODEL_POLICY)
    candidate = client.get_model_version(MODEL_POLICY, version)
    for key, value in challenger.items():
        client.set_model_version_tag(MODEL_POLICY, version, EVAL_TAG_PREFIX + key, str(value))
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHALLENGER, version)
    tracker.log_dict(items, ITEMS_ARTIFACT)
    paired = paired_tests(cfg, items, champion_items(champ)) if champ else {}

    decision, verdict = _decide_for(cfg, candidate, challenger, champ, paired)
    before = str(champ.version) if champ else ""
    if verdict == "promoted" and champ is not None and params.deploy.canary.enabled:
        verdict = "canary"
        decision = dataclasses.replace(decision, reason=f"{decision.reason}; {TO_CANARY}")
    if verdict == "promoted":
        client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, version)
        client.set_model_version_tag(MODEL_POLICY, version, audit.TAG_PREVIOUS_CHAMPION, before)
    after = version if verdict in ("promoted", "already_champion") else before
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
        "confidence": cfg.confidence,
        "signals": {
            **dataclasses.asdict(decision.signals),
            "disagree": decision.signals.disagree,
            "rule": cfg.on_disagreement,
        },
        # The judge's availability, calibration scores and thresholds, and independence.
        "judge": {k: v for k, v in evaluation.items() if k.startswith("judge.")},
        "items": f"runs:/{tracker.run_id}/{ITEMS_ARTIFACT}",
        **audit.stamp(tracker.run_id),
    }
    tracker.log_dict(entry, "promotion/decision.json")
    tracker.set_tags(audit.as_tags({k: v for k, v in entry.items() if k != "metrics"}))
    audit.tag_version(client, MODEL_POLICY, version, entry)

    metrics: dict[str, Any] = {
        "promoted": int(verdict in ("promoted", "already_champion")),
        "verdict": verdict,
        "challenger_version": int(version),
        "champion_version": int(after) if after else -1,
        "reason": decision.reason,
        "confidence": cfg.confidence,
        "signals.accuracy": decision.signals.accuracy,
        "signals.judge": decision.signals.judge,
        "signals.disagree": int(decision.signals.disagree),
        "signals.rule": cfg.on_disagreement,
        **{f"challenger.{k}": v for k, v in challenger.items()},
        **{f"gate.{g.gate}": g.status for g in decision.gates},
    }
    if champ is not None and before != version:
        metrics.update({f"previous_champion.{k}": v for k, v in recorded_metrics(champ).items()})
    return StageResult(metrics=metrics)
