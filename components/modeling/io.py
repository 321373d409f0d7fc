"""Load a model directory written by any stage (causal LM, reward model, quantized variant)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

# Written by the quantize stage next to the weights: says how the directory was quantized and
# marks it as needing the quantized loader (plain `from_pretrained` would ignore the int8 tensors
# and leave the quantized layers randomly initialised).
QUANTIZATION_RECORD = "llmops_quantization.json"
# optimum-quanto's name for its quantization map (module name -> weight/activation qtype).
QUANTO_QMAP = "quanto_qmap.json"


def architecture(model_dir: str | Path) -> str:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    return (cfg.get("architectures") or ["?"])[0]


def is_quantized(model_dir: str | Path) -> bool:
    return (Path(model_dir) / QUANTIZATION_RECORD).exists()


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


def _read_safetensors(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = check_weights(model_dir)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return state


def load_quantized_causal_lm(model_dir: str | Path) -> PreTrainedModel:
    """Rebuild an optimum-quanto model: empty skeleton -> quantized modules -> int8 weights.

    Mirrors `optimum.quanto.QuantizedModelForCausalLM.from_pretrained` but returns the plain
    transformers model and refuses checkpoints with missing tensors (quanto loads non-strictly).
    """
    from accelerate import init_empty_weights
    from optimum.quanto import requantize

    model_dir = Path(model_dir)
    qmap_path = model_dir / QUANTO_QMAP
    if not qmap_path.exists():
        raise FileNotFoundError(f"{qmap_path} is missing: re-run the quantize stage")
    qmap = json.loads(qmap_path.read_text())
    config = AutoConfig.from_pretrained(model_dir)
    # Parameters on the meta device (no random init); buffers such as RoPE's inv_freq stay real.
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = _read_safetensors(model_dir)
    requantize(model, state_dict=state, quantization_map=qmap, device=torch.device("cpu"))
    if config.tie_word_embeddings:
        model.tie_weights()  # lm_head is not saved when tied to the input embeddings
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(set(model.state_dict()) - set(state) - tied)
    if missing:
        raise ValueError(
            f"{model_dir}: quantized checkpoint lacks {len(missing)} tensors, e.g. "
            f"{missing[:3]}; re-run the quantize stage"
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
