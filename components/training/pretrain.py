"""pretrain stage: launch DeepSpeed ranks, then plot, log and register the base model.

The ZeRO stage is `pretrain.zero_stage`, or with `auto` the planner's cheapest stage that fits
the cluster (one rank or small model states: ZeRO-0, plain data parallelism; a GPU-sized model
on few GPUs: ZeRO-3). The stage is resolved here, written into the ds_config the ranks read,
and recorded in run_settings.json, the metrics and MLflow.

On this CPU machine the ranks are processes on DeepSpeed's CPU accelerator talking over gloo;
on a GPU cluster the same launcher runs one rank per GPU over NCCL (see infra/).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer

from components.atomic import replace_dir
from components.constants import CHECKPOINT_RECORD, MODEL_BASE
from components.modeling import checkpoint
from components.modeling.io import count_parameters
from components.stage import StageResult
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import Tracker
from components.training import launch, step_metrics
from components.training.accelerator import Device
from components.training.ds_config import deepspeed_config
from components.training.pretrain_worker import (  # the ranks read exactly these Reads
    SETTINGS_FILE,
    Reads,
)
from components.training.sizing import StageChoice, plan_for, zero_stage_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    data: Path  # packed directory
    tokenizer: Path
    init: Path  # checkpoint stage output (models/init): scratch, or the weights to continue
    params_file: Path  # the params.yaml the ranks read
    checkpoints: Path  # persistent across runs: resume point
    out: Path  # consolidated HF model directory
    history: Path  # per-step CSV (DVC plots)
    plot: Path  # loss curve PNG
    metrics: Path


def read_history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_history_csv(rows: list[dict], path: Path) -> None:
    keys = ["step", "train_loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "mfu"]
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
    ax.set_title(
        "pretraining loss" if rows else "pretraining loss: no steps (the checkpoint as is)"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def register_checkpoint(paths: Paths, tracker: Tracker, init: checkpoint.Checkpoint) -> StageResult:
    """`pretrain.max_steps: 0`: the checkpoint itself, untrained, is the base version."""
    tmp_out = paths.out.with_name(paths.out.name + ".tmp")
    shutil.rmtree(tmp_out, ignore_errors=True)
    shutil.copytree(paths.init, tmp_out, ignore=shutil.ignore_patterns(CHECKPOINT_RECORD))
    tokenizer = AutoTokenizer.from_pretrained(paths.tokenizer)  # the tokenizer stage's copy
    vocab = AutoConfig.from_pretrained(tmp_out).vocab_size
    if len(tokenizer) > vocab:
        raise ValueError(
            f"the tokenizer ({len(tokenizer)} tokens) has tokens the checkpoint's {vocab} "
            "embeddings lack (ChatML's, added because it has no chat template): set "
            "pretrain.max_steps >= 1 so pretraining learns them"
        )
    tokenizer.save_pretrained(tmp_out)
    replace_dir(tmp_out, paths.out)
    # Every output dvc.yaml declares must exist, or DVC fails the stage: no resume point (no
    # launch), no steps in the loss history and its plot.
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    write_history_csv([], paths.history)
    plot_losses([], paths.plot)
    register_model_dir(tracker, paths.out, MODEL_BASE, data_path=paths.data, init=init.tags())
    return StageResult(metrics={"steps": 0, "parameters": count_parameters(paths.out)})


@dataclass(frozen=True)
class RankLaunch:
    """What the ranks run with: assembled once, for the stage and for `llmops launch render`."""

    params: Reads  # `model:` shaped from the checkpoint when there is one (what is sized)
    stage: StageChoice  # the ZeRO stage, `auto` resolved
    ds_config: dict[str, Any]
    worker_args: list[str]
    tmp_out: Path  # where the ranks write the model; renamed to `out` once they succeed
    history: Path  # the ranks' per-step JSONL


def assemble_launch(
    params: Reads,
    *,
    data: Path,
    tokenizer: Path,
    init: Path,
    params_file: Path,
    checkpoints: Path,
    out: Path,
    ds_config_path: Path,
    device: Device,
    mlflow_run_id: str = "",
) -> RankLaunch:
    """The ZeRO stage (`auto`: the planner's cheapest that fits this cluster, at the trained
    tokenizer's vocabulary when it exists), its ds_config and the worker's arguments."""
    # A launch rendered before the checkpoint stage ran has no record yet: `model:` as written.
    if (init / CHECKPOINT_RECORD).exists():
        params = params.model_copy(update={"model": checkpoint.model_params(params.model, init)})
    stage = zero_stage_for(params, tokenizer, device)
    ds_config = deepspeed_config(
        params.pretrain, params.cluster.world_size, device, zero_stage=stage.zero_stage
    )
    tmp_out = out.with_name(out.name + ".tmp")
    history = checkpoints / "history.jsonl"
    args = launch.worker_args(
        params_file=params_file,
        data=data,
        tokenizer=tokenizer,
        init=init,
        ds_config=ds_config_path,
        checkpoints=checkpoints,
        out=tmp_out,
        history=history,
        mlflow_run_id=mlflow_run_id,
    )
    return RankLaunch(params, stage, ds_config, args, tmp_out, history)


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    init = checkpoint.read(paths.init)
    if params.pretrain.max_steps == 0:
        return register_checkpoint(paths, tracker, init)
    on_gpu = torch.cuda.is_available()
    ranks = assemble_launch(
        params,
        data=paths.data,
        tokenizer=paths.tokenizer,
        init=paths.init,
        params_file=paths.params_file,
        checkpoints=paths.checkpoints,
        out=paths.out,
        ds_config_path=paths.checkpoints / "ds_config.json",
        device="cuda" if on_gpu else "cpu",
        mlflow_run_id=tracker.run_id,
    )
    params, stage, tmp_out, history = ranks.params, ranks.stage, ranks.tmp_out, ranks.history
    cluster = params.cluster
    world = cluster.world_size
    log.info("ZeRO stage: %s", stage.reason)
    tracker.set_tags({"zero_stage": str(stage.zero_stage), "zero_stage_reason": stage.reason})
    paths.checkpoints.mkdir(parents=True, exist_ok=True)
    ds_config_path = paths.checkpoints / "ds_config.json"
    ds_config_path.write_text(json.dumps(ranks.ds_config, indent=2))
    tracker.log_artifact(ds_config_path, "deepspeed")
    plan = plan_for(params, paths.tokenizer, precision="mixed" if on_gpu else "fp32")
    plan_path = paths.checkpoints / "plan.json"
    plan_path.write_text(json.dumps(plan.to_dict() | {"zero_stage_used": asdict(stage)}, indent=2))
    tracker.log_artifact(plan_path, "deepspeed")
    for reason in plan.reasons:
        log.info("planner: %s", reason)

    shutil.rmtree(tmp_out, ignore_errors=True)
    step_metrics.backfill(history)  # what an earlier attempt's ranks could not send
    if history.exists() and not (paths.checkpoints / "latest").exists():
        history.unlink()  # a run that never checkpointed restarts from step 0
    hostfile = None
    if cluster.nodes > 1:
        hostfile = paths.checkpoints / launch.HOSTFILE
        hostfile.write_text(launch.hostfile_text(cluster))
    # One node: a free port, held until the ranks are done (parallel runs on one machine); a
    # cluster: the agreed port.
    one_node = cluster.nodes == 1
    with launch.ReservedPort() if one_node else contextlib.nullcontext(cluster.master_port) as port:
        cmd = launch.launch_command(cluster, ranks.worker_args, master_port=port, hostfile=hostfile)
        log.info("launching %d DeepSpeed ranks: %s", world, " ".join(cmd))
        proc = launch.run_ranks(cmd, launch.rank_env(cluster.ranks_per_node, on_gpu))
    if proc.returncode != 0:
        raise RuntimeError(
            f"DeepSpeed pretraining exited with code {proc.returncode} (see the rank logs "
            f"above). Re-running the stage resumes from the last checkpoint in "
            f"{paths.checkpoints}."
        )
    # The ranks never wait for MLflow; what they could not send is sent from here.
    step_metrics.backfill(history)

    # Keep the last record per step: a resumed run re-logs the steps after its checkpoint.
    rows = sorted({r["step"]: r for r in read_history(history)}.values(), key=lambda r: r["step"])
    write_history_csv(rows, paths.history)
    plot_losses(rows, paths.plot)
    tracker.log_artifact(paths.plot, "plots")
    tracker.log_artifact(paths.checkpoints / SETTINGS_FILE, "deepspeed")
    replace_dir(tmp_out, paths.out)
    register_model_dir(tracker, paths.out, MODEL_BASE, data_path=paths.data, init=init.tags())

    first, last = rows[0], rows[-1]
    vals = [r for r in rows if "val_loss" in r]
    n_params = count_parameters(paths.out)
    return StageResult(
        metrics={
            "steps": last["step"],
            "train_loss_first": round(first["train_loss"], 4),
            "train_loss_last": round(last["train_loss"], 4),
            "val_loss": round(vals[-1]["val_loss"], 4),
            "val_perplexity": round(vals[-1]["val_perplexity"], 3),
            "tokens_per_s_mean": round(sum(r["tokens_per_s"] for r in rows) / len(rows), 1),
            "mfu_mean": round(sum(r.get("mfu", 0.0) for r in rows) / len(rows), 5),
            "world_size": world,
            "zero_stage": stage.zero_stage,  # as run (auto: the planner's choice)
            "parameters": n_params,
            "tokens_per_parameter": plan.tokens_per_parameter,
            "chinchilla_fraction": round(plan.tokens / plan.chinchilla_tokens, 4),
            "training_flops": plan.training_flops,
        }
    )
