"""Where training runs and in which precision, and the guard on the worker's own collectives.

Imports torch only at module level: the pretraining worker and the GPU bench use it on a bare
CUDA image, the post-training stages on this CPU machine.

- `resolve_device` / `resolve_precision` turn params' `auto` into what this machine has:
  `cuda` + `bf16` where a GPU is visible, else `cpu` + `fp32` (bf16 matmuls are emulated on
  most CPUs and slower); an explicit `bf16` is honoured on CPU too (DeepSpeed's CPU accelerator
  supports it), so the bf16 code paths can be tested without a GPU.
- `all_reduce` / `all_gather` check every tensor is on the accelerator's device before the
  collective: NCCL has no CPU backend, so a CPU tensor passed to a collective on a GPU rank
  crashes (it did: the partition report's int64 counts at step 0). On the CPU accelerator the
  same mistake is invisible, hence the check, which names the tensor, on every backend.
- `LOGIT_TOLERANCE` compares two forwards of the same weights in the same dtype on the same
  device: the bound is a few units in the last place of that dtype at the logits' scale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda"]
Precision = Literal["fp32", "bf16"]
DeviceChoice = Literal["auto", "cpu", "cuda"]
PrecisionChoice = Literal["auto", "fp32", "bf16"]

DTYPES: dict[Precision, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Max |logit difference| between two forwards of the same weights, relative to max(1, |logit|):
# fp32 differs only by summation order (~1e-6 relative); bf16 has 8 mantissa bits (one ulp is
# 2^-8 = 3.9e-3 relative), and a reduction in a different order can move a logit by a few ulps.
LOGIT_TOLERANCE: dict[torch.dtype, float] = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


class CollectiveDeviceError(RuntimeError):
    """A tensor passed to a collective is not on the accelerator's device."""


def resolve_device(choice: DeviceChoice) -> Device:
    """`auto` → `cuda` when torch sees a GPU, else `cpu`; `cuda` without one is an error."""
    has_gpu = torch.cuda.is_available()
    if choice == "cuda" and not has_gpu:
        raise RuntimeError(
            "device: cuda but torch sees no GPU (torch.cuda.is_available() is False): "
            "install a CUDA build of torch on a GPU machine, or set device: auto or cpu"
        )
    if choice == "auto":
        return "cuda" if has_gpu else "cpu"
    return choice


def resolve_precision(choice: PrecisionChoice, device: Device) -> Precision:
    """`auto` → bf16 on GPUs (tensor cores), fp32 on CPU; an explicit choice is kept."""
    if choice == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return choice


def accelerator_device_type() -> str:
    """The device type DeepSpeed's accelerator computes on (`cuda`, or `cpu` on its CPU
    accelerator): what every collective's tensors must live on."""
    from deepspeed.accelerator import get_accelerator

    return get_accelerator().device_name()


def require_on_device(what: str, tensors: Sequence[torch.Tensor], device_type: str) -> None:
    for i, t in enumerate(tensors):
        if t.device.type != device_type:
            raise CollectiveDeviceError(
                f"{what}: tensor {i} is on {t.device} but the collective runs on "
                f"{device_type} (NCCL has no CPU backend): create it with "
                f"device=<the rank's device> or move it with .to(device) first"
            )


def all_reduce(tensor: torch.Tensor, device_type: str | None = None) -> None:
    """dist.all_reduce (sum, in place), after checking the tensor is on the accelerator."""
    require_on_device("all_reduce", [tensor], device_type or accelerator_device_type())
    dist.all_reduce(tensor)


def all_gather(
    out: list[torch.Tensor], tensor: torch.Tensor, device_type: str | None = None
) -> None:
    """dist.all_gather into `out`, after checking every tensor is on the accelerator."""
    require_on_device("all_gather", [tensor, *out], device_type or accelerator_device_type())
    dist.all_gather(out, tensor)


def logit_difference(live: torch.Tensor, reloaded: torch.Tensor) -> tuple[float, float]:
    """(max |difference| relative to max(1, max |live|), the tolerance for their dtype).

    Refuses to compare unlike with like: a different dtype or device is a bug in the caller,
    not a numerical difference."""
    if live.dtype != reloaded.dtype or live.device != reloaded.device:
        raise ValueError(
            f"comparing logits of {live.dtype} on {live.device} with {reloaded.dtype} on "
            f"{reloaded.device}: run both forwards in the same dtype on the same device"
        )
    scale = max(1.0, live.float().abs().max().item())
    diff = (live.float() - reloaded.float()).abs().max().item() / scale
    return diff, LOGIT_TOLERANCE[live.dtype]
