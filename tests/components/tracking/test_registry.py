"""Registration is idempotent: the same weights with the same lineage reuse their version."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from components.constants import MODEL_BASE, MODEL_SFT, REGISTRY_RECORD, TAG_MODEL_HASH
from components.tracking import lineage, registry
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import stage_run
from tests.helpers import project_params, stage_view


def _model_dir(path, weights: bytes):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}\n')
    (path / "model.safetensors").write_bytes(weights)
    return path


def _register(name, model_dir, data, parent=None):
    stage = "pretrain" if parent is None else "sft"
    with stage_run(stage, stage_view(stage, project_params())) as tracker:
        return register_model_dir(tracker, model_dir, name, data_path=data, parent_dir=parent)


@pytest.mark.slow  # three registrations, ~25 s
def test_identical_weights_and_lineage_reuse_the_version(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("tokens\n")
    base = _model_dir(tmp_path / "base", b"weights-1")
    first = _register(MODEL_BASE, base, data)
    record = (base / REGISTRY_RECORD).read_text()
    again = _register(MODEL_BASE, base, data)
    assert again.version == first.version
    assert (base / REGISTRY_RECORD).read_text() == record
    assert len(MlflowClient().search_model_versions(f"name = '{MODEL_BASE}'")) == 1

    (base / "model.safetensors").write_bytes(b"weights-2")
    changed = _register(MODEL_BASE, base, data)
    assert changed.version != first.version
    assert changed.tags[TAG_MODEL_HASH] == lineage.model_hash(base)


def test_parent_found_by_content_when_dvc_restored_the_dir_without_its_record(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("tokens\n")
    base = _model_dir(tmp_path / "base", b"weights-1")
    mv = _register(MODEL_BASE, base, data)
    (base / REGISTRY_RECORD).unlink()  # what `dvc checkout` leaves (the record is dvcignored)
    assert lineage.parent_model(base) == f"{MODEL_BASE}/{mv.version}"
    sft = _model_dir(tmp_path / "sft", b"sft-weights")
    child = _register(MODEL_SFT, sft, data, parent=base)
    assert child.tags["parent_model"] == f"{MODEL_BASE}/{mv.version}"
    assert json.loads((sft / REGISTRY_RECORD).read_text())["version"] == child.version

    # A record that describes other weights than the directory holds is not trusted.
    (sft / "model.safetensors").write_bytes(b"unregistered")
    with pytest.raises(FileNotFoundError, match="not a registered model version"):
        lineage.parent_model(sft)


def test_model_requirements_pin_what_is_installed_and_leave_the_rest_unpinned():
    from importlib.metadata import version

    reqs = registry._requirements(("torch", "llmops-no-such-package"))
    assert reqs == [f"torch=={version('torch')}", "llmops-no-such-package"]
    with pytest.raises(ValueError):  # a bad name is a bug to see, not a package to skip
        registry._requirements(("",))
