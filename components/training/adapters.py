"""LoRA / QLoRA adapters for the post-training stages (sft, align), and their two registry forms.

A stage with `<section>.lora.enabled` trains low-rank adapters (PEFT) on a frozen base, which is
loaded in fp32, or with `lora.qlora` in 4-bit NF4 (bitsandbytes; it runs on CPU too) so the
frozen weights take about a quarter of the memory (measured by bench/adapter_memory.py). The
loading (per device: fp32 compute on CPU, bf16 on GPUs, bf16 quant storage under ZeRO-3) is in
`lora_load`, free of MLflow.

After training the stage keeps both forms:
- the **adapter** (adapter_config.json + adapter_model.safetensors + tokenizer), registered as
  `<model>-adapter` with the `adapter_base` tag naming the exact base version it loads onto;
- the **merged** model (adapter folded into the fp32 base: a plain transformers directory that
  vLLM serves), registered under the stage's usual name with the `merged_from` tag naming the
  adapter version. It is rebuilt from the saved adapter files and the fp32 base, so "adapter on
  its base" and "merged" are the same function by construction. A QLoRA adapter was trained
  against the NF4-rounded base; it is merged into the fp32 base (the QLoRA paper's practice).
"""

from __future__ import annotations

from pathlib import Path

import torch
from mlflow import MlflowClient
from peft import PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
)

from components.config import LoraParams
from components.constants import TAG_ADAPTER, TAG_ADAPTER_BASE, TAG_MERGED_FROM
from components.tracking import lineage
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import Tracker
from components.training.lora_load import load_trainable, lora_config, nf4_config
from components.training.trainer_common import ADAPTER_SUBDIR

# The loading half lives in lora_load (no MLflow: the GPU bench uses it), re-exported here.
__all__ = [
    "kind",
    "load_trainable",
    "lora_config",
    "merge_onto",
    "nf4_config",
    "register_adapter_and_merged",
    "write_merged",
]


def kind(cfg: LoraParams) -> str:
    return "qlora" if cfg.qlora else "lora"


def write_merged(base_dir: Path, model_dir: Path) -> None:
    """Write into `model_dir` its adapter (`model_dir/ADAPTER_SUBDIR`) merged onto the fp32 base
    at `base_dir`, with the adapter's tokenizer: a plain transformers directory vLLM serves."""
    adapter_dir = model_dir / ADAPTER_SUBDIR
    merge_onto(base_dir, adapter_dir).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(adapter_dir).save_pretrained(model_dir)


def merge_onto(base_dir: Path, adapter_dir: Path) -> PreTrainedModel:
    """The saved adapter loaded onto the fp32 base and folded into its weights."""
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


def register_adapter_and_merged(
    tracker: Tracker,
    *,
    adapter_dir: Path,
    adapter_name: str,
    merged_dir: Path,
    merged_name: str,
    base_dir: Path,
    data_path: Path,
    cfg: LoraParams,
) -> tuple[str, str]:
    """Register the adapter, then the merged model; ('name/version' of each).

    The adapter's parent is its base (`parent_model` and `adapter_base`: the exact version it
    must be loaded onto); the merged model's parent is the same base, and `merged_from` names
    the adapter version it was built from."""
    client = MlflowClient()
    base = lineage.parent_model(base_dir)
    adapter = register_model_dir(
        tracker, adapter_dir, adapter_name, data_path=data_path, parent_dir=base_dir
    )
    adapter_ref = f"{adapter_name}/{adapter.version}"
    client.set_model_version_tag(adapter_name, adapter.version, TAG_ADAPTER_BASE, base)
    client.set_model_version_tag(adapter_name, adapter.version, TAG_ADAPTER, kind(cfg))
    # Registered last: the run's `registered_model` tag names the model downstream stages use.
    merged = register_model_dir(
        tracker, merged_dir, merged_name, data_path=data_path, parent_dir=base_dir
    )
    client.set_model_version_tag(merged_name, merged.version, TAG_MERGED_FROM, adapter_ref)
    client.set_model_version_tag(merged_name, merged.version, TAG_ADAPTER, kind(cfg))
    tracker.set_tags({"registered_adapter": adapter_ref})
    return adapter_ref, f"{merged_name}/{merged.version}"
