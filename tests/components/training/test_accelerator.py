"""Device and precision resolution, the collective-device guard, the optimizer fallback.

The GPU crashes these would have caught, on a CPU machine: a CPU tensor handed to an NCCL
collective (the partition report at step 0), logits compared across dtypes, and DeepSpeed's
FusedAdam JIT build failing on a Hopper arch list (`9.0a`).
"""

from __future__ import annotations

import ast
import logging

import pytest
import torch

from components.training import accelerator, pretrain_worker
from components.training.accelerator import (
    CollectiveDeviceError,
    all_gather,
    all_reduce,
    logit_difference,
    resolve_device,
    resolve_precision,
)
from components.training.ds_config import deepspeed_config
from tests.helpers import ROOT, project_params

WORKER = ROOT / "components" / "training" / "pretrain_worker.py"
TENSOR_COLLECTIVES = {
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "broadcast",
    "reduce",
    "gather",
    "scatter",
    "all_to_all",
    "all_to_all_single",
}
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "empty", "full", "arange", "rand", "randn"}


def test_the_device_check_fires_for_a_tensor_off_the_accelerator():
    # On this machine the accelerator is the CPU: a meta tensor plays the wrong-device tensor,
    # as a CPU tensor does on a GPU rank. The check runs before any process group is needed.
    wrong = torch.zeros(3, dtype=torch.int64, device="meta")
    with pytest.raises(CollectiveDeviceError, match=r"all_gather: tensor 0 is on meta .* cpu"):
        all_gather([torch.zeros(3, dtype=torch.int64)], wrong, device_type="cpu")
    with pytest.raises(CollectiveDeviceError, match="all_reduce"):
        all_reduce(torch.zeros(2), device_type="cuda")  # a CPU tensor on a GPU rank
    with pytest.raises(CollectiveDeviceError, match="tensor 1"):
        all_gather([wrong], torch.zeros(3, dtype=torch.int64), device_type="cpu")


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if isinstance(owner, ast.Name):
                yield owner.id, node.func.attr, node


def test_every_worker_collective_goes_through_the_device_check():
    """The worker never calls a tensor collective of torch.distributed directly, and every
    tensor it creates names its device (the step-0 crash: torch.tensor(...) with no device)."""
    tree = ast.parse(WORKER.read_text())
    direct = [
        f"line {n.lineno}: dist.{attr}"
        for owner, attr, n in _calls(tree)
        if owner == "dist" and attr in TENSOR_COLLECTIVES
    ]
    assert not direct, f"use components.training.accelerator's checked wrappers: {direct}"
    placeless = [
        f"line {n.lineno}: torch.{attr}"
        for owner, attr, n in _calls(tree)
        if owner == "torch" and attr in FACTORIES and not any(k.arg == "device" for k in n.keywords)
    ]
    assert not placeless, f"tensors created without device=: {placeless}"
    # The wrappers are the ones imported from the checked module.
    assert pretrain_worker.all_gather is accelerator.all_gather
    assert pretrain_worker.all_reduce is accelerator.all_reduce


def test_auto_resolves_to_this_machine_and_cuda_without_a_gpu_is_refused():
    assert not torch.cuda.is_available()  # this test machine is CPU-only
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="device: cuda but torch sees no GPU"):
        resolve_device("cuda")
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_bf16_switch_reaches_the_deepspeed_config_on_cpu_too():
    auto = project_params().pretrain
    bf16 = project_params(pretrain={"precision": "bf16"}).pretrain
    assert deepspeed_config(auto, 2, "cpu", zero_stage=3)["bf16"]["enabled"] is False
    assert deepspeed_config(auto, 8, "cuda", zero_stage=3)["bf16"]["enabled"] is True
    assert deepspeed_config(bf16, 2, "cpu", zero_stage=3)["bf16"]["enabled"] is True


def test_zero3_prefetch_and_overlap_are_the_same_on_cpu_and_gpu():
    cfg = project_params().pretrain
    cpu = deepspeed_config(cfg, 2, "cpu", zero_stage=3)["zero_optimization"]
    gpu = deepspeed_config(cfg, 8, "cuda", zero_stage=3)["zero_optimization"]
    keys = (
        "overlap_comm",
        "stage3_prefetch_bucket_size",
        "stage3_param_persistence_threshold",
        "stage3_max_live_parameters",
    )
    assert {k: cpu[k] for k in keys} == {k: gpu[k] for k in keys}
    assert cpu["overlap_comm"] is True and cpu["stage3_prefetch_bucket_size"] == 50_000_000


def test_logits_are_only_compared_like_with_like():
    a = torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match="same dtype on the same device"):
        logit_difference(a, a.bfloat16())
    diff, tol = logit_difference(a, a + 1e-6)
    assert diff < tol == 1e-4
    b = a.bfloat16()
    diff, tol = logit_difference(b, b)
    assert diff == 0 and tol == 3e-2


def test_a_failed_fused_adam_build_falls_back_to_torch_adamw_with_the_reason(caplog):
    cfg = project_params().pretrain
    model = torch.nn.Linear(4, 4)
    ds = deepspeed_config(
        cfg, 1, "cuda", zero_stage=3
    )  # has the optimizer section DeepSpeed would build

    def hopper_arch_list() -> None:  # what DeepSpeed 0.19.8 raised for TORCH_CUDA_ARCH_LIST=9.0a
        raise ValueError("invalid literal for int() with base 10: '0a'")

    with caplog.at_level(logging.WARNING, logger="pretrain"):
        opt, name, used = pretrain_worker.client_optimizer(
            ds, model, cfg, torch.device("cpu"), load_op=hopper_arch_list
        )
    assert isinstance(opt, torch.optim.AdamW) and name == "torch_adamw"
    assert opt.defaults["lr"] == cfg.lr and opt.defaults["weight_decay"] == cfg.weight_decay
    assert "optimizer" not in used  # DeepSpeed now takes the client optimizer
    assert (
        "optimizer" in ds and "zero_force_ds_cpu_optimizer" not in ds
    )  # the caller's is as it was
    assert "ValueError: invalid literal for int() with base 10: '0a'" in caplog.text

    ds = deepspeed_config(cfg, 1, "cuda", zero_stage=3)
    opt, name, used = pretrain_worker.client_optimizer(
        ds, model, cfg, torch.device("cpu"), load_op=lambda: None
    )
    assert opt is None and name == "deepspeed_fused_adam" and "optimizer" in used
