"""Measured model-state memory of one ZeRO-3 rank: the tensors DeepSpeed actually allocated.

Counts unique storages, so a buffer that two structures share is counted once.
"""

from __future__ import annotations

import torch


def _unique_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if not torch.is_tensor(t) or t.numel() == 0:
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def zero3_model_state_bytes(engine) -> dict[str, int]:
    """Bytes this rank holds for weights, gradients, fp32 master weights and Adam moments.

    Call after the first optimizer step (Adam creates its moments lazily).
    """
    opt = engine.optimizer  # DeepSpeedZeroOptimizer_Stage3
    weights = _unique_bytes(p.ds_tensor for p in engine.module.parameters())
    master = _unique_bytes(opt.fp32_partitioned_groups_flat)
    grads = _unique_bytes([opt.grad_partitions_flat_buffer])
    moments = _unique_bytes(v for state in opt.optimizer.state.values() for v in state.values())
    return {
        "weights": weights,
        "gradients": grads,
        "master_weights": master,
        "optimizer_moments": moments,
        "total": weights + grads + master + moments,
    }
