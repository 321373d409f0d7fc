"""reward stage: a scalar reward model trained on preference pairs with TRL's RewardTrainer.

Setup -> train -> evaluate -> save, top to bottom:
1. read preference rows in TRL's conversational format (`prompt`: messages, `chosen`/`rejected`:
   one assistant message each), subsample `reward.max_examples` by seed; drop pairs with
   identical or empty completions or a prompt that fills `max_length` (the align stage's
   `drop_bad_pairs`), counted per reason in the metrics (`dropped.*`, `dropped_test.*`);
2. the base causal LM becomes `AutoModelForSequenceClassification` with one label (a new, seeded
   linear head on the last non-pad token); RewardTrainer minimises -log sigmoid(r_chosen - r_rej);
3. held-out pair accuracy on the test pairs: the fraction where r(chosen) > r(rejected), scored
   by `score` below on the same chat-template tokenization TRL trains on;
4. save model + tokenizer atomically at `out`, register it as `llmops-reward`.

Steps 1-2 are `train`: with `posttrain.ranks` > 1 they run on that many DeepSpeed ranks
(posttrain_worker), rank 0 writing the model; this process scores the saved model on the
held-out pairs, logs and registers it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
    set_seed,
)
from trl import RewardConfig, RewardTrainer

from components.config import PostTrainParams, RewardParams, StageParams
from components.constants import MODEL_REWARD
from components.modeling.io import check_weights
from components.modeling.scoring import score
from components.stage import StageResult
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import Tracker
from components.training.posttrain_worker import train_step
from components.training.trainer_common import (
    AUTO_DEVICE,
    Trained,
    atomic_model_dir,
    drop_bad_pairs,
    load_preference_pairs,
    loss_summary,
    pair_accuracy,
    save_trained,
    scratch_dir,
    trainer_kwargs,
    zero_stage_run,
)

log = logging.getLogger(__name__)


class Reads(StageParams):
    seed: int
    posttrain: PostTrainParams
    reward: RewardParams


@dataclass(frozen=True)
class Paths:
    base: Path  # pretrained model directory (HF format, tokenizer inside)
    train: Path  # prefs_train.jsonl
    test: Path  # prefs_test.jsonl (held out)
    out: Path  # reward model directory
    metrics: Path


def load_reward_model(base: Path, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """The base LM with a fresh scalar head; `pad_token_id` tells it where sequences end."""
    check_weights(base)  # a truncated file is named, with how to restore it
    set_seed(seed)  # the head is randomly initialised
    return AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=1, pad_token_id=tokenizer.pad_token_id, dtype=torch.float32
    )


def reward_config(
    cfg: RewardParams, scratch: Path, seed: int, posttrain: PostTrainParams = AUTO_DEVICE
) -> RewardConfig:
    return RewardConfig(
        **trainer_kwargs(scratch, seed, posttrain),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        max_length=cfg.max_length,  # TRL drops training pairs longer than this
    )


def build_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    cfg: RewardParams,
    scratch: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
    posttrain: PostTrainParams = AUTO_DEVICE,
) -> RewardTrainer:
    return RewardTrainer(
        model=model,
        args=reward_config(cfg, scratch, seed, posttrain),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def evaluate_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    max_length: int,
    batch_size: int,
) -> dict[str, float]:
    chosen = score(
        model, tokenizer, [p["prompt"] + p["chosen"] for p in pairs], max_length, batch_size
    )
    rejected = score(
        model, tokenizer, [p["prompt"] + p["rejected"] for p in pairs], max_length, batch_size
    )
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "test_accuracy": round(pair_accuracy(chosen, rejected), 6),
        "test_margin_mean": round(sum(margins) / len(margins), 6),
    }


def train(
    params: Reads, paths: Paths, out: Path, callbacks: list[TrainerCallback] | None = None
) -> Trained:
    """The training step: fit the reward model and save it to `out`. Runs in the stage's
    process, or on every rank of `posttrain.ranks` (posttrain_worker), rank 0 writing `out`."""
    cfg = params.reward
    tokenizer = AutoTokenizer.from_pretrained(paths.base)
    read = load_preference_pairs(paths.train, cfg.max_examples, params.seed)
    train_pairs, dropped = drop_bad_pairs(read, tokenizer, cfg.max_length, f"reward: {paths.train}")
    model = load_reward_model(paths.base, tokenizer, params.seed)
    with scratch_dir("reward") as scratch:
        trainer = build_trainer(
            model,
            tokenizer,
            train_pairs,
            cfg,
            scratch,
            params.seed,
            callbacks=callbacks,
            posttrain=params.posttrain,
        )
        n_fit = len(trainer.train_dataset)  # pairs within max_length
        result = trainer.train()
        save_trained(trainer, tokenizer, out)
    return Trained(
        metrics={
            **loss_summary(trainer.state.log_history),
            "train_runtime_s": round(float(result.metrics["train_runtime"]), 3),
            "n_examples": len(read),
            "n_train_pairs": n_fit,
            **{f"dropped.{k}": v for k, v in dropped.items()},
            "ranks": params.posttrain.ranks,
            "zero_stage": zero_stage_run(trainer),
        },
        log_history=trainer.state.log_history,
    )


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.reward
    with atomic_model_dir(paths.out) as tmp:
        trained = train_step("reward", params, paths, tmp, tracker)
        # Held-out accuracy of the model as saved (one process, whatever ran the training).
        model = AutoModelForSequenceClassification.from_pretrained(tmp, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        test_pairs, dropped_test = drop_bad_pairs(
            load_preference_pairs(paths.test, None, params.seed),
            tokenizer,
            cfg.max_length,
            f"reward: {paths.test}",
        )
        held_out = evaluate_pairs(model, tokenizer, test_pairs, cfg.max_length, cfg.batch_size)
    log.info(
        "reward: held-out pair accuracy %.3f on %d pairs",
        held_out["test_accuracy"],
        len(test_pairs),
    )
    register_model_dir(
        tracker, paths.out, MODEL_REWARD, data_path=paths.train, parent_dir=paths.base
    )
    return StageResult(
        metrics={
            **trained.metrics,
            **held_out,
            "n_test_pairs": len(test_pairs),
            **{f"dropped_test.{k}": v for k, v in dropped_test.items()},
        }
    )
