"""The TrainingArguments every post-training stage shares that are not training knobs: device
and precision from `posttrain`, DeepSpeed ZeRO on several GPUs, no checkpoints or integrations.

Free of the tracking stack (MLflow), so the GPU bench builds the same arguments on a bare CUDA
image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from components.config import PostTrainParams
from components.training.accelerator import resolve_device, resolve_precision
from components.training.ds_config import trainer_deepspeed_config

# Log every optimizer step: the runs are short, and first/last loss must exist even when an
# epoch has fewer steps than TRL's default logging interval (10).
LOGGING_STEPS = 1
# `posttrain` at its defaults (device and precision auto), for callers without params.
AUTO_DEVICE = PostTrainParams()


def trainer_kwargs(scratch: Path, seed: int, cfg: PostTrainParams) -> dict[str, Any]:
    """TrainingArguments shared by all post-training stages: device, precision and (on several
    GPUs) DeepSpeed from `posttrain`; no checkpoints, no integrations, seeds."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    kwargs: dict[str, Any] = {
        "output_dir": str(scratch),  # trainer scratch only; the model is saved by the stage
        "use_cpu": device == "cpu",
        # bf16 autocast over fp32 master weights (the stages load fp32); TRL defaults it on.
        "bf16": precision == "bf16",
        "fp16": False,
        "gradient_checkpointing": cfg.gradient_checkpointing,  # TRL defaults it on
        "report_to": [],
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": LOGGING_STEPS,
        "dataloader_num_workers": 0,
        "seed": seed,
        "data_seed": seed,
    }
    if device == "cuda" and cfg.zero_stage > 0 and launched_world_size() > 1:
        kwargs["deepspeed"] = trainer_deepspeed_config(cfg, device)
    return kwargs


def launched_world_size() -> int:
    """Ranks started by a launcher (torchrun, deepspeed, accelerate set WORLD_SIZE); 1 alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def cpu_trainer_kwargs(scratch: Path, seed: int) -> dict[str, Any]:
    """The CPU/fp32 arguments whatever the machine (tests that pin numbers use it)."""
    return trainer_kwargs(scratch, seed, PostTrainParams(device="cpu", precision="fp32"))
