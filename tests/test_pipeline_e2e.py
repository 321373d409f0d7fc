"""End to end: the real `llm-pipeline` Prefect flow over the real DVC stages at smoke scale.

Runs in a copy of the project (a fresh git repository), with the embedded defaults: MLflow on
SQLite inside the copy, Prefect's test harness API, DVC's local cache. Then runs it again and
checks that nothing re-runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.constants import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    LINEAGE_TAGS,
    MODEL_BASE,
    MODEL_POLICY,
    MODEL_POLICY_INT4,
    MODEL_POLICY_INT8,
    MODEL_REWARD,
    MODEL_SFT,
    TAG_PARENT_MODEL,
)
from components.stage import STAGE_NAMES
from flows.dvc_stage import dvc_executable, stage_order
from tests.helpers import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

PARENTS = {
    MODEL_BASE: None,
    MODEL_SFT: MODEL_BASE,
    MODEL_REWARD: MODEL_BASE,
    MODEL_POLICY: MODEL_SFT,
    MODEL_POLICY_INT8: MODEL_POLICY,
    MODEL_POLICY_INT4: MODEL_POLICY,
}


def copy_project(dest: Path) -> Path:
    """The files git would check out (tracked + new, not ignored), in a new repository."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.email=ci@llmops", "-c", "user.name=ci"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "snapshot"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import llm_pipeline

    root = copy_project(tmp_path_factory.mktemp("project"))
    cwd = Path.cwd()
    old_env = dict(os.environ)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with prefect_test_harness(server_startup_timeout=120):
            # The profile changes params: an isolated run, saved as a DVC experiment; applied,
            # it is the workspace's state, and a plain run in place finds everything up to date.
            first = llm_pipeline(profile="smoke", project_dir=str(root))
            (name,) = _dvc(root, "exp", "list", "--name-only").split()
            _dvc(root, "exp", "apply", name)
            second = llm_pipeline(project_dir=str(root))
            runs = asyncio.run(_flow_runs())
        yield {"root": root, "first": first, "second": second, "flow_runs": runs}
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(old_env)


async def _flow_runs():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter

    async with get_client() as client:
        flows = await client.read_flow_runs()
        tasks = await client.read_task_runs(task_run_filter=TaskRunFilter())
        artifacts = await client.read_artifacts()
        return {
            # Prefect stores link artifacts as markdown "[text](url)".
            "links": {a.key: a.data for a in artifacts if (a.key or "").startswith("mlflow-")},
            "flows": [(f.name, f.state_type.value) for f in flows],
            "tasks": [(t.name, t.flow_run_id, t.state_name) for t in tasks],
            "flow_ids": [str(f.id) for f in flows],
        }


def metrics(root: Path, stage: str) -> dict:
    return json.loads((root / "metrics" / f"{stage}.json").read_text())


def test_every_stage_ran_once_then_nothing_reran(project):
    assert project["first"] == stage_order(project["root"])  # all of them, in DAG order
    assert sorted(project["first"]) == sorted(STAGE_NAMES)
    assert project["second"] == []


def test_prefect_recorded_both_flow_runs_and_skipped_tasks(project):
    runs = project["flow_runs"]
    assert [state for _, state in runs["flows"]] == ["COMPLETED", "COMPLETED"]
    states = [state for _, _, state in runs["tasks"]]
    assert states.count("Skipped") == len(STAGE_NAMES)
    assert states.count("Completed") == len(STAGE_NAMES)
    # Each stage that ran links to its MLflow run.
    links = runs["links"]
    assert sorted(links) == sorted(f"mlflow-{s.replace('_', '-')}" for s in STAGE_NAMES)
    assert all("/#/experiments/" in link and "/runs/" in link for link in links.values())


