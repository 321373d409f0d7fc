"""align stage: Direct Preference Optimization of the SFT model with TRL's DPOTrainer.

Setup -> train -> evaluate -> save, top to bottom:
1. read preference pairs (TRL conversational format), subsample `align.max_examples` by seed;
2. the policy and a frozen reference are two loads of the SFT model; DPOTrainer minimises
   -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))]);
3. held-out preference accuracy of the implicit reward r(x, y) = beta * (log pi - log ref)(y|x)
   on the test pairs, computed by `implicit_rewards` below (exact per pair; TRL's eval metric
   averages per-batch means);
4. save the policy atomically at `out`, register it as `llmops-policy` (parent: the SFT model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)
from trl import DPOConfig, DPOTrainer

from components.config import AlignParams, PostTrainParams, StageParams
from components.constants import MODEL_POLICY
from components.modeling.io import check_weights
from components.stage import StageResult
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import Tracker
from components.training.trainer_common import (
    AUTO_DEVICE,
    TrackerCallback,
    atomic_model_dir,
    load_preference_pairs,
    loss_summary,
    pair_accuracy,
    scratch_dir,
    trainer_kwargs,
)

log = logging.getLogger(__name__)

# params.align.method -> TRL loss_type ("sigmoid" is the loss of the DPO paper).
LOSS_TYPES = {"dpo": "sigmoid"}


class Reads(StageParams):
    seed: int
    posttrain: PostTrainParams
    align: AlignParams


@dataclass(frozen=True)
class Paths:
    sft: Path  # SFT model directory: the policy's start and the frozen reference
    train: Path  # prefs_train.jsonl
    test: Path  # prefs_test.jsonl (held out)
    out: Path  # aligned policy directory
    metrics: Path


def load_policy_and_reference(sft_dir: Path) -> tuple[PreTrainedModel, PreTrainedModel]:
    check_weights(sft_dir)  # a truncated file is named, with how to restore it
    policy = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32).eval()
    reference.requires_grad_(False)
    return policy, reference


def dpo_config(
    cfg: AlignParams, scratch: Path, seed: int, posttrain: PostTrainParams = AUTO_DEVICE
) -> DPOConfig:
    return DPOConfig(
        **trainer_kwargs(scratch, seed, posttrain),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        max_length=cfg.max_length,  # prompt + completion, truncated keeping the start
        beta=cfg.beta,
        loss_type=[LOSS_TYPES[cfg.method]],
    )


def build_trainer(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    cfg: AlignParams,
    scratch: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
    posttrain: PostTrainParams = AUTO_DEVICE,
) -> DPOTrainer:
    return DPOTrainer(
        model=policy,
        ref_model=reference,
        args=dpo_config(cfg, scratch, seed, posttrain),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def split_completion(
    tokenizer: PreTrainedTokenizerBase,
    prompt: list[dict[str, str]],
    completion: list[dict[str, str]],
) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) as DPOTrainer splits them: the completion starts where the
    prompt-with-generation-header and the full conversation stop sharing tokens."""
    prompt_ids = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)[
        "input_ids"
    ]
    n = 0
    while n < min(len(prompt_ids), len(full)) and prompt_ids[n] == full[n]:
        n += 1
    return full[:n], full[n:]


@torch.no_grad()
def completion_logp(
    model: PreTrainedModel, prompt_ids: list[int], completion_ids: list[int], max_length: int
) -> float:
    """Sum of log p(completion token | prefix), on the sequence truncated to `max_length`."""
    ids = torch.tensor([(prompt_ids + completion_ids)[:max_length]])  # (1, T)
    if ids.shape[1] <= len(prompt_ids):
        return 0.0  # the completion was truncated away (TRL drops such training pairs)
    logps = model(input_ids=ids).logits[0, :-1].log_softmax(-1)  # (T-1, V): predicts ids[1:]
    token_logps = logps.gather(-1, ids[0, 1:, None])[:, 0]  # (T-1,)
    return float(token_logps[len(prompt_ids) - 1 :].sum())


def implicit_rewards(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    beta: float,
    max_length: int,
) -> tuple[list[float], list[float]]:
    """beta * (log pi - log ref) of each pair's chosen and rejected completion."""
    policy.eval()
    rewards: dict[str, list[float]] = {"chosen": [], "rejected": []}
    for pair in pairs:
        for key, out in rewards.items():
            p, c = split_completion(tokenizer, pair["prompt"], pair[key])
            out.append(
                beta
                * (
                    completion_logp(policy, p, c, max_length)
                    - completion_logp(reference, p, c, max_length)
                )
            )
    return rewards["chosen"], rewards["rejected"]


def evaluate_pairs(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    beta: float,
    max_length: int,
) -> dict[str, float]:
    chosen, rejected = implicit_rewards(policy, reference, tokenizer, pairs, beta, max_length)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "test_accuracy": round(pair_accuracy(chosen, rejected), 6),
        "test_margin_mean": round(sum(margins) / len(margins), 6),
    }


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.align
    train_pairs = load_preference_pairs(paths.train, cfg.max_examples, params.seed)
    test_pairs = load_preference_pairs(paths.test, None, params.seed)
    tokenizer = AutoTokenizer.from_pretrained(paths.sft)
    policy, reference = load_policy_and_reference(paths.sft)

    with scratch_dir("align") as scratch:
        trainer = build_trainer(
            policy,
            reference,
            tokenizer,
            train_pairs,
            cfg,
            scratch,
            params.seed,
            callbacks=[TrackerCallback(tracker)],
            posttrain=params.posttrain,
        )
        n_fit = len(trainer.train_dataset)  # pairs whose prompt fits in max_length
        result = trainer.train()
    held_out = evaluate_pairs(policy, reference, tokenizer, test_pairs, cfg.beta, cfg.max_length)
    log.info(
        "align: held-out implicit-reward accuracy %.3f on %d pairs",
        held_out["test_accuracy"],
        len(test_pairs),
    )

    with atomic_model_dir(paths.out) as tmp:
        policy.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
    register_model_dir(
        tracker, paths.out, MODEL_POLICY, data_path=paths.train, parent_dir=paths.sft
    )
    return StageResult(
        metrics={
            **loss_summary(trainer.state.log_history),
            **held_out,
            "train_runtime_s": round(float(result.metrics["train_runtime"]), 3),
            "n_examples": len(train_pairs),
            "n_train_pairs": n_fit,
            "n_test_pairs": len(test_pairs),
        }
    )
