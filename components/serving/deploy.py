"""deploy stage: serve the registry's champion with vLLM, check it answers, evaluate it as served,
send a smoke load, record the numbers.

canary (only when the promote stage's verdict is `canary`, i.e. `deploy.canary.enabled` and the
challenger passed the offline gates while a champion holds the alias: the challenger beside the
champion behind the LiteLLM gateway for the bounded window, components/serving/canary.py; its
decision moves `champion` or rolls the challenger back, with an audit record in this stage's
run; a canary that cannot decide fails the stage with the champion untouched) -> setup (resolve
`llmops-policy@champion`, then the registered form `deploy.variant` names: the fp policy, or
the llmops-policy-int8 / -int4 version quantized from it; download it and any LoRA adapters)
-> serve (vLLM subprocess, API key required) -> check (one completion) -> evaluate
(lm-evaluation-harness `local-chat-completions` on the bundled tasks, `deploy.eval_tasks`) ->
load (chat + completion requests through the openai client) -> cleanup (server stopped).

For real use the same server runs in the foreground with `llmops serve` (`serve_forever`):
    LLMOPS_API_KEY=... llmops serve [--variant int8] [--model-uri models:/llmops-policy/3]
which runs, from the serving environment,
    python -m vllm.entrypoints.openai.api_server --model <downloaded>/artifacts/<hf dir>
        --served-model-name llmops-policy --host 127.0.0.1 --port <deploy.port>
        --dtype <per device and variant> --max-model-len <deploy.max_model_len> [CPU flags]
        [--enable-lora --lora-modules name=<adapter dir> ...]
with VLLM_API_KEY in its environment (see `vllm_server.server_command`); then point any OpenAI
client at http://127.0.0.1:<deploy.port>/v1 with that key and model "llmops-policy".
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.config import DeployParams, StageParams
from components.constants import (
    ALIAS_CHAMPION,
    LINEAGE_TAGS,
    MODEL_POLICY,
    MODEL_POLICY_INT4,
    MODEL_POLICY_INT8,
    TAG_PARENT_MODEL,
)
from components.registry import audit
from components.serving import canary, client, live_eval, vllm_server
from components.serving.access import (
    NoChampionError,
    api_key,
    champion_version,
    one_time,
)
from components.stage import StageResult
from components.tracking import mlflow_env
from components.tracking.model_download import download_model
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

SERVER_LOG = "vllm_server.log"


class Reads(StageParams):
    deploy: DeployParams


@dataclass(frozen=True)
class Paths:
    promotion: Path  # metrics/promote.json (the promote stage's decision; a DVC dependency)
    eval_set: Path  # data/tasks/eval.jsonl: the bundled tasks' data, evaluated on the endpoint
    canary_prompts: Path  # data/canary/prompts.jsonl: the traffic a canary window replays
    out: Path  # JSON report: model, server command, per-request numbers
    metrics: Path


class CanaryFailedError(RuntimeError):
    """The canary could not judge the challenger (a server died, too few requests)."""


class VariantNotFoundError(LookupError):
    """No quantized version of the champion is registered for `deploy.variant`."""


# The registered model holding each quantized form of the policy (the quantize stage's).
VARIANT_MODELS: Mapping[str, str] = {"int8": MODEL_POLICY_INT8, "int4": MODEL_POLICY_INT4}


def registered_variants(mlflow_client: MlflowClient) -> dict[str, list[str]]:
    """{registered name: ["<version> (parent <name/version>)", ...]} of the quantized models."""
    return {
        name: [
            f"{v.version} (parent {v.tags.get(TAG_PARENT_MODEL) or '?'})"
            for v in sorted(_versions(mlflow_client, name), key=lambda v: int(v.version))
        ]
        for name in VARIANT_MODELS.values()
    }


def _versions(mlflow_client: MlflowClient, name: str) -> list[ModelVersion]:
    return list(mlflow_client.search_model_versions(f"name = '{name}'"))


def variant_version(
    mlflow_client: MlflowClient, champion: ModelVersion, variant: str
) -> tuple[str, ModelVersion]:
    """(registered name, version) serving `variant` of `champion`: the champion itself for fp,
    else the newest version of the variant's model whose parent_model is the champion."""
    if variant == "fp":
        return champion.name, champion
    name = VARIANT_MODELS[variant]
    parent = f"{champion.name}/{champion.version}"
    matches = [v for v in _versions(mlflow_client, name) if v.tags.get(TAG_PARENT_MODEL) == parent]
    if not matches:
        raise VariantNotFoundError(
            f"deploy.variant is {variant!r} but no version of {name!r} was quantized from the "
            f"champion {parent}; registered: {registered_variants(mlflow_client)}. Run the "
            "quantize stage on the champion (`dvc repro quantize`) or set deploy.variant: fp"
        )
    return name, max(matches, key=lambda v: int(v.version))


