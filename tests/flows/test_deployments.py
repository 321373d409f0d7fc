import yaml

from components.stage import STAGE_NAMES
from flows.pipeline import llm_pipeline
from tests.helpers import ROOT


def test_every_deployment_points_at_the_flow_with_valid_parameters():
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    # `prefect deploy --all` needs only the `local` pool; the cluster one is deployed on request.
    assert {d["work_pool"]["name"] for d in config["deployments"]} == {"local"}
    cluster = yaml.safe_load((ROOT / "infra" / "prefect" / "prefect-cluster.yaml").read_text())
    config["deployments"] += cluster["deployments"]
    names = {d["name"] for d in config["deployments"]}
    assert {"llm-pipeline", "curate-data", "pretrain-cluster"} <= names
    profiles = set(yaml.safe_load((ROOT / "params.yaml").read_text())["profiles"])
    for d in config["deployments"]:
        assert d["entrypoint"] == "flows/pipeline.py:llm_pipeline"
        params = d.get("parameters") or {}
        assert set(params) <= set(llm_pipeline.parameters.properties), d["name"]
        assert set(params.get("stages") or []) <= set(STAGE_NAMES), d["name"]
        assert params.get("profile") in profiles | {None}, d["name"]
