"""Load a model directory written by any stage (causal LM, reward model, quantized variant)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)


def architecture(model_dir: str | Path) -> str:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return (cfg.get("architectures") or ["?"])[0]


def is_quantized(model_dir: str | Path) -> bool:
    """A checkpoint of the quantize stage: config.json carries its compressed-tensors config."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return "quantization_config" in cfg


class CorruptArtifact(ValueError):
    """A weights file that cannot be read (truncated, overwritten); the message says how to get
    the good copy back."""


def check_weights(model_dir: str | Path) -> list[Path]:
    """Open every safetensors file's header (cheap: no tensor is read), so a truncated or
    corrupt file is named with the commands that restore it, instead of safetensors' bare
    "incomplete metadata". Returns the files."""
    from safetensors import SafetensorError, safe_open

    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    for f in files:
        try:
            with safe_open(str(f), "pt"):
                pass
        except SafetensorError as err:
            raise CorruptArtifact(
                f"{f} is truncated or corrupt ({err}). Restore the directory from DVC's cache "
                f"with `dvc checkout --force {model_dir}` (or from the remote: `dvc pull "
                f"--force {model_dir}`); if neither holds it, re-run the stage that writes it: "
                "`dvc repro --force STAGE` (`dvc stage list` names it)"
            ) from err
    return files


def count_parameters(model_dir: str | Path) -> int:
    """Elements of every tensor in the directory's safetensors files (headers only)."""
    from math import prod

    from safetensors import safe_open

    total = 0
    for f in check_weights(model_dir):
        with safe_open(str(f), "pt") as st:
            total += sum(prod(st.get_slice(k).get_shape()) for k in st.keys())  # noqa: SIM118 - safe_open is not a dict
    return total


def load_quantized_causal_lm(model_dir: str | Path) -> PreTrainedModel:
    """A compressed-tensors checkpoint (quantize stage), kept compressed: transformers builds
    the quantized linears from config.json's `quantization_config` (needs the
    `compressed-tensors` package) and they dequantize on the fly. Missing tensors are refused:
    transformers would leave those layers randomly initialised with only a warning."""
    model, info = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, output_loading_info=True
    )
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ValueError(
            f"{model_dir}: quantized checkpoint lacks {len(missing)} tensors, e.g. "
            f"{missing[:3]}; re-run the quantize stage (`dvc repro --force quantize`)"
        )
    return model


def load_for_inference(model_dir: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model in eval mode on CPU plus its tokenizer, whatever stage produced the directory."""
    model_dir = Path(model_dir)
    check_weights(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if is_quantized(model_dir):
        model = load_quantized_causal_lm(model_dir)
    elif architecture(model_dir).endswith("ForSequenceClassification"):
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval(), tokenizer
