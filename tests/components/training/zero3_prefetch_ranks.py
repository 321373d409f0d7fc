"""One rank of the ZeRO-3 prefetch check (tests/components/training/test_zero3_prefetch.py).

Run by torchrun on 2 CPU ranks. Builds the engine as the pretraining worker does (its
`build_model`, `client_optimizer`, the ds_config generator), trains a few steps so ZeRO-3 has
recorded its parameter trace and prefetches from it, then records the ZeRO-3 state of every
parameter at the points that matter:

- `after_training`: after the training steps (every parameter partitioned);
- `forward_only`: after one bare forward-only pass, as one validation batch runs it. The
  backward's first parameters, prefetched for a backward that never comes, are still in
  flight here: the state that crashed consolidation on a GPU;
- `after_release`: after DeepSpeed's `empty_partition_cache`, back to the state of training;
- `after_validation`: after the worker's `validation_loss` (the same forward + its release);
- `after_consolidate`: after the worker's `consolidate` (gather, save, reload, compare).

Rank 0 writes them as JSON to argv[2] as it goes, so a crash still leaves the states before it.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from transformers import AutoTokenizer

from components.config import load_params
from components.training import pretrain_worker as worker
from components.training.ds_config import deepspeed_config


def zero3_state(engine) -> dict:
    """Status count of every parameter, and what the prefetch coordinator still holds."""
    coordinator = engine.optimizer.parameter_offload.get_param_coordinator()
    # DeepSpeed keeps the in-flight all-gathers in a name-mangled private registry.
    registry = coordinator._PartitionedParameterCoordinator__inflight_param_registry
    params = list(engine.module.parameters())
    return {
        "status": dict(Counter(p.ds_status.name for p in params)),
        "in_flight_registry": len(registry),
        "with_active_sub_modules": sum(bool(p.ds_active_sub_modules) for p in params),
    }


def main(work: Path, out: Path) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    params = worker.Reads.narrow(load_params(work / "params.yaml"))
    ds_config = deepspeed_config(params.pretrain, world, "cpu")
    tokenizer = AutoTokenizer.from_pretrained(work / "tokenizer")
    model = worker.build_model(params, tokenizer, ds_config)
    optimizer, _, ds_config = worker.client_optimizer(
        ds_config, model, params.pretrain, torch.device("cpu")
    )
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, model_parameters=model.parameters(), config=ds_config
    )
    tokens = np.load(work / "tokens.npy")  # (sequences, seq_len)
    micro = params.pretrain.micro_batch_size
    for step in range(3):  # the trace is recorded in step 1 and used from step 2 on
        x = torch.as_tensor(tokens[(step * world + rank) * micro :][:micro])
        engine.backward(engine(input_ids=x, labels=x).loss)
        engine.step()
    states: dict[str, dict] = {}

    def record(point: str) -> None:
        states[point] = zero3_state(engine)
        if rank == 0:
            out.write_text(json.dumps(states, indent=1))

    record("after_training")
    engine.eval()
    with torch.no_grad():
        engine(input_ids=x, labels=x)  # what one validation batch does, without the release
    record("forward_only")
    engine.empty_partition_cache()  # back to the state training left: nothing gathered
    record("after_release")
    engine.train()
    device = torch.device("cpu")
    worker.validation_loss(engine, tokens, micro, 1, rank, world, device)
    record("after_validation")
    probe = torch.as_tensor(tokens[:2])
    worker.consolidate(engine, engine.module, tokenizer, work / "model", rank, probe)
    record("after_consolidate")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
