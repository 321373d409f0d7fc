"""quantize stage: compressed-tensors checkpoints of the aligned policy that vLLM serves.

One directory per variant of `quantize.variants` (params.yaml), each a DVC output and a
registered model (`llmops-policy-int8`, `llmops-policy-int4`) whose parent is the policy:
- int8, W8A8: int8 weights (one scale per output channel) and int8 activations (one dynamic
  scale per token); vLLM serves it on CPU in float32.
- int4, W4A16: int4 weights packed eight to an int32, one scale per `group_size` input columns;
  vLLM serves it on CPU in bfloat16.
Every `nn.Linear` is quantized except `lm_head` (tied to the embeddings, and the layer whose error
reaches the logits undamped). llm-compressor's `oneshot` does the work in its own environment
(components/training/quantize_worker.py); GPTQ variants calibrate on rows of the packed
training array.

Before any quantization the stage checks every variant's shape rule (`shape_rules`) on the
policy's linear layers and refuses with the rule and the offending layers: a shape vLLM's kernel
cannot take fails here, not at serve time. Afterwards it loads each checkpoint back (transformers
with compressed-tensors, as the evaluate stage does) and compares it with the fp policy on
held-out validation rows: perplexity change and greedy next-token agreement, plus the size of
its tensors relative to fp32.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from components.atomic import atomic_dir
from components.config import QUANT_GROUP_SIZES, QuantizeParams, QuantizeVariant, StageParams
from components.constants import ENV_QUANTIZE_PYTHON, MODEL_POLICY_INT4, MODEL_POLICY_INT8
from components.modeling.io import load_for_inference
from components.stage import StageResult
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import Tracker
from components.training.quantize_worker import IGNORE, job

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("quantize_worker.py")
REGISTERED = {"int8": MODEL_POLICY_INT8, "int4": MODEL_POLICY_INT4}
# vLLM's CPU kernel for int4 weights (W4A16) takes layers whose dims are multiples of this.
KERNEL_MULTIPLE = 32
COMPARE_BATCH = 8  # validation rows per forward pass
LOG_TAIL_LINES = 40

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}
_DTYPE_BYTES |= {"U8": 1, "BOOL": 1}


class Reads(StageParams):
    seed: int
    quantize: QuantizeParams


@dataclass(frozen=True)
class Paths:
    policy: Path  # aligned policy (HF directory)
    packed: Path  # train.npy (calibration rows), val.npy (comparison rows)
    int8: Path  # compressed-tensors directory per variant
    int4: Path
    metrics: Path


class ShapeRefused(ValueError):
    """A variant's kernel cannot take some layer's shape; the message names rule and layers."""


# --- shapes: checked on the config alone, before any quantization ---------------------------


def linear_shapes(config: PretrainedConfig) -> dict[str, tuple[int, int]]:
    """(out_features, in_features) of every nn.Linear the variants quantize (lm_head excluded),
    from the config alone: the model is built on the meta device, no weight is read."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return {
        name: (m.out_features, m.in_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.split(".")[-1] not in IGNORE
    }


def shape_rules(variant: QuantizeVariant) -> list[tuple[str, int, str]]:
    """(rule, multiple, dim) triples: each quantized layer's `dim` must be a multiple."""
    if variant.scheme != "W4A16":
        return []  # per-channel int8: any shape
    assert variant.group_size is not None  # the schema requires it for W4A16
    return [
        (f"in_features % group_size ({variant.group_size}) == 0", variant.group_size, "in"),
        (f"in_features % {KERNEL_MULTIPLE} == 0 (vLLM's CPU int4 kernel)", KERNEL_MULTIPLE, "in"),
        (f"out_features % {KERNEL_MULTIPLE} == 0 (vLLM's CPU int4 kernel)", KERNEL_MULTIPLE, "out"),
    ]


