"""Registration is idempotent: the same weights with the same lineage reuse their version."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from components.constants import MODEL_BASE, REGISTRY_RECORD, TAG_MODEL_HASH
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


def test_model_requirements_pin_what_is_installed_and_leave_the_rest_unpinned():
    from importlib.metadata import version

    reqs = registry._requirements(("torch", "llmops-no-such-package"))
    assert reqs == [f"torch=={version('torch')}", "llmops-no-such-package"]
    with pytest.raises(ValueError):  # a bad name is a bug to see, not a package to skip
        registry._requirements(("",))
