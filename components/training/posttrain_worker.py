"""A post-training stage's training step on `posttrain.ranks` data-parallel ranks.

The stage process (`train_step`) either runs the step itself (one rank) or writes a request
(its params view, paths and the output directory), starts the ranks with pretraining's
launcher (`launch.local_launch_command`: DeepSpeed's runner, NCCL on GPUs, its CPU accelerator
over gloo here) and waits. Every rank (`main`) runs the stage module's `train` under the HF
Trainer with the ZeRO config from ds_config.py (`trainer_args.trainer_kwargs` adds it when
WORLD_SIZE > 1); rank 0 writes the model and the result (metrics and log history). The stage
process then logs that history to its MLflow run and registers the model: the other ranks
only train.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from components.config import StageParams
from components.stage import stage_module
from components.tracking.stage_run import Tracker
from components.training import launch
from components.training.accelerator import resolve_device
from components.training.trainer_common import TrackerCallback, Trained, scratch_dir

log = logging.getLogger(__name__)
REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"


def train_step(
    stage: str, params: StageParams, paths: Any, out: Path, tracker: Tracker | None
) -> Trained:
    """Run `stage`'s `train(params, paths, out)` here (ranks 1) or on `posttrain.ranks` ranks;
    the steps' logs go to `tracker`'s run (None: not logged, e.g. a compared method's)."""
    ranks = params.posttrain.ranks
    if ranks == 1:
        callbacks = [TrackerCallback(tracker)] if tracker else []
        return stage_module(stage).train(params, paths, out, callbacks=callbacks)
    with scratch_dir(f"{stage}-ranks") as work:
        request, result = work / REQUEST_FILE, work / RESULT_FILE
        request.write_text(json.dumps(request_doc(params, paths, out)))
        on_gpu = resolve_device(params.posttrain.device) == "cuda"
        with launch.ReservedPort() as port:
            cmd = launch_command(stage, ranks, request, result, port)
            log.info("%s: launching %d ranks: %s", stage, ranks, " ".join(cmd))
            proc = launch.run_ranks(cmd, launch.rank_env(ranks, on_gpu))
        if proc.returncode != 0:
            raise RuntimeError(
                f"{stage} on {ranks} ranks exited with code {proc.returncode} (see the rank logs "
                "above); posttrain.ranks: 1 runs the step in this process"
            )
        trained = Trained(**json.loads(result.read_text()))
    for entry in trained.log_history if tracker else ():  # TrackerCallback's, in one rank
        tracker.log_metrics(
            {k: v for k, v in entry.items() if isinstance(v, int | float) and k != "step"},
            step=entry["step"],
        )
    return trained


def request_doc(params: StageParams, paths: Any, out: Path) -> dict[str, Any]:
    return {
        "params": params.model_dump(mode="json"),
        "paths": {k: str(v) for k, v in dataclasses.asdict(paths).items()},
        "out": str(out),
    }


def launch_command(
    stage: str, ranks: int, request: Path, result: Path, master_port: int
) -> list[str]:
    args = ["--stage", stage, "--request", str(request), "--result", str(result)]
    return launch.local_launch_command(
        ranks, launch.POSTTRAIN_WORKER_MODULE, args, master_port=master_port
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="one rank of a post-training stage's training step")
    p.add_argument("--stage", required=True, help="sft, reward or align")
    p.add_argument("--request", type=Path, required=True, help="written by train_step")
    p.add_argument("--result", type=Path, required=True, help="rank 0 writes it")
    p.add_argument("--local_rank", type=int, default=-1)  # DeepSpeed's launcher passes it
    return p.parse_args(argv)


def configure_cpu_ranks(backend: str) -> None:
    """Accelerate's state for DeepSpeed on its CPU accelerator: given no backend it finds no GPU
    and treats the rank as a lone process (the batch check then fails: 2 != 2 * 1 * 2); named
    with the process group's backend, it joins that group as a DeepSpeed rank. The Trainer
    reuses this state (`accelerator_config.use_configured_state`, set by trainer_kwargs)."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"  # what TrainingArguments sets for it
    try:
        state = PartialState(backend=backend)
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    if state.distributed_type != DistributedType.DEEPSPEED or state.num_processes < 2:
        raise RuntimeError(
            f"accelerate set up {state.distributed_type} on {state.num_processes} process(es), "
            "not DeepSpeed on the launched ranks: check WORLD_SIZE/LOCAL_RANK from the launcher"
        )


def main(argv: list[str] | None = None) -> None:
    import deepspeed
    import torch.distributed as dist

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    accelerator = deepspeed.get_accelerator()
    # Bind the rank to its GPU before any collective (a no-op on the CPU accelerator), then
    # start the process group the Trainer's DeepSpeed integration joins (gloo on CPU).
    accelerator.set_device(int(os.environ.get("LOCAL_RANK", max(args.local_rank, 0))))
    backend = accelerator.communication_backend_name()
    deepspeed.init_distributed(dist_backend=backend)
    if accelerator.device_name() == "cpu":
        configure_cpu_ranks(backend)
    request = json.loads(args.request.read_text())
    module = stage_module(args.stage)
    params = module.Reads.model_validate(request["params"])
    paths = module.Paths(**{k: Path(v) for k, v in request["paths"].items()})
    trained = module.train(params, paths, Path(request["out"]), callbacks=[])
    if dist.get_rank() == 0:
        args.result.write_text(json.dumps(dataclasses.asdict(trained)))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
