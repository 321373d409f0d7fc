"""quantize stage: int8 weight-only quantization of the aligned policy with optimum-quanto.

Format of the output directory (loaded by `components.modeling.io.load_for_inference`):
- `model.safetensors`: every `nn.Linear` of the decoder as `<module>.weight._data` (int8,
  shape (out, in)) and `<module>.weight._scale` (float32, shape (out, 1): one symmetric scale
  per output row); embeddings, norms and `lm_head` stay float32.
- `quanto_qmap.json`: optimum-quanto's quantization map (module -> weight/activation qtype).
- `llmops_quantization.json`: our record (method, library version, excluded modules); its
  presence tells the loader to rebuild the quantized modules.
- `config.json`, `generation_config.json` and the tokenizer, as in every model directory.
Activations stay float32: at inference each int8 weight is rescaled on the fly.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch
from optimum.quanto import freeze, qint8, quantization_map, quantize
from safetensors import safe_open
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.atomic import atomic_dir
from components.config import QuantizeParams, StageParams
from components.constants import MODEL_POLICY_INT8
from components.modeling.io import (
    QUANTIZATION_RECORD,
    QUANTO_QMAP,
    load_for_inference,
    load_quantized_causal_lm,
)
from components.stage import StageResult
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

# params.quantize.method -> optimum-quanto qtypes (weights, activations).
METHODS = {"int8_weight_only": (qint8, None)}
# The output projection stays float32: it is tied to the input embeddings (which quanto does not
# quantize), so quantizing it would un-tie and store the vocabulary matrix twice; it is also the
# layer whose error reaches the logits undamped.
EXCLUDE = ("lm_head",)
# Fixed probe for the logit error: seeded random token ids, shape (sequences, tokens).
PROBE_SHAPE = (4, 32)

_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


class Reads(StageParams):
    seed: int
    quantize: QuantizeParams


@dataclass(frozen=True)
class Paths:
    policy: Path  # aligned policy (HF directory)
    out: Path  # quantized model directory
    metrics: Path


def quantize_model(model: PreTrainedModel, method: str) -> dict[str, dict[str, str]]:
    """Quantize `model` in place and freeze it (weights become int8); returns the qmap."""
    weights, activations = METHODS[method]
    quantize(model, weights=weights, activations=activations, exclude=list(EXCLUDE))
    freeze(model)  # replaces float weights by int8 data + per-row scales
    qmap = quantization_map(model)
    if not qmap:
        raise ValueError(f"{type(model).__name__} has no layer optimum-quanto can quantize")
    return qmap


def save_quantized(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, qmap: dict, method: str, out: Path
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # safetensors; QTensors are flattened to `_data` / `_scale`
    tokenizer.save_pretrained(out)
    (out / QUANTO_QMAP).write_text(json.dumps(qmap, indent=2) + "\n")
    record = {
        "method": method,
        "library": "optimum-quanto",
        "library_version": version("optimum-quanto"),
        "excluded": list(EXCLUDE),
        "quantized_modules": len(qmap),
    }
    (out / QUANTIZATION_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def tensor_bytes(model_dir: Path) -> dict[str, int]:
    """Bytes of every tensor in the directory's safetensors files (read from headers only)."""
    sizes: dict[str, int] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not iterable
                sl = st.get_slice(key)
                n = 1
                for d in sl.get_shape():
                    n *= d
                sizes[key] = n * _DTYPE_BYTES[sl.get_dtype()]
    return sizes


def size_report(original: Path, quantized: Path, qmap: dict) -> dict[str, float | int]:
    """Whole weight files and the quantized linear weights alone (int8 data + scales vs fp)."""
    orig, quant = tensor_bytes(original), tensor_bytes(quantized)
    orig_files = sum(f.stat().st_size for f in original.glob("*.safetensors"))
    quant_files = sum(f.stat().st_size for f in quantized.glob("*.safetensors"))
    lin_orig = sum(orig[f"{m}.weight"] for m in qmap)
    lin_quant = sum(v for k, v in quant.items() for m in qmap if k.startswith(f"{m}.weight."))
    return {
        "original_bytes": orig_files,
        "quantized_bytes": quant_files,
        "size_ratio": round(quant_files / orig_files, 4),
        "linear_size_ratio": round(lin_quant / lin_orig, 4),
    }


@torch.no_grad()
def logit_error(
    reference: PreTrainedModel, candidate: PreTrainedModel, vocab_size: int, seed: int
) -> dict[str, float]:
    """Max |logit difference| and top-1 agreement on a fixed probe of random token ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, PROBE_SHAPE, generator=g)  # (B, T)
    ref = reference(input_ids=ids).logits  # (B, T, V)
    cand = candidate(input_ids=ids).logits  # (B, T, V)
    return {
        "logit_max_abs_diff": float((ref - cand).abs().max()),
        "logit_ref_max_abs": float(ref.abs().max()),
        "top1_agreement": float((ref.argmax(-1) == cand.argmax(-1)).float().mean()),
    }


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.quantize
    reference, tokenizer = load_for_inference(paths.policy)
    model = copy.deepcopy(reference)  # quantized in place; the fp32 reference stays intact
    qmap = quantize_model(model, cfg.method)
    with atomic_dir(paths.out) as tmp:
        save_quantized(model, tokenizer, qmap, cfg.method, tmp)
        # Measure what is on disk: the reloaded model is what downstream stages will use.
        reloaded = load_quantized_causal_lm(tmp).eval()
        error = logit_error(reference, reloaded, len(tokenizer), params.seed)
        sizes = size_report(paths.policy, tmp, qmap)
    log.info(
        "quantized %d modules: size ratio %.3f (linear %.3f), max |dlogit| %.4g",
        len(qmap),
        sizes["size_ratio"],
        sizes["linear_size_ratio"],
        error["logit_max_abs_diff"],
    )
    register_model_dir(
        tracker, paths.out, MODEL_POLICY_INT8, data_path=paths.policy, parent_dir=paths.policy
    )
    return StageResult(metrics={"quantized_modules": len(qmap), **sizes, **error})