def download_adapters(adapters: Mapping[str, str], dst: Path) -> dict[str, Path]:
    """{served name: local PEFT directory} for deploy.adapters ({name: registry URI})."""
    out = {}
    for name, uri in adapters.items():
        try:
            out[name] = download_model(uri, dst / name, marker="adapter_config.json")
        except MlflowException as err:
            raise LookupError(
                f"deploy.adapters[{name!r}] is {uri!r}, which the registry cannot resolve: "
                f"{err.message}"
            ) from err
    return out


def _metrics(version: ModelVersion, startup_s: float, load: dict[str, dict[str, Any]]) -> dict:
    metrics: dict[str, float | int | str] = {
        "model_version": int(version.version),
        "startup_s": round(startup_s, 2),
    }
    for kind, summary in load.items():  # chat_ok, chat_latency_p50_s, ..., completion_ok, ...
        metrics[f"{kind}_ok"] = summary["n_ok"]
        for key in ("latency_p50_s", "latency_p95_s", "tokens_per_s"):
            metrics[f"{kind}_{key}"] = summary[key]
    return metrics


def _check(load: dict[str, dict[str, Any]]) -> None:
    failed = {kind: s["first_error"] for kind, s in load.items() if s["n_ok"] == 0}
    if failed:
        raise RuntimeError(
            f"the vLLM server answered no request of kind(s) {sorted(failed)}: "
            f"{failed}; see the server log logged to this stage's MLflow run"
        )


def canary_pending(mlflow_client: MlflowClient, promotion: Mapping[str, Any]) -> bool:
    """The promote stage sent a challenger to the canary and no canary has decided on it since
    (a re-run of this stage after a decision deploys the champion; after a failure it retries)."""
    if promotion.get("verdict") != "canary":
        return False
    version = str(promotion["challenger_version"])
    tags = mlflow_client.get_model_version(MODEL_POLICY, version).tags
    verdict = tags.get(audit.TAG_PREFIX + "verdict", "")
    if verdict not in ("canary", "failed"):
        log.info("the canary already decided on version %s (%s): no new canary", version, verdict)
        return False
    return True


def run_canary(cfg: DeployParams, paths: Paths, tracker: Tracker) -> dict[str, Any]:
    """The live canary the promote stage asked for; its decision is applied before the
    champion (old or new) is deployed. Server and gateway logs go to this stage's run."""
    with tempfile.TemporaryDirectory(prefix="llmops-canary-") as tmp:
        try:
            entry = canary.serve_canary(
                cfg, paths.canary_prompts, paths.eval_set, Path(tmp), in_active_run=True
            )
        finally:
            for log_file in sorted(Path(tmp).rglob("*.log")):
                tracker.log_artifact(log_file, "serving/canary")
    if entry["verdict"] == "failed":
        raise CanaryFailedError(
            f"the canary of {MODEL_POLICY} version {entry['challenger_version']} failed, version "
            f"{entry['champion_before']} stays champion: {entry['reason']}. Re-run the stage to "
            "try again (`dvc repro deploy`), or `llmops canary`"
        )
    return entry