def test_stage_metrics_are_sane(project):
    root = project["root"]
    for stage in STAGE_NAMES:
        assert (root / "metrics" / f"{stage}.json").exists(), stage
    assert metrics(root, "ingest")["quarantined"] >= 3  # the bundled broken records
    assert metrics(root, "curate")["docs_kept"] > 0
    pre = metrics(root, "pretrain")
    assert pre["train_loss_last"] < pre["train_loss_first"]
    assert pre["world_size"] == 2 and pre["zero_stage"] == 3
    ev = metrics(root, "evaluate")
    # The gated numbers are what the per-item file gives: the share right and its stderr.
    correct = [
        float(row["correct"])
        for row in map(json.loads, (root / "reports" / "predictions.jsonl").open())
        if row["model"] == "policy"
    ]
    n, mean = len(correct), sum(correct) / len(correct)
    assert ev["eval_accuracy"] == pytest.approx(mean, abs=1e-4) and ev["n_examples"] == n
    stderr = (sum((c - mean) ** 2 for c in correct) / (n - 1) / n) ** 0.5
    assert ev["eval_accuracy_stderr"] == pytest.approx(stderr, abs=1e-4)
    assert {f"policy.accuracy.{t}" for t in ("add", "sub", "speaker")} <= set(ev)
    judge = metrics(root, "judge")
    # The reward-model judge calibrated on the smoke profile's 4 pairs and was flagged.
    assert judge["judge.calibration.n_pairs"] == 4 and judge["judge.independent"] == 0
    assert judge["judge.available"] == int(judge["judge.calibration.accuracy"] >= 0.75)
    promotion = metrics(root, "promote")
    assert promotion["gate.perplexity"] == "pass"  # the first run: no champion to compare
    assert promotion["gate.eval_accuracy"] == "skip" and promotion["confidence"] == 0.95
    quant = metrics(root, "quantize")
    assert 0 < quant["int4.size_ratio"] < quant["int8.size_ratio"] < 1.0
    assert abs(quant["int8.perplexity_change"]) < 0.05
    assert {"policy_int8.perplexity", "policy_int4.eval_accuracy"} <= set(ev)


def test_registry_holds_every_model_with_lineage(project, monkeypatch):
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"sqlite:///{project['root'] / '.mlflow' / 'mlflow.db'}"
    )
    client = MlflowClient()
    for name, parent in PARENTS.items():
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == 1, name
        tags = versions[0].tags
        assert set(LINEAGE_TAGS) <= set(tags), (name, tags)
        if parent:
            assert tags[TAG_PARENT_MODEL] == f"{parent}/1"
    champion = client.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHAMPION)
    challenger = client.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHALLENGER)
    assert str(champion.version) == str(challenger.version) == "1"
    # The champion's per-item results, for the next challenger's paired test.
    import mlflow

    items = mlflow.artifacts.load_dict(champion.tags["promotion.items"])["eval_accuracy"]
    assert len(items) == metrics(project["root"], "evaluate")["n_examples"]


def test_every_stage_has_a_nested_mlflow_run(project, monkeypatch):
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"sqlite:///{project['root'] / '.mlflow' / 'mlflow.db'}"
    )
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 2  # one per pipeline run
    assert sorted(r.info.run_name for r in children) == sorted(STAGE_NAMES)


def _dvc(root: Path, *args: str) -> str:
    return subprocess.run(
        [dvc_executable(), *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout


def test_profile_override_was_recorded_as_a_dvc_experiment(project):
    names = _dvc(project["root"], "exp", "list", "--name-only").split()
    assert len(names) == 1  # only the first run changed params
    diff = json.loads(_dvc(project["root"], "params", "diff", "--json", "HEAD", names[0]))
    diff = diff["params.yaml"]
    assert diff["profile"] == {"old": "demo", "new": "smoke"}
    assert diff["pretrain.max_steps"]["new"] == 30


def test_vllm_answered_through_the_openai_client(project):
    deploy = metrics(project["root"], "deploy")
    assert deploy["chat_ok"] >= 1
    report = json.loads((project["root"] / "reports" / "deploy.json").read_text())
    assert report["chat"]["completion_tokens"] > 0
