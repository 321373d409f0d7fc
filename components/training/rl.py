"""On-policy RL for the align stage (`align.method: grpo | rloo`): TRL's GRPOTrainer/RLOOTrainer
from the SFT model, with the weighted rewards of `components.training.rl_rewards`.

Each step samples `rl.num_generations` completions per prompt (temperature `rl.temperature`,
at most `rl.max_completion_length` tokens), scores them, and pushes the policy toward the
completions that beat their group (GRPO: group-normalised advantage; RLOO: leave-one-out
baseline), with a KL penalty `align.beta` to the frozen SFT model. Generation runs through vLLM
(colocated) on a GPU when `rl.use_vllm` allows, through transformers' `generate` otherwise.

`heldout_scores` measures the policy greedily on held-out prompts (prefs_test, never trained
on): the verifiable accuracy and the weighted reward, before and after RL.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from components.chat import stop_token_ids
from components.config import AlignParams, PostTrainParams
from components.modeling.generate import generate_greedy
from components.training import adapters
from components.training.accelerator import resolve_device
from components.training.rl_rewards import RewardFunc, correct
from components.training.trainer_common import AUTO_DEVICE, trainer_kwargs

TRAINERS = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}
Row = dict[str, Any]


def rl_prompts(pairs: Sequence[Row]) -> list[Row]:
    """Prompts with their verifiable answer (the chosen completion of a task pair)."""
    return [{"prompt": p["prompt"], "answer": p["chosen"][0]["content"]} for p in pairs]


def vllm_enabled(setting: str, posttrain: PostTrainParams) -> bool:
    """vLLM generation: `on` always (TRL fails clearly without vLLM), `auto` on a GPU with vLLM
    installed, never on CPU (TRL's colocated vLLM needs CUDA)."""
    if setting != "auto":
        return setting == "on"
    on_gpu = resolve_device(posttrain.device) == "cuda"
    return on_gpu and importlib.util.find_spec("vllm") is not None


def rl_config(
    cfg: AlignParams,
    weights: list[float],
    scratch: Path,
    seed: int,
    posttrain: PostTrainParams = AUTO_DEVICE,
) -> GRPOConfig | RLOOConfig:
    config_cls, _ = TRAINERS[cfg.method]
    return config_cls(
        **trainer_kwargs(scratch, seed, posttrain),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,  # completions, i.e. whole groups
        beta=cfg.beta,
        num_generations=cfg.rl.num_generations,
        max_completion_length=cfg.rl.max_completion_length,
        temperature=cfg.rl.temperature,
        reward_weights=weights,
        use_vllm=vllm_enabled(cfg.rl.use_vllm, posttrain),
        vllm_mode="colocate",  # one process: no separate `trl vllm-serve` to manage
    )


def build_rl_trainer(
    policy: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    reward_funcs: list[RewardFunc],
    weights: list[float],
    prompts: list[Row],
    cfg: AlignParams,
    scratch: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
    posttrain: PostTrainParams = AUTO_DEVICE,
) -> GRPOTrainer | RLOOTrainer:
    _, trainer_cls = TRAINERS[cfg.method]
    # Completions end at the end of the assistant turn, as in serving.
    policy.generation_config.eos_token_id = stop_token_ids(tokenizer)
    return trainer_cls(
        model=policy,  # without LoRA the reference (beta > 0) is a second load of the SFT model
        reward_funcs=reward_funcs,
        args=rl_config(cfg, weights, scratch, seed, posttrain),
        train_dataset=Dataset.from_list(prompts),
        processing_class=tokenizer,
        callbacks=callbacks,
        # With LoRA the reference is the policy with its adapters disabled (no second copy).
        peft_config=adapters.lora_config(cfg.lora),
    )


def heldout_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Row],
    reward_funcs: Sequence[RewardFunc],
    weights: Sequence[float],
    max_new_tokens: int,
    batch_size: int,
) -> dict[str, float]:
    """Greedy accuracy (the `correct` rule), per task where rows carry a `task`, weighted
    reward and each reward's mean."""
    prompts = [r["prompt"] for r in rows]
    answers = [r["answer"] for r in rows]
    texts = generate_greedy(model, tokenizer, prompts, max_new_tokens, batch_size)
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    n = len(rows)
    right = correct(completions, answers)
    scores = {"accuracy": sum(right) / n}
    for task in sorted({r["task"] for r in rows if "task" in r}):
        hits = [h for h, r in zip(right, rows, strict=True) if r.get("task") == task]
        scores[f"accuracy.{task}"] = sum(hits) / len(hits)
    total = [0.0] * n
    for func, w in zip(reward_funcs, weights, strict=True):
        values = func(prompts=prompts, completions=completions, answer=answers)
        scores[f"reward.{func.__name__}"] = sum(values) / n
        total = [t + w * v for t, v in zip(total, values, strict=True)]
    scores["reward"] = sum(total) / n
    scores["completion_chars"] = sum(len(t) for t in texts) / n
    return {k: round(v, 6) for k, v in scores.items()}


def log_series(log_history: list[Row], key: str) -> dict[str, float]:
    """First and last logged value of `key` (e.g. TRL's per-step `reward`, `kl`)."""
    values = [float(e[key]) for e in log_history if key in e]
    if not values:
        return {}
    return {f"train_{key}_first": round(values[0], 6), f"train_{key}_last": round(values[-1], 6)}
