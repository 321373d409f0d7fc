"""The DeepSpeed config, generated from params in one place and saved with the run."""

from __future__ import annotations

from typing import Any

from components.config import PostTrainParams, PretrainParams
from components.training.accelerator import Device, resolve_precision


def deepspeed_config(
    cfg: PretrainParams, world_size: int, device: Device, zero_stage: int | None = None
) -> dict[str, Any]:
    """ZeRO config for `world_size` data-parallel ranks.

    zero_stage: the stage to run; needed when `pretrain.zero_stage` is `auto` (resolve it with
    `sizing.zero_stage_for`, the planner's cheapest fitting stage). The ranks read the stage
    from this config, so it is the one record of what ran.

    Batch arithmetic DeepSpeed checks: train_batch_size = micro × accumulation × world_size.
    Precision: `pretrain.precision` (auto: bf16 on GPUs; fp32 on CPU, where bf16 matmuls are
    emulated and slower). The ZeRO communication settings are the same on both devices.
    """
    precision = resolve_precision(cfg.precision, device)
    stage = cfg.zero_stage if zero_stage is None else zero_stage
    if stage == "auto":
        raise ValueError(
            "pretrain.zero_stage is auto: pass the resolved stage "
            "(components.training.sizing.zero_stage_for) or set 0-3 in params.yaml"
        )
    config: dict[str, Any] = {
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum_steps * world_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero_section(cfg, device, stage),
        "scheduler": {
            "type": "WarmupCosineLR",
            "params": {
                "total_num_steps": cfg.max_steps,
                "warmup_num_steps": cfg.warmup_steps,
                "warmup_min_ratio": 0.0,
                "warmup_type": "linear",
                "cos_min_ratio": cfg.min_lr_ratio,
            },
        },
        "bf16": {"enabled": precision == "bf16"},
        "steps_per_print": 10**9,  # we log ourselves, per step, to MLflow
        "wall_clock_breakdown": False,
    }
    if device == "cuda":
        # On GPUs DeepSpeed builds its fused AdamW from this section (the worker falls back to
        # torch's fused AdamW when that JIT build fails); on CPU the engine gets
        # torch.optim.AdamW as a client optimizer (no C++ op to compile).
        config["optimizer"] = {"type": "AdamW", "params": optimizer_kwargs(cfg)}
    # A client optimizer (CPU, or the GPU fallback) is not on DeepSpeed's tested list.
    config["zero_allow_untested_optimizer"] = True
    return config


def zero_section(
    cfg: PretrainParams | PostTrainParams, device: Device, stage: int
) -> dict[str, Any]:
    """`zero_optimization`: stage, overlap and (ZeRO-3) prefetch, identical on CPU and GPU; only
    offload is GPU-only (on the CPU accelerator the states are already in host memory)."""
    zero: dict[str, Any] = {
        "stage": stage,
        "overlap_comm": cfg.overlap_comm,
        "contiguous_gradients": True,
        # Lets the engine write a consolidated 16-bit (here: fp32) copy on save.
        "stage3_gather_16bit_weights_on_model_save": True,
    }
    if stage == 3:
        zero |= {
            "stage3_prefetch_bucket_size": cfg.prefetch_bucket_size,
            "stage3_param_persistence_threshold": cfg.param_persistence_threshold,
            "stage3_max_live_parameters": cfg.max_live_parameters,
            "stage3_max_reuse_distance": cfg.max_reuse_distance,
        }
    if device == "cuda":
        zero |= offload_sections(cfg)
    return zero


def trainer_deepspeed_config(cfg: PostTrainParams, device: Device) -> dict[str, Any]:
    """DeepSpeed config for the HF/TRL Trainer (sft, reward, align) on several GPUs: the same
    ZeRO section as pretraining; batch sizes, optimizer and scheduler stay with the Trainer,
    which fills DeepSpeed's `auto` values from its own arguments."""
    precision = resolve_precision(cfg.precision, device)
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zero_section(cfg, device, cfg.zero_stage),
        "bf16": {"enabled": precision == "bf16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def optimizer_kwargs(cfg: PretrainParams) -> dict[str, Any]:
    return {"lr": cfg.lr, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": cfg.weight_decay}


def offload_sections(cfg: PretrainParams | PostTrainParams) -> dict[str, Any]:
    """ZeRO-Offload: optimizer step (and with ZeRO-3 the weights) in pinned host memory."""
    out: dict[str, Any] = {}
    if cfg.offload in ("optimizer", "optimizer_and_params"):
        out["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if cfg.offload == "optimizer_and_params":
        out["offload_param"] = {"device": "cpu", "pin_memory": True}
    return out
