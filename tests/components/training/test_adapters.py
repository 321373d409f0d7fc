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
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from components.config import LoraParams
from components.constants import (
    MODEL_POLICY,
    MODEL_POLICY_ADAPTER,
    MODEL_SFT,
    MODEL_SFT_ADAPTER,
    REGISTRY_RECORD,
    TAG_ADAPTER,
    TAG_ADAPTER_BASE,
    TAG_MERGED_FROM,
)
from components.tracking.hf_pyfunc import HF_ARTIFACT
from components.tracking.stage_run import stage_run
from components.training import adapters, align, sft
from tests.components.training.tiny import (
    pref_rows,
    save_base_model,
    sft_rows,
    tiny_params,
    write_jsonl,
)
from tests.helpers import stage_view

LORA = {
    "enabled": True,
    "r": 4,
    "alpha": 8,
    "dropout": 0.0,
    "target_modules": ("q_proj", "v_proj", "down_proj"),
}

# On-policy RL at test size: groups of 2 completions of 4 tokens, 8 prompts.
RL_SMALL = {
    "batch_size": 4,
    "max_examples": 8,
    "rl": {
        "rewards": {"correct": 1.0, "exact": 0.0, "reward_model": 1.0},
        "num_generations": 2,
        "max_completion_length": 4,
        "temperature": 1.0,
        "use_vllm": "off",
        "eval_max_prompts": 4,
    },
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


def assert_adapter_on_base_gives_merged_logits(
    model_dir: Path, merged_name: str, adapter_name: str, base_dir: Path, kind: str, tmp: Path
) -> None:
    """The registry holds an adapter version (with the exact base it needs) and the merged
    version at `model_dir`; the adapter loaded onto that base reproduces the merged logits."""
    client = MlflowClient()
    merged_version = json.loads((model_dir / REGISTRY_RECORD).read_text())["version"]
    merged_mv = client.get_model_version(merged_name, merged_version)
    name, adapter_version = merged_mv.tags[TAG_MERGED_FROM].split("/")
    assert name == adapter_name
    adapter_mv = client.get_model_version(adapter_name, adapter_version)
    base_ref = "{name}/{version}".format(**json.loads((base_dir / REGISTRY_RECORD).read_text()))
    assert adapter_mv.tags[TAG_ADAPTER_BASE] == base_ref
    assert adapter_mv.tags["parent_model"] == merged_mv.tags["parent_model"] == base_ref
    assert adapter_mv.tags[TAG_ADAPTER] == merged_mv.tags[TAG_ADAPTER] == kind

    adapter_dir = registered_dir(adapter_name, adapter_version, tmp / "adapter")
    merged_dir = registered_dir(merged_name, merged_version, tmp / "merged")
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
    assert not torch.allclose(before, want, atol=1e-4)  # the adapter changed the model


# QLoRA runs by default (it covers the NF4 load too); plain LoRA differs only in the load.
@pytest.mark.parametrize(
    "qlora", [pytest.param(False, marks=pytest.mark.slow), True], ids=["lora", "qlora"]
)
def test_sft_adapter_on_its_base_gives_the_merged_models_logits(base_dir, tmp_path, qlora):
    paths = run_sft(base_dir, tmp_path / "work", {**LORA, "qlora": qlora})
    assert_adapter_on_base_gives_merged_logits(
        paths.out, MODEL_SFT, MODEL_SFT_ADAPTER, base_dir, "qlora" if qlora else "lora", tmp_path
    )


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    out = save_base_model(tmp_path_factory.mktemp("sft"), seed=1)
    (out / REGISTRY_RECORD).write_text(json.dumps({"name": MODEL_SFT, "version": "3"}))
    return out


@pytest.fixture(scope="module")
def reward_dir(sft_dir, tmp_path_factory):
    """A reward model with a fresh head: a reward that varies within a group, so RL's
    advantages (and the adapter's update) are non-zero even for a random tiny policy."""
    out = tmp_path_factory.mktemp("reward")
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(
        sft_dir, num_labels=1, pad_token_id=tokenizer.pad_token_id
    )
    rm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / REGISTRY_RECORD).write_text(json.dumps({"name": "llmops-reward", "version": "5"}))
    return out


# Offline (DPO, KTO) and on-policy (GRPO, RLOO) methods train adapters through the same switch
# (slow: a stage run each, ~15-45 s on 2 shared cores; the sft test above runs by default).
@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "qlora"), [("dpo", True), ("kto", False), ("rloo", True), ("grpo", False)]
)
def test_align_adapter_on_the_sft_model_gives_the_merged_policy(
    sft_dir, reward_dir, tmp_path, monkeypatch, method, qlora
):
    monkeypatch.chdir(tmp_path)
    tasks = tmp_path / "tasks"
    paths = align.Paths(
        sft=sft_dir,
        reward=reward_dir,
        train=write_jsonl(tasks / "prefs_train.jsonl", pref_rows(24)),
        test=write_jsonl(tasks / "prefs_test.jsonl", pref_rows(8, offset=100)),
        out=tmp_path / "models/policy",
        metrics=tmp_path / "align.json",
    )
    section = {"method": method, "lr": 1e-2, "lora": {**LORA, "qlora": qlora}}
    if method in ("rloo", "grpo"):
        section |= RL_SMALL
    params = tiny_params(align=section)
    with stage_run("align", stage_view("align", params)) as tracker:
        m = align.run(tracker.params, paths, tracker).metrics
    assert m["lora"] == 1 and m["qlora"] == int(qlora)
    assert_adapter_on_base_gives_merged_logits(
        paths.out,
        MODEL_POLICY,
        MODEL_POLICY_ADAPTER,
        sft_dir,
        "qlora" if qlora else "lora",
        tmp_path,
    )


def test_qlora_loads_the_frozen_base_in_nf4(base_dir):
    cfg = LoraParams(**LORA, qlora=True)
    model = adapters.load_trainable(base_dir, cfg)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == "Linear4bit"
    assert q_proj.weight.quant_type == "nf4" and q_proj.weight.dtype == torch.uint8


def test_qlora_without_lora_is_refused():
    with pytest.raises(ValueError, match="set lora.enabled: true"):
        LoraParams(**{**LORA, "enabled": False}, qlora=True)
