"""`llmops reproduce`: a tiny registered model rebuilt from its recorded commit and params."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from components.config import ReproduceParams
from components.constants import (
    ARTIFACT_PARAMS,
    ENV_PROJECT_DIR,
    TAG_GIT_COMMIT,
    TAG_MODEL_HASH,
    TAG_REPRODUCTION_OF,
    TAG_STAGE,
)
from flows import workspace
from flows.dvc_stage import dvc_executable
from flows.reproduce import ReproduceError, compare, reproduce
from tests.helpers import ROOT

# A deterministic "training" stage that registers its output the way pipeline stages do, and
# records its params file as the registration's lineage contract asks.
TRAIN = """\
import json, random, time
from pathlib import Path

import mlflow
import yaml

from components.config import StageParams
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import stage_run


class Reads(StageParams):
    seed: int


params = Reads(seed=yaml.safe_load(Path("params.yaml").read_text())["seed"])
rng = random.Random(params.seed + len(Path("data.txt").read_text()))
weights = [rng.random() for _ in range(8)]
Path("model").mkdir(exist_ok=True)
Path("model/weights.json").write_text(json.dumps(weights))
with stage_run("train", params) as tracker:
    tracker.log_metrics({"loss": sum(weights), "train_s": time.time()})
    register_model_dir(tracker, "model", "tiny", data_path="data.txt")
    mlflow.log_artifact("params.yaml", artifact_path="lineage")
"""


def _tiny_project(root):
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "data.txt").write_text("tokens\n")
    (root / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    stage = {"cmd": "python train.py", "deps": ["train.py", "data.txt"], "params": ["seed"]}
    (root / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "vars": [{"p": {"reports": "reports"}}],
                "stages": {"train": {**stage, "outs": ["model"]}},
            }
        )
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([dvc_executable(), "init", "-q"], cwd=root, check=True)
    subprocess.run([dvc_executable(), "add", "-q", "data.txt"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)
    return root


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """The tiny project with version 1 of `tiny` registered by running its stage."""
    root = _tiny_project(tmp_path / "p")
    monkeypatch.setenv(ENV_PROJECT_DIR, str(root))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run([dvc_executable(), "repro", "-q"], cwd=root, check=True)
    return root


@pytest.mark.slow
def test_a_registered_model_rebuilds_bit_identically_and_a_changed_tag_fails(registered):
    root = registered
    params_before = (root / "params.yaml").read_bytes()
    client = MlflowClient()
    client.set_registered_model_alias("tiny", "champion", "1")

    result = reproduce(root, "models:/tiny@champion", ReproduceParams(), log=lambda _: None)

    assert result.ok, result.markdown()
    rows = {row.name: row for row in result.rows}
    assert rows["model_hash"].rebuilt == client.get_model_version("tiny", "1").tags[TAG_MODEL_HASH]
    assert rows["loss"].rebuilt == rows["loss"].recorded
    assert "train_s" not in rows  # wall time is ignored (reproduce.ignore_metrics)
    # Nothing of the user's changed: params, registry versions, aliases; no workspace left.
    assert (root / "params.yaml").read_bytes() == params_before
    # str(): this client returns versions as ints from the SQLite registry.
    assert [str(mv.version) for mv in client.search_model_versions("name = 'tiny'")] == ["1"]
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"
    assert not any((root / workspace.WORKSPACES_DIR).iterdir())

    asked = reproduce(root, "models:/tiny/1", ReproduceParams(), register=True, log=print)
    assert asked.registered == "tiny/2"
    copy = client.get_model_version("tiny", "2")
    assert copy.tags[TAG_REPRODUCTION_OF] == "tiny/1"
    assert copy.tags[TAG_MODEL_HASH] == rows["model_hash"].recorded
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"

    client.set_model_version_tag("tiny", "1", TAG_MODEL_HASH, "0" * 32 + ".dir")
    cli = [sys.executable, "-m", "flows.cli", "reproduce", "models:/tiny/1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_HOME": str(root / ".prefect")}
    proc = subprocess.run(cli, cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "| model_hash | 00000000" in proc.stdout
    reports = sorted((root / "reports" / "reproduce").glob("tiny-v1-*.md"))
    assert "MISMATCH" in reports[-1].read_text()


@pytest.mark.slow
def test_an_input_missing_from_cache_and_remote_is_named_and_nothing_is_left(registered):
    import shutil

    shutil.rmtree(registered / ".dvc" / "cache")
    (registered / "data.txt").unlink()
    with pytest.raises(ReproduceError, match="data.txt"):
        reproduce(registered, "models:/tiny/1", ReproduceParams(), log=lambda _: None)
    assert not any((registered / workspace.WORKSPACES_DIR).iterdir())


def _by_hand(tags: dict[str, str]) -> str:
    """A version registered without a pipeline stage, with the given tags; its version."""
    import mlflow

    mlflow.set_experiment("by-hand")  # this test's store, not an experiment id cached before
    with mlflow.start_run() as run:
        mlflow.log_text("seed: 1\n", ARTIFACT_PARAMS)
    client = MlflowClient()
    if not client.search_registered_models("name = 'hand'"):
        client.create_registered_model("hand")
    source = f"runs:/{run.info.run_id}/lineage"
    return client.create_model_version("hand", source, run.info.run_id, tags).version


def test_bad_input_gives_one_clear_error_and_builds_nothing(tmp_path, monkeypatch):
    from tests.flows.dvc_project import git_project

    root = git_project(tmp_path / "p")
    monkeypatch.setenv(ENV_PROJECT_DIR, str(root))
    cfg = ReproduceParams()
    with pytest.raises(ReproduceError, match="models:/nope/3 does not exist"):
        reproduce(root, "models:/nope/3", cfg)
    with pytest.raises(ReproduceError, match="not a model version URI"):
        reproduce(root, "runs:/abc/model", cfg)
    version = _by_hand({})
    with pytest.raises(ReproduceError, match="no lineage tags .*registered by hand"):
        reproduce(root, f"models:/hand/{version}", cfg)
    version = _by_hand({TAG_GIT_COMMIT: "f" * 40, TAG_STAGE: "make", TAG_MODEL_HASH: "x"})
    with pytest.raises(workspace.WorkspaceError, match=f"commit {'f' * 40} is not in the git"):
        reproduce(root, f"models:/hand/{version}", cfg)
    assert not (root / workspace.WORKSPACES_DIR).exists() or not any(
        (root / workspace.WORKSPACES_DIR).iterdir()
    )


def test_metrics_compare_within_the_tolerance_and_machine_metrics_are_ignored():
    cfg = ReproduceParams(rtol=1e-3)
    rows = compare("h", "h", {"loss": 1.0, "acc": 0.5, "step_s": 3.0}, {"loss": 1.0005}, cfg)
    assert [(r.name, r.ok) for r in rows] == [("model_hash", True), ("acc", False), ("loss", True)]
    exact = compare("h", "g", {"loss": 1.0}, {"loss": 1.0005}, ReproduceParams())
    assert [r.ok for r in exact] == [False, False]
