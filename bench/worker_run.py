"""Launch the pretraining worker for a benchmark exactly as the pretrain stage launches it.

bench/gpu.py and bench/pretrain.py share it: the ranks read a params file and a ds_config
written here (from the project's generator), are started by `launch.launch_command`, and
leave their history, run settings and reports under `work`. Imports only the schema and the
launch helpers, so it runs on a bare CUDA image.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.config import Params
from components.training import launch
from components.training.accelerator import Device
from components.training.ds_config import deepspeed_config
from components.training.pretrain_worker import (
    CONSOLIDATION_FILE,
    MEMORY_FILE,
    SETTINGS_FILE,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WorkerRun:
    work: Path
    wall_s: float  # launcher start to exit: start-up, steps, checkpoint, consolidation

    @property
    def checkpoints(self) -> Path:
        return self.work / "ckpt"

    @property
    def model(self) -> Path:
        return self.work / "model"

    def history(self) -> list[dict]:
        text = (self.checkpoints / "history.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    def settings(self) -> dict:
        return json.loads((self.checkpoints / SETTINGS_FILE).read_text())

    def consolidation(self) -> dict:
        return json.loads((self.model / CONSOLIDATION_FILE).read_text())

    def memory(self) -> dict:
        """Model-state bytes per rank (written by ZeRO-3 runs only)."""
        return json.loads((self.checkpoints / MEMORY_FILE).read_text())


def run_worker(
    params: Params,
    tokenizer: Path,
    data: Path,
    work: Path,
    device: Device,
    zero_stage: int | None = None,
) -> WorkerRun:
    """`params.cluster.world_size` ranks of the worker on `data`; raises with the ranks' output
    if they fail. zero_stage: required when `pretrain.zero_stage` is auto."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    world = params.cluster.world_size
    ds = deepspeed_config(params.pretrain, world, device, zero_stage=zero_stage)
    (work / "ds.json").write_text(json.dumps(ds))
    args = launch.worker_args(
        params_file=work / "params.yaml",
        data=data,
        tokenizer=tokenizer,
        ds_config=work / "ds.json",
        checkpoints=work / "ckpt",
        out=work / "model",
        history=work / "ckpt" / "history.jsonl",
    )
    env = launch.rank_env(params.cluster.ranks_per_node, on_gpu=device == "cuda") | {
        "TQDM_DISABLE": "1"
    }
    t0 = time.perf_counter()
    with launch.ReservedPort() as port:
        cmd = launch.launch_command(params.cluster, args, master_port=port)
        proc = launch.run_ranks(cmd, env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(
            f"pretrain worker ({world} rank(s)) failed:\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
        )
    return WorkerRun(work, time.perf_counter() - t0)
