import numpy as np
import pytest

from components.training.ds_config import deepspeed_config
from components.training.pretrain_worker import global_batch_indices, rank_slice
from tests.helpers import project_params


@pytest.mark.parametrize("world, accum", [(1, 1), (2, 4), (16, 8)])
def test_batch_arithmetic(world, accum):
    cfg = project_params(pretrain={"grad_accum_steps": accum, "micro_batch_size": 4}).pretrain
    ds = deepspeed_config(cfg, world, "cpu", zero_stage=3)
    assert ds["train_batch_size"] == 4 * accum * world
    assert ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == accum


def test_cpu_uses_fp32_and_client_optimizer_gpu_uses_bf16_and_ds_adamw():
    cfg = project_params().pretrain
    cpu, gpu = (
        deepspeed_config(cfg, 2, "cpu", zero_stage=3),
        deepspeed_config(cfg, 8, "cuda", zero_stage=3),
    )
    assert cpu["bf16"]["enabled"] is False and "optimizer" not in cpu
    assert gpu["bf16"]["enabled"] is True and gpu["optimizer"]["type"] == "AdamW"
    for ds in (cpu, gpu):
        assert ds["zero_optimization"]["stage"] == 3
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
        assert ds["gradient_clipping"] == cfg.grad_clip
        sched = ds["scheduler"]
        assert sched["type"] == "WarmupCosineLR"
        assert sched["params"]["total_num_steps"] == cfg.max_steps
        assert sched["params"]["warmup_num_steps"] == cfg.warmup_steps


def test_batches_are_a_pure_function_of_step_and_cover_each_epoch():
    n, gb = 10, 4
    a = np.concatenate([global_batch_indices(s, gb, n, seed=3) for s in range(5)])
    b = np.concatenate([global_batch_indices(s, gb, n, seed=3) for s in range(5)])
    assert (a == b).all()
    assert sorted(a[:10].tolist()) == list(range(10))  # first epoch: each sequence once
    assert sorted(a[10:20].tolist()) == list(range(10))


def test_rank_slices_partition_the_global_batch():
    idx = np.arange(8)
    parts = [rank_slice(idx, r, 2) for r in range(2)]
    assert np.concatenate(parts).tolist() == idx.tolist()
