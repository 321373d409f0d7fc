"""deploy stage: serve the registry's champion with vLLM, send a smoke load, record the numbers.

setup (resolve `llmops-policy@champion`, download its HF directory) -> serve (vLLM subprocess)
-> load (chat + completion requests through the openai client) -> cleanup (server stopped).

For real use the same server runs in the foreground with `llmops serve` (`serve_forever`):
    llmops serve [--model-uri models:/llmops-policy@champion]
which runs, from the serving environment,
    python -m vllm.entrypoints.openai.api_server --model <downloaded>/artifacts/<hf dir>
        --served-model-name llmops-policy --host 127.0.0.1 --port <deploy.port>
        --dtype <deploy.dtype> --max-model-len <deploy.max_model_len> [CPU flags]
(see `vllm_server.server_command`); then point any OpenAI client at
http://127.0.0.1:<deploy.port>/v1 with api_key "EMPTY" and model "llmops-policy".
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.config import DeployParams, StageParams
from components.constants import ALIAS_CHAMPION, LINEAGE_TAGS, MODEL_POLICY
from components.serving import client, vllm_server
from components.stage import StageResult
from components.tracking import mlflow_env
from components.tracking.hf_pyfunc import HF_ARTIFACT
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

SERVER_LOG = "vllm_server.log"


class Reads(StageParams):
    deploy: DeployParams


@dataclass(frozen=True)
class Paths:
    promotion: Path  # metrics/promote.json (the promote stage's decision; a DVC dependency)
    out: Path  # JSON report: model, server command, per-request numbers
    metrics: Path


class NoChampionError(LookupError):
    """No registered version holds the champion alias."""


def champion_version(mlflow_client: MlflowClient, name: str = MODEL_POLICY) -> ModelVersion:
    try:
        return mlflow_client.get_model_version_by_alias(name, ALIAS_CHAMPION)
    except MlflowException as err:
        raise NoChampionError(
            f"no model holds the {ALIAS_CHAMPION} alias of {name!r}; run the promote stage "
            f"(`dvc repro promote`) or set the alias in the MLflow registry ({err.message})"
        ) from err


def hf_model_dir(model_root: Path) -> Path:
    """The HF directory inside a downloaded pyfunc model (path recorded in its MLmodel file)."""
    mlmodel = model_root / "MLmodel"
    rel = f"artifacts/{HF_ARTIFACT}"
    if mlmodel.exists():
        spec = yaml.safe_load(mlmodel.read_text()) or {}
        artifacts = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {})
        rel = artifacts.get(HF_ARTIFACT, {}).get("path", rel)
    hf_dir = model_root / rel
    if not (hf_dir / "config.json").exists():
        raise FileNotFoundError(
            f"{hf_dir} holds no config.json: {model_root} is not a model registered by "
            f"components.tracking.registry (expected the HF directory under artifact "
            f"{HF_ARTIFACT!r})"
        )
    return hf_dir


def download_model(model_uri: str, dst: Path) -> Path:
    """Download a registered model and return its HF directory."""
    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    return hf_model_dir(root)


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


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.deploy
    promotion = json.loads(paths.promotion.read_text())
    version = champion_version(MlflowClient())
    if str(promotion.get("champion_version")) != str(version.version):
        log.warning(
            "registry champion is version %s but %s says %s: serving the registry's",
            version.version,
            paths.promotion,
            promotion.get("champion_version"),
        )
    model_uri = f"models:/{MODEL_POLICY}/{version.version}"
    tracker.set_tags({"deploy.model_uri": model_uri})

    with tempfile.TemporaryDirectory(prefix="llmops-deploy-") as tmp:
        hf_dir = download_model(model_uri, Path(tmp) / "model")
        log_path = Path(tmp) / SERVER_LOG
        try:
            with vllm_server.running_server(hf_dir, cfg, MODEL_POLICY, log_path) as server:
                load = client.run_load(
                    server.base_url, server.served_name, cfg.n_requests, cfg.max_tokens
                )
        finally:
            if log_path.exists():
                tracker.log_artifact(log_path, "serving")

    _check(load)
    report = {
        "model": {
            "name": MODEL_POLICY,
            "version": version.version,
            "uri": model_uri,
            "run_id": version.run_id,
            "lineage": {k: version.tags.get(k, "") for k in LINEAGE_TAGS},
        },
        "server": {
            "command": list(server.command),
            "startup_s": round(server.startup_s, 2),
            "base_url": server.base_url,
            "served_model_name": server.served_name,
        },
        "params": cfg.model_dump(mode="json"),
        **load,
    }
    paths.out.parent.mkdir(parents=True, exist_ok=True)
    paths.out.write_text(json.dumps(report, indent=2) + "\n")
    tracker.log_dict(report, "deploy_report.json")
    return StageResult(
        metrics=_metrics(version, server.startup_s, load),
        notes={
            "sample_chat_reply": load["chat"]["sample_reply"],
            "sample_completion": load["completion"]["sample_reply"],
        },
    )


def serve_forever(
    params: Reads,
    model_uri: str = f"models:/{MODEL_POLICY}@{ALIAS_CHAMPION}",
) -> int:
    """`llmops serve`: download `model_uri` and serve it in the foreground until Ctrl-C."""
    mlflow_env.configure()
    with tempfile.TemporaryDirectory(prefix="llmops-serve-") as tmp:
        try:
            hf_dir = download_model(model_uri, Path(tmp) / "model")
        except MlflowException as err:
            raise NoChampionError(
                f"cannot resolve {model_uri}: {err.message}. If no model holds the "
                f"{ALIAS_CHAMPION} alias yet, run the promote stage"
            ) from err
        return vllm_server.serve_foreground(hf_dir, params.deploy, MODEL_POLICY)
