"""llm-compressor worker of the quantize stage: one policy in, one compressed-tensors directory
per variant out.

It runs in its own environment (`.venv-quantize`, `make setup`), because llm-compressor 0.14
pins transformers <= 5.17 and the project runs a newer one; so it imports only torch,
transformers and llm-compressor (with their own dependencies: numpy, datasets,
compressed-tensors) and is started by file path. The stage (components/training/quantize.py)
checks the shapes first and measures the results; this file only runs `oneshot`. The stage
imports `job` and `IGNORE` from here (so a change here makes it stale in `dvc status`): the
llm-compressor imports are inside the functions that only the worker runs.

Job (JSON file, the only argument): see `job`. Each variant starts again from the fp model on
disk, because `oneshot` quantizes in place.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compressed_tensors.quantization import QuantizationScheme
    from datasets import Dataset
    from llmcompressor.modifiers import Modifier

TARGETS = ["Linear"]
# The output projection stays float32: tied to the input embeddings (quantizing it would untie
# them and store the vocabulary matrix twice), and the layer whose error reaches the logits
# undamped.
IGNORE = ("lm_head",)


def job(
    model: Path,
    calibration: Path | None,
    outs: dict[str, Path],
    variants: dict[str, dict[str, Any]],
    seed: int,
) -> dict[str, Any]:
    """What the worker reads: the fp model, calibration token ids (.npy, shape (rows,
    seq_len)), and per variant its output directory and params (scheme, group_size,
    algorithm)."""
    return {
        "model": str(model),
        "calibration": str(calibration) if calibration else None,
        "ignore": list(IGNORE),
        "seed": seed,
        "variants": [{"name": n, "out": str(outs[n]), **v} for n, v in variants.items()],
    }


def scheme(name: str, group_size: int | None) -> QuantizationScheme:
    """The preset (e.g. W4A16, W8A8) with the group size of the params, not the preset's."""
    from compressed_tensors.quantization import preset_name_to_scheme

    preset = preset_name_to_scheme(name, TARGETS)
    if group_size is None:
        return preset
    weights = preset.weights.model_copy(update={"group_size": group_size})
    return preset.model_copy(update={"weights": weights})


def recipe(variant: dict[str, Any], ignore: list[str]) -> Modifier:
    from llmcompressor.modifiers.gptq import GPTQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier

    groups = {"group_0": scheme(variant["scheme"], variant["group_size"])}
    if variant["algorithm"] == "gptq":
        return GPTQModifier(config_groups=groups, ignore=ignore)
    return QuantizationModifier(config_groups=groups, ignore=ignore)


def calibration_set(path: str | None) -> Dataset | None:
    import numpy as np
    from datasets import Dataset

    if path is None:
        return None
    rows = np.load(path)  # (n, seq_len) token ids, already drawn by the stage
    ids = rows.astype(np.int64).tolist()
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids]})


def quantize_variant(job: dict[str, Any], variant: dict[str, Any], data: Dataset | None) -> None:
    import torch
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    calibration: dict[str, Any] = {}
    if variant["algorithm"] == "gptq":  # rtn needs no data: weights only, dynamic activations
        if data is None:
            raise ValueError(f"variant {variant['name']} (gptq) needs calibration rows")
        calibration = {
            "dataset": data,
            "num_calibration_samples": len(data),
            "max_seq_length": len(data[0]["input_ids"]),
            "shuffle_calibration_samples": False,  # the stage drew the rows with its seed
        }
    oneshot(model=model, recipe=recipe(variant, job["ignore"]), **calibration)
    out = Path(variant["out"])
    model.save_pretrained(out, save_compressed=True)  # compressed-tensors format, config.json
    tokenizer.save_pretrained(out)


def main(job_path: str) -> None:
    import torch

    job = json.loads(Path(job_path).read_text())
    torch.manual_seed(job.get("seed", 0))
    data = calibration_set(job["calibration"])
    for variant in job["variants"]:
        start = time.perf_counter()
        quantize_variant(job, variant, data)
        print(f"{variant['name']}: {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