def shape_violations(
    shapes: dict[str, tuple[int, int]], variant: QuantizeVariant
) -> dict[str, list[str]]:
    """Rule -> the layers that break it (as `name (out x in)`)."""
    broken: dict[str, list[str]] = {}
    for rule, multiple, dim in shape_rules(variant):
        for name, (out_f, in_f) in shapes.items():
            if (in_f if dim == "in" else out_f) % multiple:
                broken.setdefault(rule, []).append(f"{name} ({out_f} x {in_f})")
    return broken


def resolve_group_sizes(
    shapes: dict[str, tuple[int, int]], variants: dict[str, QuantizeVariant]
) -> dict[str, QuantizeVariant]:
    """Variants with `group_size: auto` replaced by the largest size that divides every
    quantized layer's in_features; with none, the smallest, which `check_shapes` refuses
    naming the layers."""
    resolved = {}
    for name, variant in variants.items():
        if variant.group_size == "auto":
            fits = [g for g in QUANT_GROUP_SIZES if all(i % g == 0 for _, i in shapes.values())]
            size = max(fits) if fits else min(QUANT_GROUP_SIZES)
            variant = variant.model_copy(update={"group_size": size})
            log.info("quantize.variants.%s: group_size auto -> %d", name, size)
        resolved[name] = variant
    return resolved


def check_shapes(
    config: PretrainedConfig, variants: dict[str, QuantizeVariant], source: str | Path
) -> dict[str, QuantizeVariant]:
    """Refuse before quantizing if any variant's kernel cannot take a layer of the model;
    the variants with their group sizes resolved (`auto`)."""
    shapes = linear_shapes(config)
    variants = resolve_group_sizes(shapes, variants)
    problems = []
    for name, variant in variants.items():
        for rule, layers in shape_violations(shapes, variant).items():
            more = f" and {len(layers) - 3} more" if len(layers) > 3 else ""
            problems.append(
                f"quantize.variants.{name} ({variant.scheme}) needs {rule}; "
                f"{', '.join(layers[:3])}{more} do not"
            )
    if problems:
        raise ShapeRefused(
            "; ".join(problems) + f". {source} cannot be quantized so that vLLM serves it: "
            "choose model dims (params.yaml `model:` hidden_size, intermediate_size, heads) that "
            "are multiples of the group size, or a smaller quantize.variants.<name>.group_size "
            "that divides them"
        )
    return variants


# --- the worker in the llm-compressor environment --------------------------------------------


def quantize_python() -> Path:
    """$LLMOPS_QUANTIZE_PYTHON, else the .venv-quantize that `make setup` builds: in the project
    whose code runs, or beside the running environment (a copied project run by the project's
    own .venv, as the end-to-end test does). Refuses, naming the fix, if there is none."""
    env = os.environ.get(ENV_QUANTIZE_PYTHON)
    tried = (
        [Path(env)]
        if env
        else [
            PROJECT_ROOT / ".venv-quantize/bin/python",
            Path(sys.prefix).parent / ".venv-quantize/bin/python",
        ]
    )
    for python in tried:
        if python.exists():
            return python
    raise FileNotFoundError(
        f"no llm-compressor environment at {' or '.join(map(str, tried))}: the quantize stage "
        f"runs llm-compressor in its own environment. Build it with `make setup` (target "
        f".venv-quantize) or point {ENV_QUANTIZE_PYTHON} at a Python that has llmcompressor"
    )


def calibration_rows(packed: Path, n: int, seed: int) -> np.ndarray:
    """`n` rows of the packed training array, drawn without replacement with the seed."""
    train = np.load(packed / "train.npy", mmap_mode="r")  # (n_sequences, seq_len)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(train.shape[0], size=min(n, train.shape[0]), replace=False))
    return np.asarray(train[pick])


