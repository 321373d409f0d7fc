"""Prefect work-pool base job templates (infra/prefect/), rendered by Prefect's own templating.

A variable that `job_configuration` does not reference is accepted by Prefect and then silently
dropped, so each test checks the rendered job, not only the variables schema.
"""

from __future__ import annotations

import json

import pytest
import yaml
from prefect.utilities.templating import apply_values, find_placeholders
from prefect.workers.base import BaseJobConfiguration
from prefect.workers.process import ProcessWorker

from tests.helpers import ROOT

POOLS = ROOT / "infra" / "prefect"


def template(name: str) -> dict:
    return json.loads((POOLS / name).read_text())


def rendered(base: dict, values: dict) -> dict:
    """The job a worker would build: defaults, then the deployment's job variables."""
    variables = BaseJobConfiguration._get_base_config_defaults(base["variables"]["properties"])
    return apply_values(base["job_configuration"], {**variables, **values})


@pytest.mark.parametrize("name", ["gpu-process.json", "gpu-kubernetes.json"])
def test_every_variable_reaches_the_job(name):
    base = template(name)
    used = {p.name for p in find_placeholders(base["job_configuration"])}
    declared = set(base["variables"]["properties"])
    assert declared <= used, f"declared but dropped: {sorted(declared - used)}"
    assert used <= declared, f"referenced but undeclared: {sorted(used - declared)}"


def test_kubernetes_job_requests_gpus_and_runs_the_training_image():
    job = rendered(template("gpu-kubernetes.json"), {"gpus": 4, "image": "repo/llmops-train:1"})
    spec = job["job_manifest"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 4
    assert container["image"] == "repo/llmops-train:1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    shm = {v["name"]: v for v in spec["volumes"]}["shm"]["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "64Gi"}
    default = rendered(template("gpu-kubernetes.json"), {})
    limits = default["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert limits["limits"]["nvidia.com/gpu"] == 8  # one p5 node's GPUs
    assert default["env"]["LLMOPS_PROJECT_DIR"] == "/workspace/llmops"


def test_process_pool_runs_in_the_training_image_checkout():
    base = template("gpu-process.json")
    default = ProcessWorker.get_default_base_job_template()
    assert base["job_configuration"] == default["job_configuration"]  # only defaults differ
    job = rendered(base, {})
    # The head node's container (infra/docker/train.Dockerfile) holds the project here, and
    # prefect.yaml's pull step changes to $LLMOPS_PROJECT_DIR.
    assert job["working_dir"] == "/workspace/llmops"
    assert job["env"]["LLMOPS_PROJECT_DIR"] == "/workspace/llmops"
    dockerfile = (ROOT / "infra" / "docker" / "train.Dockerfile").read_text()
    assert "WORKDIR /workspace/llmops" in dockerfile


def test_pretrain_cluster_deployment_uses_the_process_pool():
    config = yaml.safe_load((ROOT / "infra" / "prefect" / "prefect-cluster.yaml").read_text())
    deployment = {d["name"]: d for d in config["deployments"]}["pretrain-cluster"]
    assert deployment["work_pool"]["name"] == "gpu"
    assert deployment["parameters"]["profile"] == "cluster"
    entrypoint = (ROOT / "infra" / "docker" / "train-entrypoint.sh").read_text()
    assert 'prefect worker start --pool "${LLMOPS_WORK_POOL:-gpu}" --type process' in entrypoint
