"""pretrain stage: launch DeepSpeed ZeRO-3 ranks, then plot, log and register the base model.

On this CPU machine the ranks are processes on DeepSpeed's CPU accelerator talking over gloo;
on a GPU cluster the same launcher runs one rank per GPU over NCCL (see infra/).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from components.atomic import replace_dir
from components.config import Params
from components.constants import MODEL_BASE
from components.stage import StageResult
from components.tracking.stage_run import Tracker
from components.training.ds_config import deepspeed_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    data: Path         # packed directory
    tokenizer: Path
    params_file: Path  # the params.yaml the ranks read
    checkpoints: Path  # persistent across runs: resume point
    out: Path          # consolidated HF model directory
    history: Path      # per-step CSV (DVC plots)
    plot: Path         # loss curve PNG
    metrics: Path


def fingerprint(params: Params, data_dir: Path) -> str:
    """What makes two runs the same training setup (and their checkpoints interchangeable)."""
    ident = {
        "model": params.model.model_dump(mode="json"),
        "pretrain": params.pretrain.model_dump(mode="json", exclude={"eval_every",
                                                                     "checkpoint_every"}),
        "seed": params.seed,
        "data": json.loads((data_dir / "index.json").read_text()),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(world_size: int, port: int, worker_args: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "deepspeed.launcher.runner",
        "--num_accelerators", str(world_size),
        "--master_port", str(port),
        "--module", "components.training.pretrain_worker",
        *worker_args,
    ]


def launch_env(world_size: int, on_gpu: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not on_gpu:
        env["DS_ACCELERATOR"] = "cpu"
        # One intra-op thread pool per rank, sized so ranks don't oversubscribe the cores.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world_size)))
    return env


def read_history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_history_csv(rows: list[dict], path: Path) -> None:
    keys = ["step", "train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in keys})


def plot_losses(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["train_loss"] for r in rows], label="train")
    val = [r for r in rows if "val_loss" in r]
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("pretraining loss")
    ax.legend()
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def run(params: Params, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.pretrain
    on_gpu = torch.cuda.is_available()
    world = cfg.world_size
    ds_config = deepspeed_config(cfg, world, "cuda" if on_gpu else "cpu")
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    ds_config_path = paths.checkpoints / "ds_config.json"
    ds_config_path.write_text(json.dumps(ds_config, indent=2))
    tracker.log_artifact(ds_config_path, "deepspeed")

    tmp_out = paths.out.with_name(paths.out.name + ".tmp")
    shutil.rmtree(tmp_out, ignore_errors=True)
    history = paths.checkpoints / "history.jsonl"
    fp = fingerprint(params, paths.data)
    if history.exists() and not (paths.checkpoints / "latest").exists():
        history.unlink()  # a run that never checkpointed restarts from step 0
    worker_args = [
        "--params", str(paths.params_file), "--data", str(paths.data),
        "--tokenizer", str(paths.tokenizer), "--ds-config", str(ds_config_path),
        "--checkpoints", str(paths.checkpoints), "--fingerprint", fp,
        "--out", str(tmp_out), "--history", str(history), "--mlflow-run-id", tracker.run_id,
    ]
    cmd = launch_command(world, free_port(), worker_args)
    log.info("launching %d DeepSpeed ranks: %s", world, " ".join(cmd))
    proc = subprocess.run(cmd, env=launch_env(world, on_gpu))
    if proc.returncode != 0:
        raise RuntimeError(
            f"DeepSpeed pretraining exited with code {proc.returncode} (see the rank logs "
            f"above). Re-running the stage resumes from the last checkpoint in "
            f"{paths.checkpoints}."
        )

    # Keep the last record per step: a resumed run re-logs the steps after its checkpoint.
    rows = sorted({r["step"]: r for r in read_history(history)}.values(),
                  key=lambda r: r["step"])
    write_history_csv(rows, paths.history)
    plot_losses(rows, paths.plot)
    tracker.log_artifact(paths.plot, "plots")
    replace_dir(tmp_out, paths.out)
    tracker.register_model(paths.out, MODEL_BASE, data_path=paths.data)

    first, last = rows[0], rows[-1]
    vals = [r for r in rows if "val_loss" in r]
    n_params = count_parameters(paths.out)
    return StageResult(metrics={
        "steps": last["step"],
        "train_loss_first": round(first["train_loss"], 4),
        "train_loss_last": round(last["train_loss"], 4),
        "val_loss": round(vals[-1]["val_loss"], 4),
        "val_perplexity": round(vals[-1]["val_perplexity"], 3),
        "tokens_per_s_mean": round(sum(r["tokens_per_s"] for r in rows) / len(rows), 1),
        "world_size": world,
        "zero_stage": cfg.zero_stage,
        "parameters": n_params,
    })


def count_parameters(model_dir: Path) -> int:
    from math import prod

    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        return sum(prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 - safe_open is not a dict
