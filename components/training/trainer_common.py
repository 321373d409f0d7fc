"""Glue shared by the post-training stages (sft, reward, align) and the HF/TRL `Trainer`.

- `TrackerCallback` forwards the Trainer's logs to the stage's MLflow run (we set
  `report_to=[]`, so MLflow sees exactly what the stage chooses to log, under its own run).
- `trainer_kwargs` is the part of every stage's TRL config that is not a training knob:
  device and precision (`posttrain`: auto → cuda + bf16 on a GPU, cpu + fp32 here), DeepSpeed
  ZeRO on several GPUs, no checkpoints, no integrations, seeds.
- `read_jsonl` / `subsample` / `load_preference_pairs` / `pair_accuracy` / `loss_summary` /
  `trainable_fraction` are the small pure helpers the stages share;
- `drop_bad_pairs` removes preference pairs no method can learn from, counting each reason;
- `atomic_model_dir` writes a model directory so a failed run never leaves a half-written one
  at the DVC output path;
- `Trained` is what a stage's training step returns (in this process, or from rank 0 of the
  ranks `posttrain_worker` launches); `save_trained` writes the trained model from either
  (with LoRA: the adapter, which the stage merges with `adapters.write_merged`).
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft import PeftModel
from torch import nn
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback
from transformers.trainer import TRAINING_ARGS_NAME

from components.atomic import atomic_dir
from components.tracking.stage_run import Tracker
from components.training.trainer_args import (  # noqa: F401 - the stages import them from here
    AUTO_DEVICE,
    LOGGING_STEPS,
    trainer_kwargs,
)

log = logging.getLogger(__name__)


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


# Why a preference pair is dropped before training (metric keys `dropped.<reason>`).
DROP_IDENTICAL = "identical_chosen_rejected"  # no preference to learn
DROP_EMPTY = "empty_completion"  # a blank chosen or rejected answer
DROP_LONG_PROMPT = "prompt_too_long"  # prompt + assistant header leave no room in max_length
DROP_REASONS = (DROP_IDENTICAL, DROP_EMPTY, DROP_LONG_PROMPT)


def pair_problem(
    pair: dict[str, Any], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> str | None:
    """The reason to drop `pair` (one of DROP_REASONS), or None to keep it."""
    chosen, rejected = (pair[k][0]["content"] for k in ("chosen", "rejected"))
    if not chosen.strip() or not rejected.strip():
        return DROP_EMPTY
    if chosen.strip() == rejected.strip():
        return DROP_IDENTICAL
    prompt_ids = tokenizer.apply_chat_template(
        pair["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    if len(prompt_ids) >= max_length:
        return DROP_LONG_PROMPT
    return None


def drop_bad_pairs(
    pairs: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, max_length: int, what: str
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(kept pairs, count per reason in DROP_REASONS); never drops silently: logs the counts."""
    kept: list[dict[str, Any]] = []
    dropped = dict.fromkeys(DROP_REASONS, 0)
    for pair in pairs:
        reason = pair_problem(pair, tokenizer, max_length)
        if reason is None:
            kept.append(pair)
        else:
            dropped[reason] += 1
    if any(dropped.values()):
        log.warning(
            "%s: dropped %d of %d pairs: %s", what, len(pairs) - len(kept), len(pairs), dropped
        )
    if not kept:
        raise ValueError(
            f"{what}: every pair was dropped ({dropped}); check the data and max_length"
        )
    return kept, dropped


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


def merged(model: nn.Module) -> nn.Module:
    """Fold LoRA adapters into the base weights; a plain model is returned unchanged."""
    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model


@dataclass(frozen=True)
class Trained:
    """A training step's outcome: the stage's metrics and the Trainer's log history (rank 0's
    when the step ran on several ranks; the stage logs it to MLflow)."""

    metrics: dict[str, float | int]
    log_history: list[dict[str, Any]] = field(default_factory=list)


def zero_stage_run(trainer: Trainer) -> int:
    """The ZeRO stage the DeepSpeed engine ran (0: no DeepSpeed); call after `train()`."""
    return trainer.deepspeed.zero_optimization_stage() if trainer.is_deepspeed_enabled else 0


# Where a training step leaves a LoRA adapter inside the model directory it writes
# (`save_trained`); the stage merges it (`adapters.write_merged`), moves it out, registers both.
ADAPTER_SUBDIR = "adapter"


def save_trained(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Write the trained model and tokenizer to `out` as a plain transformers directory; a LoRA
    model (a PeftModel) writes only its adapter, in `out/ADAPTER_SUBDIR` (the stage then merges
    it onto its base in its own process: `adapters.write_merged`).

    Under DeepSpeed every rank must call this: `Trainer.save_model` gathers the ZeRO-3 shards
    (`stage3_gather_16bit_weights_on_model_save`) collectively and rank 0 writes them; for a
    PeftModel PEFT keeps only the adapter's tensors of that gathered state dict. The merge is
    not done on the ranks: while the Trainer's ZeRO-3 config is alive, loading the base there
    would partition it across ranks (zero.Init), a collective rank 0 would enter alone."""
    target = out / ADAPTER_SUBDIR if isinstance(trainer.model, PeftModel) else out
    if trainer.is_deepspeed_enabled:
        trainer.save_model(str(target))
        if not trainer.is_world_process_zero():
            return
        (target / TRAINING_ARGS_NAME).unlink(missing_ok=True)  # a pickle, not part of the model
    else:
        trainer.model.save_pretrained(target)  # safetensors (all transformers 5 writes)
    tokenizer.save_pretrained(target)
