"""The model a post-training stage trains with LoRA or QLoRA, loaded for the device it runs on.

Free of the tracking stack (MLflow): the GPU bench loads models through it on a bare CUDA image;
`components.training.adapters` re-exports it for the stages.

QLoRA's NF4 base, by where it trains (`posttrain` device/precision, the launcher's ranks):
- CPU: fp32 compute (the CPU has no fast bf16 matmul), every weight on the CPU.
- one GPU process: compute in the run's precision (bf16 on GPUs: half the activation memory and
  tensor cores), the whole model on this process's GPU. The HF Trainer does not move a 4-bit
  model, so the load itself must place it (`device_map`).
- several GPU ranks under DeepSpeed ZeRO-3: the 4-bit weights are packed into bf16 storage
  (`bnb_4bit_quant_storage` = the compute dtype, the model loaded in that dtype) and no
  `device_map`: ZeRO-3 flattens and shards parameters of one dtype, which uint8-packed weights
  among bf16 ones are not. That is the recipe of PEFT's guide "Use PEFT QLoRA and DeepSpeed with
  ZeRO3 for finetuning large models on multiple GPUs" (docs/source/accelerate/deepspeed.md:
  "Notice that `dtype` for `AutoModelForCausalLM` is same as the `bnb_4bit_quant_storage` data
  type"). Without a `device_map` transformers' bnb quantizer places the model on
  `torch.cuda.current_device()`, which posttrain_worker binds to LOCAL_RANK before training.
  `prepare_model_for_kbit_training` is skipped there: it casts every bf16 weight but the 4-bit
  ones to fp32, mixing dtypes again (TRL's SFTTrainer skipped it for "QLoRA + FSDP / DS-Zero3"
  for that reason while it still prepared models itself); the adapters' `get_peft_model` freezes
  the base either way.
- several GPU ranks with ZeRO 0-2 (replicated weights): as one process, on the rank's GPU.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, PreTrainedModel

from components.config import LoraParams, PostTrainParams
from components.training.accelerator import (
    DTYPES,
    Device,
    Precision,
    resolve_device,
    resolve_precision,
)
from components.training.trainer_args import AUTO_DEVICE, launched_world_size


def lora_config(cfg: LoraParams) -> LoraConfig | None:
    """The PEFT config TRL's trainers wrap the model with; None trains every weight."""
    if not cfg.enabled:
        return None
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )


def nf4_config(
    compute_dtype: torch.dtype = torch.float32, quant_storage: torch.dtype = torch.uint8
) -> BitsAndBytesConfig:
    """QLoRA's storage: NF4 blocks of 64 with double-quantised scales, dequantised to
    `compute_dtype` for each matmul; `quant_storage` is the dtype the 4-bit pairs are packed in
    (uint8, bitsandbytes' default; the compute dtype for ZeRO-3, see the module docstring)."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=quant_storage,
    )


def zero3_sharded(device: Device, world_size: int, zero_stage: int) -> bool:
    """The 4-bit base is sharded by DeepSpeed ZeRO-3 across GPU ranks."""
    return device == "cuda" and world_size > 1 and zero_stage == 3


def qlora_load_kwargs(
    device: Device, precision: Precision, world_size: int, local_rank: int, zero_stage: int = 3
) -> dict[str, Any]:
    """`from_pretrained` keyword arguments for QLoRA's NF4 base (the cases: module docstring)."""
    if device == "cpu":
        return {"quantization_config": nf4_config(), "dtype": torch.float32, "device_map": "cpu"}
    compute = DTYPES[precision]
    if zero3_sharded(device, world_size, zero_stage):
        return {"quantization_config": nf4_config(compute, quant_storage=compute), "dtype": compute}
    # fp32 for the weights that stay unquantised (norms, embeddings, head), as
    # prepare_model_for_kbit_training would cast them anyway.
    return {
        "quantization_config": nf4_config(compute),
        "dtype": torch.float32,
        "device_map": {"": local_rank},
    }


def cuda_index() -> int:
    """This process's GPU: LOCAL_RANK under a launcher, else torch's current device."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return torch.cuda.current_device()


def load_trainable(
    model_dir: Path, cfg: LoraParams, posttrain: PostTrainParams = AUTO_DEVICE
) -> PreTrainedModel:
    """The model a stage trains: fp32 (the Trainer's bf16 autocast computes on GPUs), or with
    `cfg.qlora` its linear layers in NF4 on `posttrain`'s device, made ready for adapter
    training (norms and head in fp32; input grads on when `posttrain.gradient_checkpointing`,
    so checkpointed blocks over a frozen embedding still get gradients)."""
    if not cfg.qlora:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    device = resolve_device(posttrain.device)
    precision = resolve_precision(posttrain.precision, device)
    world = launched_world_size()
    kwargs = qlora_load_kwargs(
        device,
        precision,
        world,
        cuda_index() if device == "cuda" else 0,
        posttrain.zero_stage,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if zero3_sharded(device, world, posttrain.zero_stage):
        return model
    # The Trainer enables checkpointing from the same flag; here it must not be forced on
    # (recomputing every block costs a third more compute) nor left off when asked for.
    return prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=posttrain.gradient_checkpointing
    )
