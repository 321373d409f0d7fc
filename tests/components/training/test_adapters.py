"""LoRA / QLoRA adapters as registered models: the adapter version (+ the exact base it needs)
and the merged version for serving give the same logits."""

import json
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient
from peft import PeftModel
from transformers import AutoModelForCausalLM

from components.config import LoraParams
from components.constants import (
    MODEL_SFT,
    MODEL_SFT_ADAPTER,
    REGISTRY_RECORD,
    TAG_ADAPTER,
    TAG_ADAPTER_BASE,
    TAG_MERGED_FROM,
)
from components.tracking.hf_pyfunc import HF_ARTIFACT
from components.tracking.stage_run import stage_run
from components.training import adapters, sft
from tests.components.training.tiny import save_base_model, sft_rows, tiny_params, write_jsonl
from tests.helpers import stage_view

LORA = {
    "enabled": True,
    "r": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ("q_proj", "v_proj", "down_proj"),
}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_base_model(tmp_path_factory.mktemp("base"))


def registered_dir(name: str, version: str, dst: Path) -> Path:
    """The HF directory inside a registered version, downloaded from the registry (its path is
    recorded in the MLmodel file, as components.serving.deploy reads it)."""
    root = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(dst)))
    spec = yaml.safe_load((root / "MLmodel").read_text())
    return root / spec["flavors"]["python_function"]["artifacts"][HF_ARTIFACT]["path"]


def run_sft(base_dir: Path, tmp_path: Path, lora: dict) -> sft.Paths:
    data = write_jsonl(tmp_path / "sft_train.jsonl", sft_rows(40))
    paths = sft.Paths(
        base=base_dir, data=data, out=tmp_path / "models/sft", metrics=tmp_path / "m.json"
    )
    params = tiny_params(sft={"lora": lora, "lr": 1e-2})
    with stage_run("sft", stage_view("sft", params)) as tracker:
        metrics = sft.run(tracker.params, paths, tracker).metrics
    assert metrics["lora"] == 1 and metrics["qlora"] == int(lora.get("qlora", False))
    assert 0 < metrics["trainable_fraction"] < 0.5
    return paths


# QLoRA runs by default (it covers the NF4 load too); plain LoRA differs only in the load.
@pytest.mark.parametrize(
    "qlora", [pytest.param(False, marks=pytest.mark.slow), True], ids=["lora", "qlora"]
)
def test_adapter_on_its_base_gives_the_merged_models_logits(base_dir, tmp_path, qlora):
    paths = run_sft(base_dir, tmp_path / "work", {**LORA, "qlora": qlora})

    merged_version = json.loads((paths.out / REGISTRY_RECORD).read_text())["version"]
    client = MlflowClient()
    merged_mv = client.get_model_version(MODEL_SFT, merged_version)
    adapter_ref = merged_mv.tags[TAG_MERGED_FROM]
    name, adapter_version = adapter_ref.split("/")
    assert name == MODEL_SFT_ADAPTER
    adapter_mv = client.get_model_version(MODEL_SFT_ADAPTER, adapter_version)
    # The adapter names the exact base version it loads onto; both carry how it was trained.
    assert adapter_mv.tags[TAG_ADAPTER_BASE] == "llmops-base/1"
    assert adapter_mv.tags["parent_model"] == merged_mv.tags["parent_model"] == "llmops-base/1"
    kind = "qlora" if qlora else "lora"
    assert adapter_mv.tags[TAG_ADAPTER] == merged_mv.tags[TAG_ADAPTER] == kind

    adapter_dir = registered_dir(MODEL_SFT_ADAPTER, adapter_version, tmp_path / "a")
    merged_dir = registered_dir(MODEL_SFT, merged_version, tmp_path / "m")
    files = {p.name for p in adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= files
    assert "model.safetensors" not in files  # the adapter alone, not a copy of the base

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    on_base = PeftModel.from_pretrained(base, adapter_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    plain = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    ids = torch.randint(
        0, plain.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        want = merged(input_ids=ids).logits
        got = on_base(input_ids=ids).logits
        before = plain(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(before, want, atol=1e-3)  # the adapter changed the model


def test_qlora_loads_the_frozen_base_in_nf4(base_dir):
    cfg = LoraParams(**LORA, qlora=True)
    model = adapters.load_trainable(base_dir, cfg)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == "Linear4bit"
    assert q_proj.weight.quant_type == "nf4" and q_proj.weight.dtype == torch.uint8


def test_qlora_without_lora_is_refused():
    with pytest.raises(ValueError, match="set lora.enabled: true"):
        LoraParams(**{**LORA, "enabled": False}, qlora=True)
