"""Pretraining checkpoints: which ones may be resumed, and resuming them.

A checkpoint directory belongs to one training setup (model, optimiser, data, seed: the
fingerprint) and one rank count (ZeRO keeps a shard per rank). Anything else is refused or
cleared before DeepSpeed touches it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Protocol

import torch.distributed as dist

from components.config import ModelParams, PretrainParams

log = logging.getLogger("pretrain")
FINGERPRINT_FILE = "fingerprint.txt"
WORLD_FILE = "world_size.txt"


class SetupParams(Protocol):
    @property
    def seed(self) -> int: ...
    @property
    def model(self) -> ModelParams: ...
    @property
    def pretrain(self) -> PretrainParams: ...


def fingerprint(params: SetupParams, data_dir: Path, init_hash: str = "") -> str:
    """What makes two runs the same training setup (and their checkpoints interchangeable);
    `init_hash`: the content hash of the checkpoint the weights start from ("" from scratch)."""
    ident = {
        "model": params.model.model_dump(mode="json"),
        "pretrain": params.pretrain.model_dump(
            mode="json", exclude={"eval_every", "checkpoint_every"}
        ),
        "seed": params.seed,
        "data": json.loads((data_dir / "index.json").read_text()),
    } | ({"init": init_hash} if init_hash else {})
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


class WorldSizeChanged(RuntimeError):
    """Checkpoints written by a different number of ranks."""


def check_world_size(ckpt_dir: Path, world: int) -> None:
    """ZeRO checkpoints hold one shard per rank; loading them with another rank count fails deep
    inside DeepSpeed, so say it first and say what to do."""
    saved = ckpt_dir / WORLD_FILE
    if (ckpt_dir / "latest").exists() and saved.exists() and int(saved.read_text()) != world:
        raise WorldSizeChanged(
            f"the checkpoints in {ckpt_dir} were written by {saved.read_text()} ranks but this "
            f"run has {world}. Resume with cluster.nodes × cluster.ranks_per_node = "
            f"{saved.read_text()}, or convert the last checkpoint to DeepSpeed's universal "
            f"format (python -m deepspeed.checkpoint.ds_to_universal), or delete {ckpt_dir} "
            f"to start over."
        )


def prepare_checkpoints(
    ckpt_dir: Path, fingerprint: str, rank: int, world: int, history: Path
) -> None:
    """Checkpoints (and step history) of a different setup must not be resumed: clear them."""
    if rank == 0:
        marker = ckpt_dir / FINGERPRINT_FILE
        resumable = (ckpt_dir / "latest").exists()
        if resumable and (not marker.exists() or marker.read_text() != fingerprint):
            log.warning(
                "checkpoints in %s belong to another setup (params or data changed); "
                "starting fresh",
                ckpt_dir,
            )
            for tag in ckpt_dir.glob("step*"):
                shutil.rmtree(tag)
            (ckpt_dir / "latest").unlink()
            history.unlink(missing_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    check_world_size(ckpt_dir, world)  # every rank raises, so none waits at the barrier
    if rank == 0:
        marker.write_text(fingerprint)
        (ckpt_dir / WORLD_FILE).write_text(str(world))
    dist.barrier()


def resume_step(engine, ckpt_dir: Path) -> int:
    if not (ckpt_dir / "latest").exists():
        return 0
    path, client_state = engine.load_checkpoint(str(ckpt_dir))
    if path is None:
        raise RuntimeError(f"could not load the checkpoint named in {ckpt_dir / 'latest'}")
    step = int(client_state["step"])
    log.info("resumed from %s at step %d", path, step)
    return step


def prune_checkpoints(ckpt_dir: Path, keep: int = 2) -> None:
    tags = sorted((p for p in ckpt_dir.glob("step*") if p.is_dir()), key=lambda p: int(p.name[4:]))
    for old in tags[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
