"""The deploy stage's canary on real servers: two registered versions of a tiny Llama, each
served by vLLM (.venv-serve), the real LiteLLM gateway (.venv-gateway) in front; the window,
lm-eval through the gateway per version, the decision applied in the registry and recorded in
the stage's own run, then the decided champion deployed as usual."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from components.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, MODEL_POLICY
from components.registry import audit
from components.serving import canary, deploy, gateway
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import stage_run
from tests.components.serving.fake_openai import free_port
from tests.components.serving.test_vllm_server import _serving_python, tiny_llama
from tests.helpers import ROOT, project_params, stage_view


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_deploy_stage_canaries_the_challenger_then_serves_the_decided_champion(
    tmp_path, monkeypatch, tasks_dir
):
    _serving_python()
    try:
        gateway.gateway_python()
    except gateway.GatewayError as err:
        pytest.skip(str(err))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "data.txt").write_text("training data")
    canary_cfg = {
        **project_params().deploy.canary.model_dump(),
        "enabled": True,
        "weights": {"champion": 50, "challenger": 50},
        "window_requests": 40,
        "min_challenger_requests": 5,
        # Both versions are the same tiny shape on one loaded machine: the latency gate's
        # verdict would be noise here (the decision rules have their own tests).
        "latency_p95_margin_s": 60.0,
        "gateway_port": free_port(),
        "challenger_port": free_port(),
        "startup_timeout_s": 300,
    }
    params = project_params(
        deploy={
            "port": free_port(), "n_requests": 2, "max_tokens": 8, "eval_limit": 2,
            "canary": canary_cfg,
        }
    )  # fmt: skip
    versions = []
    for seed in (1, 2):  # two different sets of weights: two registry versions
        torch.manual_seed(seed)
        model_dir = tiny_llama(tmp_path / f"policy{seed}")
        with stage_run("align", stage_view("align", params)) as tracker:
            mv = register_model_dir(
                tracker, model_dir, MODEL_POLICY, data_path=tmp_path / "data.txt"
            )
        versions.append(str(mv.version))
    champ, chall = versions
    client = MlflowClient()
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, champ)
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHALLENGER, chall)
    audit.tag_version(client, MODEL_POLICY, chall, {"verdict": "canary"})  # as promote leaves it
    promotion = {
        "verdict": "canary", "promoted": 0, "champion_version": int(champ),
        "challenger_version": int(chall),
    }  # fmt: skip
    (tmp_path / "promote.json").write_text(json.dumps(promotion))
    paths = deploy.Paths(
        promotion=tmp_path / "promote.json",
        eval_set=tasks_dir / "eval.jsonl",
        canary_prompts=ROOT / "data" / "canary" / "prompts.jsonl",
        out=tmp_path / "deploy.json",
        metrics=tmp_path / "metrics.json",
    )
    with stage_run("deploy", stage_view("deploy", params)) as tracker:
        result = deploy.run(tracker.params, paths, tracker)
        run_id = tracker.run_id
    print(json.dumps(result.metrics, indent=1, default=str))

    entry = json.loads(paths.out.read_text())["canary"]
    rows = entry["canary"]
    assert set(rows) == {"champion", "challenger"}, rows  # every answer attributed
    assert rows["champion"]["version"] == champ and rows["challenger"]["version"] == chall
    assert rows["champion"]["requests"] + rows["challenger"]["requests"] == 40
    assert rows["challenger"]["requests"] >= 5 and rows["challenger"]["errors"] == 0
    assert rows["champion"]["accuracy"] is not None and rows["challenger"]["accuracy"] is not None
    assert entry["verdict"] == "promoted", entry["reason"]
    # The decision moved the alias, so the stage then deployed the challenger.
    assert str(client.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHAMPION).version) == chall
    assert result.metrics["model_version"] == int(chall) and result.metrics["chat_ok"] == 2
    assert result.metrics["canary.verdict"] == "promoted"
    assert result.metrics["canary.challenger.requests"] == rows["challenger"]["requests"]
    # The audit record: on the version and in this stage's run, with the servers' logs.
    tags = client.get_model_version(MODEL_POLICY, chall).tags
    assert tags[audit.TAG_PREFIX + "verdict"] == "promoted"
    assert tags[audit.TAG_PREVIOUS_CHAMPION] == champ
    assert tags[audit.TAG_PREFIX + "run_id"] == run_id
    recorded = mlflow.artifacts.load_dict(
        f"{client.get_run(run_id).info.artifact_uri}/promotion/canary.json"
    )
    assert recorded["weights_after"] == {"champion": 0, "challenger": 100}
    answered = mlflow.artifacts.load_text(
        f"{client.get_run(run_id).info.artifact_uri}/{canary.REQUESTS_ARTIFACT}"
    )
    routed = [json.loads(line)["routed_to"] for line in answered.splitlines()]
    assert routed.count(chall) == rows["challenger"]["requests"] and len(routed) == 40
    logged = {a.path for a in client.list_artifacts(run_id, "serving/canary")}
    assert any("gateway" in p for p in logged) and any("vllm-challenger" in p for p in logged)
    # A re-run of the stage deploys the new champion without another canary.
    assert not deploy.canary_pending(client, promotion)
