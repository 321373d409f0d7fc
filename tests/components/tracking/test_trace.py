"""`llmops lineage`: a chain of versions traced from what was recorded, never from the weights."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess

import mlflow
import pandas as pd
import pytest
import yaml
from dvc.repo import Repo
from mlflow import MlflowClient

from components.constants import (
    ALIAS_CHAMPION,
    ARTIFACT_PARAMS,
    ENV_EXPERIMENT,
    ENV_PROJECT_DIR,
    MODEL_BASE,
    MODEL_POLICY,
    MODEL_SFT,
    REGISTRY_RECORD,
    RUN_TAG_REPORT_OF,
    TAG_GIT_COMMIT,
    TAG_PARENT_MODEL,
    TAG_STAGE,
)
from components.registry import audit
from components.tracking import lineage, trace
from components.tracking.lineage_record import LineageNotRecorded, recorded_params
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import stage_run
from flows.cli import cmd_lineage
from tests.helpers import ROOT, project_params, stage_view

GIT = ["git", "-c", "user.email=t@llmops", "-c", "user.name=t"]


def _project(root, monkeypatch):
    """A git + DVC project holding a packed corpus (tracked by DVC) and task data (by git)."""
    root.mkdir()
    monkeypatch.chdir(root)  # DVC resolves the paths it adds from the working directory
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / ".dvcignore").write_text(f"{REGISTRY_RECORD}\n")
    packed = root / "data" / "packed"
    packed.mkdir(parents=True)
    pd.DataFrame(
        {
            "id": ["d1", "d2", "d3"],
            "source_id": ["web-1", "web-2", "code-1"],
            "source": ["web", "web", "code"],
        }
    ).to_parquet(packed / "documents.parquet", index=False)
    (packed / "train.npy").write_bytes(b"tokens")
    (root / "data" / "sft.jsonl").write_text('{"messages": []}\n')
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    Repo.init(str(root)).close()
    with Repo(str(root)) as repo:
        repo.add(str(packed))
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", "project"], cwd=root, check=True)
    return root


def _model(path, weights: bytes):
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}\n')
    (path / "model.safetensors").write_bytes(weights)
    return path


def _register(stage, model_dir, name, data, parent=None):
    with stage_run(stage, stage_view(stage, project_params())) as tracker:
        return register_model_dir(tracker, model_dir, name, data_path=data, parent_dir=parent)


@pytest.mark.slow  # three registrations, ~30 s
def test_a_chain_is_traced_forward_and_by_document_without_reading_weights(
    tmp_path, monkeypatch, capsys
):
    root = _project(tmp_path / "project", monkeypatch)
    monkeypatch.setenv(ENV_PROJECT_DIR, str(root))
    base = _register("pretrain", _model(root / "models" / "base", b"b"), MODEL_BASE, "data/packed")
    # DVC restores a model directory without its (dvcignored) record: the parent is found by the
    # hash DVC recorded for it.
    with Repo(str(root)) as repo:
        repo.add(str(root / "models" / "base"))
    (root / "models" / "base" / REGISTRY_RECORD).unlink()
    sft = _register(
        "sft",
        _model(root / "models" / "sft", b"s"),
        MODEL_SFT,
        "data/sft.jsonl",
        root / "models" / "base",
    )
    monkeypatch.setenv(ENV_EXPERIMENT, "exp-lr2")
    policy = _register(
        "align",
        _model(root / "models" / "policy", b"p"),
        MODEL_POLICY,
        "data/sft.jsonl",
        root / "models" / "sft",
    )
    assert policy.tags["experiment"] == "exp-lr2" and base.tags["experiment"] == ""
    client = MlflowClient()
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, policy.version)
    with mlflow.start_run(tags={RUN_TAG_REPORT_OF: f"{MODEL_POLICY}/{policy.version}"}):
        mlflow.log_metrics({"contamination.eval.rate": 0.0, "contamination.judge.rate": 0.25})
    decision = {"challenger_version": policy.version, "verdict": "promoted", "reason": "gates"}
    with mlflow.start_run(tags=audit.as_tags(decision)):
        pass

    # Nothing below may read or hash weights.
    for d in ("base", "sft", "policy"):
        (root / "models" / d / "model.safetensors").chmod(0)

    def no_hashing(*_, **__):
        raise AssertionError("lineage hashed a model directory")

    monkeypatch.setattr(lineage, "dvc_hash", no_hashing)

    chain = trace.trace(client, f"models:/{MODEL_POLICY}@{ALIAS_CHAMPION}", root)
    assert [v.ref for v in chain] == [
        f"{MODEL_POLICY}/{policy.version}",
        f"{MODEL_SFT}/{sft.version}",
        f"{MODEL_BASE}/{base.version}",
    ]
    top, middle, bottom = chain
    assert top.experiment == "exp-lr2" and top.aliases == [ALIAS_CHAMPION]
    assert top.contamination == {"eval": 0.0, "judge": 0.25}
    assert [d["verdict"] for d in top.decisions] == ["promoted"]
    assert middle.params == yaml.safe_load((root / "params.yaml").read_text())
    assert middle.own_params() == middle.params["sft"]
    assert bottom.sources == {"code": 1, "web": 2} and bottom.parent == ""
    assert (
        bottom.data_hash
        == yaml.safe_load((root / "data" / "packed.dvc").read_text())["outs"][0]["md5"]
    )

    hits = trace.versions_with_document(client, "web-2", root)
    assert [(h.ref, h.how) for h in hits] == [
        (f"{MODEL_BASE}/{base.version}", "trained on it"),
        (f"{MODEL_POLICY}/{policy.version}", f"via {MODEL_SFT}/{sft.version}"),
        (f"{MODEL_SFT}/{sft.version}", f"via {MODEL_BASE}/{base.version}"),
    ]
    assert trace.versions_with_document(client, "web-404", root) == []

    args = argparse.Namespace(
        uri=f"models:/{MODEL_SFT}/{sft.version}", doc=None, json=True, root=root
    )
    capsys.readouterr()
    cmd_lineage(args)
    printed = json.loads(capsys.readouterr().out)
    assert [v["ref"] for v in printed] == [
        f"{MODEL_SFT}/{sft.version}",
        f"{MODEL_BASE}/{base.version}",
    ]
    assert printed[0]["params"]["sft"] == middle.own_params()

    # A commit the repository does not have.
    client.set_model_version_tag(MODEL_BASE, base.version, TAG_GIT_COMMIT, "0" * 40)
    with pytest.raises(
        trace.LineageError, match=f"{MODEL_BASE}/{base.version} was built at commit 0000"
    ):
        trace.trace(client, f"models:/{MODEL_POLICY}/{policy.version}", root)
    # A corpus that is in neither the cache nor fetched.
    shutil.rmtree(root / ".dvc" / "cache")
    with pytest.raises(trace.LineageError, match="not in the DVC cache.*dvc fetch"):
        trace.versions_with_document(client, "web-2", root)


def test_a_version_without_recorded_params_is_named(tmp_path):
    client = MlflowClient()
    client.create_registered_model("hand")
    mv = client.create_model_version(
        "hand", source=str(tmp_path), tags={TAG_GIT_COMMIT: "unknown", TAG_STAGE: "sft"}
    )
    with pytest.raises(LineageNotRecorded, match="hand/1 has no recorded params"):
        recorded_params(client, mv)
    args = argparse.Namespace(uri="models:/hand/1", doc=None, json=True, root=ROOT)
    with pytest.raises(SystemExit, match="hand/1 has no recorded params"):
        cmd_lineage(args)


def test_bad_uris_and_untagged_versions_are_named(tmp_path):
    client = MlflowClient()
    for uri in ("runs:/abc/model", "models:/x", "models:/x/latest", "models:/@a"):
        with pytest.raises(trace.LineageError, match="not a model URI"):
            trace.trace(client, uri, ROOT)
    with pytest.raises(trace.LineageError, match="models:/nope/3 does not exist in the registry"):
        trace.trace(client, "models:/nope/3", ROOT)
    client.create_registered_model("by-hand")
    client.create_model_version("by-hand", source=str(tmp_path))
    for uri in ("models:/by-hand@champion", "models:/nope@champion"):
        with pytest.raises(trace.LineageError, match=f"{uri} does not exist in the registry"):
            trace.trace(client, uri, ROOT)
    with pytest.raises(trace.LineageError, match="by-hand/1 has no lineage tags"):
        trace.trace(client, "models:/by-hand/1", ROOT)
    with mlflow.start_run(experiment_id="0") as run:  # the store's default experiment
        mlflow.log_text("seed: 0\n", ARTIFACT_PARAMS)
    tags = {TAG_GIT_COMMIT: "unknown", TAG_STAGE: "sft", TAG_PARENT_MODEL: "gone/7"}
    client.create_model_version("by-hand", str(tmp_path), run.info.run_id, tags=tags)
    with pytest.raises(
        trace.LineageError, match="names parent gone/7, which is not in the registry"
    ):
        trace.trace(client, "models:/by-hand/2", ROOT)