def run_worker(spec: dict, workdir: Path) -> float:
    """Run the worker on the job `spec`; seconds. Its output goes to a log, whose tail any
    error carries."""
    job_path, log_path = workdir / "job.json", workdir / "worker.log"
    job_path.write_text(json.dumps(spec, indent=2))
    start = time.perf_counter()
    with log_path.open("w") as out:
        proc = subprocess.run(
            [str(quantize_python()), str(WORKER), str(job_path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
            check=False,
        )
    if proc.returncode:
        tail = "\n".join(log_path.read_text().splitlines()[-LOG_TAIL_LINES:])
        raise RuntimeError(
            f"llm-compressor worker failed (exit {proc.returncode}); last lines:\n{tail}"
        )
    return time.perf_counter() - start


# --- measurement: what is on disk, loaded the way the evaluate stage loads it -----------------


def tensor_bytes(model_dir: Path) -> int:
    """Bytes of every tensor in the directory's safetensors files (read from headers only)."""
    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not iterable
                sl = st.get_slice(key)
                total += math.prod(sl.get_shape()) * _DTYPE_BYTES[sl.get_dtype()]
    return total


@torch.no_grad()
def next_token_scores(model: PreTrainedModel, rows: np.ndarray) -> tuple[float, torch.Tensor]:
    """Mean next-token NLL over `rows` (n, T) and the greedy next token at each position."""
    nll, count, greedy = 0.0, 0, []
    for start in range(0, rows.shape[0], COMPARE_BATCH):
        ids = torch.from_numpy(np.asarray(rows[start : start + COMPARE_BATCH], dtype=np.int64))
        # float64: the changes measured (~1e-4 relative) are near float32's resolution of a mean NLL
        logits = model(input_ids=ids).logits[:, :-1].double()  # (B, T-1, V) predicts ids[:, 1:]
        nll += float(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum"))
        count += ids[:, 1:].numel()
        greedy.append(logits.argmax(-1))  # (B, T-1)
    return nll / count, torch.cat(greedy)


def compare(
    reference: tuple[float, torch.Tensor], model_dir: Path, rows: np.ndarray, fp_bytes: int
) -> dict[str, float]:
    ref_nll, ref_greedy = reference
    model, _ = load_for_inference(model_dir)
    nll, greedy = next_token_scores(model, rows)
    return {
        "size_ratio": round(tensor_bytes(model_dir) / fp_bytes, 4),
        "perplexity": round(math.exp(nll), 4),
        "perplexity_change": round(math.exp(nll - ref_nll) - 1, 5),  # relative to fp
        "top1_agreement": round(float((greedy == ref_greedy).float().mean()), 4),
    }


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.quantize
    variants = {"int8": cfg.variants.int8, "int4": cfg.variants.int4}
    # Before anything slow, from config.json alone.
    variants = check_shapes(AutoConfig.from_pretrained(paths.policy), variants, paths.policy)
    outs = {"int8": paths.int8, "int4": paths.int4}
    with contextlib.ExitStack() as stack:
        tmp = {name: stack.enter_context(atomic_dir(out)) for name, out in outs.items()}
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="quantize-")))
        np.save(
            work / "calibration.npy",
            calibration_rows(paths.packed, cfg.calibration_samples, params.seed),
        )
        spec = job(
            paths.policy,
            work / "calibration.npy",
            tmp,
            {name: v.model_dump() for name, v in variants.items()},
            params.seed,
        )
        seconds = run_worker(spec, work)
        metrics: dict[str, float | int] = {"quantize_seconds": round(seconds, 1)}
        metrics |= {f"{n}.group_size": v.group_size for n, v in variants.items() if v.group_size}
        rows = np.asarray(np.load(paths.packed / "val.npy", mmap_mode="r")[: cfg.compare_rows])
        policy, _ = load_for_inference(paths.policy)
        reference = next_token_scores(policy, rows)
        metrics["fp.perplexity"] = round(math.exp(reference[0]), 4)
        fp_bytes = tensor_bytes(paths.policy)
        for name in variants:
            result = compare(reference, tmp[name], rows, fp_bytes)
            metrics.update({f"{name}.{k}": v for k, v in result.items()})
            log.info("%s: %s", name, result)
    for name, out in outs.items():
        register_model_dir(
            tracker, out, REGISTERED[name], data_path=paths.packed, parent_dir=paths.policy
        )
    return StageResult(metrics=metrics)
