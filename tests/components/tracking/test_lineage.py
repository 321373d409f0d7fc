import hashlib
import json
import subprocess
import time

import pytest
import yaml

from components.constants import ENV_PROJECT_DIR, REGISTRY_RECORD, TAG_MODEL_HASH
from components.tracking import lineage


def _dvc_project(root):
    from dvc.repo import Repo

    Repo.init(str(root), no_scm=True).close()
    return root


def test_data_hash_is_what_dvc_recorded_in_the_projects_lock_whatever_the_cwd(
    tmp_path, monkeypatch
):
    root = _dvc_project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "dvc.lock").write_text("stages: {}\n")  # not the project's: never read
    monkeypatch.chdir(elsewhere)
    stage = {"cmd": "x", "outs": ["data/packed"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"pack": stage}}))
    lock = {
        "schema": "2.0",
        "stages": {
            "pack": {"cmd": "x", "outs": [{"path": "data/packed", "md5": "abc.dir", "size": 1}]}
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert lineage.data_hash("data/packed", root) == "abc.dir"
    assert lineage.data_hash(root / "data" / "packed", root) == "abc.dir"


def test_data_hash_of_a_git_tracked_file_is_its_md5(tmp_path):
    (tmp_path / "d.jsonl").write_text("hello\n")
    assert lineage.data_hash("d.jsonl", tmp_path) == hashlib.md5(b"hello\n").hexdigest()


def test_data_hash_of_a_directory_changes_with_content(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("1")
    h1 = lineage.data_hash("d", tmp_path)
    (tmp_path / "d" / "a.txt").write_text("2")
    assert h1.endswith(".dir") and lineage.data_hash("d", tmp_path) != h1


def test_missing_data_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lineage.data_hash("nope", tmp_path)


def test_git_commit_is_the_projects_whatever_the_cwd(tmp_path, monkeypatch):
    git = ["git", "-c", "user.email=t@llmops", "-c", "user.name=t"]
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "a.txt").write_text("1")
    subprocess.run([*git, "add", "a.txt"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "one"], cwd=root, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.chdir(tmp_path)  # not a git checkout
    assert lineage.git_commit(root) == head
    (root / "a.txt").write_text("2")
    assert lineage.git_commit(root) == f"{head}-dirty"


def test_parent_model_from_record(tmp_path):
    (tmp_path / REGISTRY_RECORD).write_text(json.dumps({"name": "llmops-sft", "version": "4"}))
    assert lineage.parent_model(tmp_path) == "llmops-sft/4"
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        lineage.parent_model(tmp_path / "missing")


def test_a_record_of_other_weights_than_dvc_recorded_is_not_trusted(tmp_path, monkeypatch):
    """DVC checked out other weights and kept the old (dvcignored) record: the version is
    looked up by the hash DVC recorded, and the weights themselves are never hashed."""
    from dvc.repo import Repo

    root = _dvc_project(tmp_path / "project")
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("seed: 0\n")
    (root / ".dvcignore").write_text(f"{REGISTRY_RECORD}\n")
    monkeypatch.setenv(ENV_PROJECT_DIR, str(root))
    monkeypatch.chdir(root)
    model = root / "models" / "sft"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"restored")
    with Repo(str(root)) as repo:
        repo.add(str(model))
    record = {"name": "llmops-sft", "version": "4", "tags": {TAG_MODEL_HASH: "other.dir"}}
    (model / REGISTRY_RECORD).write_text(json.dumps(record))
    monkeypatch.setattr(lineage, "dvc_hash", lambda *_, **__: pytest.fail("hashed the weights"))
    with pytest.raises(FileNotFoundError, match=r"\(DVC hash \w+\.dir\) is not a registered"):
        lineage.parent_model(model)
    (model / REGISTRY_RECORD).unlink()
    with pytest.raises(FileNotFoundError, match="is not a registered model version"):
        lineage.parent_model(model)


def test_an_unrecorded_directory_outside_dvc_is_named(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"w")
    with pytest.raises(FileNotFoundError, match="has no registered_model.json and DVC does not"):
        lineage.parent_model(tmp_path)


def test_a_git_that_does_not_answer_is_stopped_and_named(tmp_path, caplog):
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    git = ["git", "-c", "user.email=t@llmops", "-c", "user.name=t"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], cwd=root, check=True)
    # `git status` asks the fsmonitor hook which files changed; this one never answers in time.
    hook = tmp_path / "hang.sh"
    hook.write_text("#!/bin/sh\nsleep 30\n")
    hook.chmod(0o755)
    subprocess.run(["git", "config", "core.fsmonitor", str(hook)], cwd=root, check=True)
    start = time.monotonic()
    assert lineage.git_commit(root, timeout_s=1) == "unknown"
    assert time.monotonic() - start < 10
    assert "`git status --porcelain --untracked-files=no`" in caplog.text
    assert "did not finish in 1 s" in caplog.text