def canary_metrics(entry: Mapping[str, Any]) -> dict[str, float | str]:
    """The canary's verdict and each role's live numbers, flat for metrics/deploy.json."""
    keys = ("requests", "errors", "error_rate", "latency_p50_s", "latency_p95_s", "accuracy")
    out: dict[str, float | str] = {"canary.verdict": entry["verdict"]}
    for role, row in entry["canary"].items():
        out.update({f"canary.{role}.{k}": row[k] for k in keys if row.get(k) is not None})
    return out


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.deploy
    promotion = json.loads(paths.promotion.read_text())
    mlflow_client = MlflowClient()
    pending = canary_pending(mlflow_client, promotion)
    canary_entry = run_canary(cfg, paths, tracker) if pending else None
    champion = champion_version(mlflow_client)
    if canary_entry is not None:
        log.info("after the canary, %s version %s is champion", MODEL_POLICY, champion.version)
    elif str(promotion.get("champion_version")) != str(champion.version):
        log.warning(
            "registry champion is version %s but %s says %s: serving the registry's",
            champion.version,
            paths.promotion,
            promotion.get("champion_version"),
        )
    name, version = variant_version(mlflow_client, champion, cfg.variant)
    model_uri = f"models:/{name}/{version.version}"
    tracker.set_tags({"deploy.model_uri": model_uri, "deploy.variant": cfg.variant})
    key = api_key(cfg, one_time_ok=True)

    with tempfile.TemporaryDirectory(prefix="llmops-deploy-") as tmp:
        hf_dir = download_model(model_uri, Path(tmp) / "model")
        adapters = download_adapters(cfg.adapters, Path(tmp) / "adapters")
        log_path = Path(tmp) / SERVER_LOG
        try:
            with vllm_server.running_server(
                hf_dir, cfg, MODEL_POLICY, log_path, api_key=key, adapters=adapters
            ) as server:
                scores = live_eval.evaluate_endpoint(server, cfg, paths.eval_set)
                load = client.run_load(
                    server.base_url,
                    server.served_name,
                    cfg.n_requests,
                    cfg.max_tokens,
                    api_key=server.api_key,
                )
        finally:
            if log_path.exists():
                tracker.log_artifact(log_path, "serving")

    _check(load)
    report = {
        "model": {
            "name": name,
            "variant": cfg.variant,
            "version": version.version,
            "uri": model_uri,
            "champion": f"{champion.name}/{champion.version}",
            "run_id": version.run_id,
            "lineage": {k: version.tags.get(k, "") for k in LINEAGE_TAGS},
        },
        "server": {
            "command": list(server.command),
            "startup_s": round(server.startup_s, 2),
            "base_url": server.base_url,
            "served_model_name": server.served_name,
            "adapters": sorted(adapters),
            "api_key": "configured" if key and not one_time(cfg) else "one-time",
            "check_reply": server.check_reply,
        },
        "params": cfg.model_dump(mode="json"),
        "lm_eval": scores,
        "canary": canary_entry,
        **load,
    }
    paths.out.parent.mkdir(parents=True, exist_ok=True)
    paths.out.write_text(json.dumps(report, indent=2) + "\n")
    tracker.log_dict(report, "deploy_report.json")
    return StageResult(
        metrics={
            **_metrics(version, server.startup_s, load),  # model_version: the served one
            "champion_version": int(champion.version),
            **live_eval.flat(scores),
            **(canary_metrics(canary_entry) if canary_entry else {}),
        },
        notes={
            "sample_chat_reply": load["chat"]["sample_reply"],
            "sample_completion": load["completion"]["sample_reply"],
        },
    )


def resolve_served(model_uri: str | None, variant: str) -> str:
    """The registry URI `llmops serve` serves: `model_uri` as given, else the champion's
    `variant` (read from the registry now, so a champion set by hand in the UI is served)."""
    if model_uri:
        return model_uri
    mlflow_client = MlflowClient()
    name, version = variant_version(mlflow_client, champion_version(mlflow_client), variant)
    return f"models:/{name}/{version.version}"


def serve_forever(params: Reads, model_uri: str | None = None) -> int:
    """`llmops serve`: download the champion's `deploy.variant` (or `model_uri`) and its
    adapters, serve them in the foreground until Ctrl-C; an API key is required unless
    deploy.require_api_key is false."""
    mlflow_env.configure()
    cfg = params.deploy
    key = api_key(cfg, one_time_ok=False)
    uri = resolve_served(model_uri, cfg.variant)
    with tempfile.TemporaryDirectory(prefix="llmops-serve-") as tmp:
        try:
            hf_dir = download_model(uri, Path(tmp) / "model")
        except MlflowException as err:
            raise NoChampionError(
                f"cannot resolve {uri}: {err.message}. If no model holds the "
                f"{ALIAS_CHAMPION} alias yet, run the promote stage"
            ) from err
        adapters = download_adapters(cfg.adapters, Path(tmp) / "adapters")
        log.info("serving %s", uri)
        return vllm_server.serve_foreground(
            hf_dir, cfg, MODEL_POLICY, api_key=key, adapters=adapters
        )
