import hashlib
import json

import pytest
import yaml

from components.constants import REGISTRY_RECORD
from components.tracking import lineage


def test_data_hash_reads_dvc_lock_for_stage_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lock = {
        "schema": "2.0",
        "stages": {
            "pack": {"cmd": "x", "outs": [{"path": "data/packed", "md5": "abc.dir", "size": 1}]}
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert lineage.data_hash("data/packed") == "abc.dir"


def test_data_hash_of_a_git_tracked_file_is_its_md5(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text("hello\n")
    assert lineage.data_hash("d.jsonl") == hashlib.md5(b"hello\n").hexdigest()


def test_data_hash_of_a_directory_changes_with_content(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("1")
    h1 = lineage.data_hash("d")
    (tmp_path / "d" / "a.txt").write_text("2")
    assert h1.endswith(".dir") and lineage.data_hash("d") != h1


def test_missing_data_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lineage.data_hash("nope")


def test_parent_model_from_record(tmp_path):
    (tmp_path / REGISTRY_RECORD).write_text(json.dumps({"name": "llmops-sft", "version": "4"}))
    assert lineage.parent_model(tmp_path) == "llmops-sft/4"
    with pytest.raises(FileNotFoundError, match="re-run that stage"):
        lineage.parent_model(tmp_path / "missing")
