"""The TrainingArguments every post-training stage shares that are not training knobs: device
and precision from `posttrain`, DeepSpeed ZeRO on several ranks, no checkpoints or integrations.

Several ranks (the stage's own launch with `posttrain.ranks` > 1, or any launcher that sets
WORLD_SIZE): the Trainer gets `deepspeed=` the ZeRO config from ds_config.py on GPUs and on CPU
alike. On CPU the ranks run on DeepSpeed's CPU accelerator over gloo (the launcher sets
DS_ACCELERATOR=cpu), so `use_cpu` stays False there: with `use_cpu` the Trainer skips
DeepSpeed and falls back to plain CPU data parallelism.

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
    zero = uses_deepspeed(cfg)
    kwargs: dict[str, Any] = {
        "output_dir": str(scratch),  # trainer scratch only; the model is saved by the stage
        "use_cpu": device == "cpu" and not zero,
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
    if zero:
        kwargs["deepspeed"] = trainer_deepspeed_config(cfg, device)
    if zero and device == "cpu":
        # Accelerate picks no process-group backend for DeepSpeed without a GPU (and would run
        # single-process): the rank configures its state with the CPU accelerator's backend
        # first (posttrain_worker.configure_cpu_ranks) and the Trainer uses that state.
        kwargs["accelerator_config"] = {"use_configured_state": True}
    return kwargs


def uses_deepspeed(cfg: PostTrainParams) -> bool:
    """ZeRO through the Trainer: this process is one of several launched ranks (zero_stage 0
    keeps the Trainer's plain data parallelism)."""
    return cfg.zero_stage > 0 and launched_world_size() > 1


def launched_world_size() -> int:
    """Ranks started by a launcher (torchrun, deepspeed, accelerate set WORLD_SIZE); 1 alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))
