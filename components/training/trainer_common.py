"""Glue shared by the post-training stages (sft, reward, align) and the HF/TRL `Trainer`.

- `TrackerCallback` forwards the Trainer's logs to the stage's MLflow run (we set
  `report_to=[]`, so MLflow sees exactly what the stage chooses to log, under its own run).
- `trainer_kwargs` is the part of every stage's TRL config that is not a training knob:
  device and precision (`posttrain`: auto → cuda + bf16 on a GPU, cpu + fp32 here), DeepSpeed
  ZeRO on several GPUs, no checkpoints, no integrations, seeds.
- `read_jsonl` / `subsample` / `load_preference_pairs` / `pair_accuracy` / `loss_summary` /
  `trainable_fraction` are the small pure helpers the stages share;
- `atomic_model_dir` writes a model directory so a failed run never leaves a half-written one
  at the DVC output path.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn
from transformers import TrainerCallback

from components.atomic import atomic_dir
from components.config import PostTrainParams
from components.tracking.stage_run import Tracker
from components.training.accelerator import resolve_device, resolve_precision
from components.training.ds_config import trainer_deepspeed_config

# Log every optimizer step: the runs are short, and first/last loss must exist even when an
# epoch has fewer steps than TRL's default logging interval (10).
LOGGING_STEPS = 1
# `posttrain` at its defaults (device and precision auto), for callers without params.
AUTO_DEVICE = PostTrainParams()


class TrackerCallback(TrainerCallback):
    """Send every numeric value the Trainer logs to the stage's MLflow run, at the global step."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def on_log(self, args, state, control, logs: Mapping[str, Any] | None = None, **kwargs):
        if logs:
            self.tracker.log_metrics(
                {k: v for k, v in logs.items() if isinstance(v, int | float)},
                step=state.global_step,
            )


def trainer_kwargs(scratch: Path, seed: int, cfg: PostTrainParams) -> dict[str, Any]:
    """TrainingArguments shared by all post-training stages: device, precision and (on several
    GPUs) DeepSpeed from `posttrain`; no checkpoints, no integrations, seeds."""
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    kwargs: dict[str, Any] = {
        "output_dir": str(scratch),  # trainer scratch only; the model is saved by the stage
        "use_cpu": device == "cpu",
        # bf16 autocast over fp32 master weights (the stages load fp32); TRL defaults it on.
        "bf16": precision == "bf16",
        "fp16": False,
        "gradient_checkpointing": cfg.gradient_checkpointing,  # TRL defaults it on
        "report_to": [],
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": LOGGING_STEPS,
        "dataloader_num_workers": 0,
        "seed": seed,
        "data_seed": seed,
    }
    if device == "cuda" and cfg.zero_stage > 0 and launched_world_size() > 1:
        kwargs["deepspeed"] = trainer_deepspeed_config(cfg, device)
    return kwargs


def launched_world_size() -> int:
    """Ranks started by a launcher (torchrun, deepspeed, accelerate set WORLD_SIZE); 1 alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def cpu_trainer_kwargs(scratch: Path, seed: int) -> dict[str, Any]:
    """The CPU/fp32 arguments whatever the machine (tests that pin numbers use it)."""
    return trainer_kwargs(scratch, seed, PostTrainParams(device="cpu", precision="fp32"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}:{n}: not valid JSON ({err.msg}); re-run the stage that wrote it"
                ) from None
    if not rows:
        raise ValueError(f"{path} has no examples; re-run the stage that wrote it")
    return rows


def subsample(
    rows: list[dict[str, Any]], max_examples: int | None, seed: int
) -> list[dict[str, Any]]:
    """At most `max_examples` rows, chosen by `seed`, in file order (None keeps them all)."""
    if max_examples is None or max_examples >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), max_examples))
    return [rows[i] for i in keep]


def require_keys(rows: list[dict[str, Any]], keys: tuple[str, ...], path: Path) -> None:
    for n, row in enumerate(rows, 1):
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"{path}: example {n} lacks {missing}; expected keys {list(keys)}")


PAIR_KEYS = ("prompt", "chosen", "rejected")


def load_preference_pairs(path: Path, max_examples: int | None, seed: int) -> list[dict[str, Any]]:
    """Rows in TRL's conversational preference format: `prompt` (messages), `chosen` and
    `rejected` (one assistant message each); other keys (id, task) are dropped."""
    rows = subsample(read_jsonl(path), max_examples, seed)
    require_keys(rows, PAIR_KEYS, path)
    for n, row in enumerate(rows, 1):
        for key in ("chosen", "rejected"):
            if [m.get("role") for m in row[key]] != ["assistant"]:
                raise ValueError(
                    f"{path}: example {n} (id {row.get('id')!r}): `{key}` must be "
                    "a list with exactly one assistant message (TRL's "
                    "conversational preference format)"
                )
    return [{k: row[k] for k in PAIR_KEYS} for row in rows]


def pair_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Fraction of pairs whose chosen reward is strictly higher (a tie is not a win)."""
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(
            f"need equally many chosen and rejected rewards, got {len(chosen)} and {len(rejected)}"
        )
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(chosen)


def loss_summary(log_history: list[dict[str, Any]]) -> dict[str, float]:
    """First and last logged training loss (Trainer's per-step logs carry `loss`)."""
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    if not losses:
        raise RuntimeError(
            "the trainer logged no loss: no optimizer step ran "
            "(check the dataset size against batch_size and max_length)"
        )
    return {
        "train_loss_first": round(float(losses[0]), 6),
        "train_loss_last": round(float(losses[-1]), 6),
    }


def trainable_fraction(model: nn.Module) -> float:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable / total


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """Trainer output_dir outside the DVC outputs, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"llmops-{prefix}-") as d:
        yield Path(d)


atomic_model_dir = atomic_dir  # the name the stages use
