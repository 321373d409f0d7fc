"""align stage: preference optimisation or on-policy RL of the SFT model with TRL.

`align.method` picks one of:
- offline preference methods on the preference pairs: `dpo` (DPOTrainer, sigmoid loss), its
  stable `loss_type` variants `ipo`, `hinge` (SLiC), `robust` (rDPO), `apo_zero`, and `kto`
  (KTOTrainer on the pairs unpaired into desirable / undesirable completions);
- on-policy RL on the pairs' prompts: `grpo`, `rloo` (components/training/rl.py), rewarded by
  the verifiable task checks and optionally the reward model (components/training/rl_rewards.py).

Setup -> train -> evaluate -> save, top to bottom:
1. read preference pairs (TRL conversational format), subsample `align.max_examples` by seed;
   drop pairs no method can learn from (identical or empty completions, prompts that fill
   `max_length`), counted per reason in the metrics (`dropped.*`, `dropped_test.*`);
2. the policy and a frozen reference are two loads of the SFT model; e.g. DPO minimises
   -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))]);
3. offline methods: held-out preference accuracy of the implicit reward
   r(x, y) = beta * (log pi - log ref)(y|x) on the test pairs (`implicit_rewards`, exact per
   pair; TRL's eval metric averages per-batch means), greedy task accuracy overall and per task
   on the test prompts (`heldout.accuracy`, `heldout.accuracy.<task>`) and the mean per-token
   KL(pi || ref) along the chosen answers (`heldout.kl`); `align.compare` trains more methods from
   the same SFT model for a comparison table (`methods.<m>.*`), saving only `method`'s policy;
   RL: greedy accuracy and reward on held-out prompts before and after (`heldout_before.*`,
   `heldout_after.*`);
4. save the policy atomically at `out`, register it as `llmops-policy` (parent: the SFT model;
   with a reward-model reward, the reward model's version as the `reward_model` tag).

Steps 1-2 are `train`: with `posttrain.ranks` > 1 they run on that many DeepSpeed ZeRO-3 ranks
(posttrain_worker), rank 0 writing the policy; step 3 measures the saved policy in this process,
one method of `align.compare` after another, so one rank and N ranks are measured alike.

With `align.lora.enabled` every method trains LoRA adapters (with `align.lora.qlora` on a 4-bit
NF4 SFT model) and the reference is the same model with its adapters disabled (no second copy);
the adapter is registered as `llmops-policy-adapter` and the policy evaluated, saved and
registered is the adapter merged into the fp32 SFT model (components/training/adapters.py).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from mlflow import MlflowClient
from tqdm import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, unpair_preference_dataset

from components.config import AlignParams, LoraParams, PostTrainParams, StageParams
from components.constants import MODEL_POLICY, MODEL_POLICY_ADAPTER, TAG_REWARD_MODEL
from components.modeling.io import check_weights
from components.stage import StageResult
from components.tracking import lineage
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import Tracker
from components.training import adapters, rl, rl_rewards
from components.training.posttrain_worker import train_step
from components.training.trainer_common import (
    ADAPTER_SUBDIR,
    AUTO_DEVICE,
    Trained,
    atomic_model_dir,
    drop_bad_pairs,
    load_preference_pairs,
    loss_summary,
    pair_accuracy,
    read_jsonl,
    save_trained,
    scratch_dir,
    trainer_kwargs,
    zero_stage_run,
)

log = logging.getLogger(__name__)

# Offline method -> DPOTrainer loss_type ("sigmoid" is the loss of the DPO paper); kto has its
# own trainer. All are in TRL's stable API (trl.DPOTrainer / trl.KTOTrainer).
LOSS_TYPES = {
    "dpo": "sigmoid",
    "ipo": "ipo",
    "hinge": "hinge",
    "robust": "robust",
    "apo_zero": "apo_zero",
}
RL_METHODS = tuple(rl.TRAINERS)
EVAL_BATCH_SIZE = 16  # prompts per greedy generate() call in the RL before/after measurement


class Reads(StageParams):
    seed: int
    posttrain: PostTrainParams
    align: AlignParams


@dataclass(frozen=True)
class Paths:
    sft: Path  # SFT model directory: the policy's start and the frozen reference
    reward: Path  # reward model directory (an RL reward when align.rl.rewards.reward_model > 0)
    train: Path  # prefs_train.jsonl
    test: Path  # prefs_test.jsonl (held out)
    out: Path  # aligned policy directory
    metrics: Path


def load_reference(sft_dir: Path) -> PreTrainedModel:
    reference = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32).eval()
    return reference.requires_grad_(False)


def dpo_config(
    cfg: AlignParams,
    scratch: Path,
    seed: int,
    posttrain: PostTrainParams = AUTO_DEVICE,
    method: str | None = None,
) -> DPOConfig:
    return DPOConfig(
        **trainer_kwargs(scratch, seed, posttrain),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        max_length=cfg.max_length,  # prompt + completion, truncated keeping the start
        beta=cfg.beta,
        loss_type=[LOSS_TYPES[method or cfg.method]],
    )


def kto_config(
    cfg: AlignParams, scratch: Path, seed: int, posttrain: PostTrainParams = AUTO_DEVICE
) -> KTOConfig:
    if cfg.batch_size < 2:
        raise ValueError(
            "align.method kto needs align.batch_size >= 2: KTO estimates its KL term from "
            "mismatched completions within a batch"
        )
    return KTOConfig(
        **trainer_kwargs(scratch, seed, posttrain),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        beta=cfg.beta,
    )


def unpaired(pairs: list[dict[str, Any]], seed: int) -> Dataset:
    """KTO's data: each pair becomes a desirable (chosen) and an undesirable (rejected) row.

    TRL unpairs in blocks (all chosen, then all rejected); shuffled so that each batch mixes
    both labels, which KTO's sequential sampler then keeps in order.
    """
    return unpair_preference_dataset(Dataset.from_list(pairs)).shuffle(seed=seed)


def build_trainer(
    policy: PreTrainedModel,
    reference: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    cfg: AlignParams,
    scratch: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
    posttrain: PostTrainParams = AUTO_DEVICE,
    method: str | None = None,
) -> DPOTrainer | KTOTrainer:
    """The trainer of an offline method (`method`, default `cfg.method`)."""
    method = method or cfg.method
    if method == "kto":
        return KTOTrainer(
            model=policy,
            ref_model=reference,
            args=kto_config(cfg, scratch, seed, posttrain),
            train_dataset=unpaired(pairs, seed),
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=adapters.lora_config(cfg.lora),
        )
    return DPOTrainer(
        model=policy,
        ref_model=reference,
        args=dpo_config(cfg, scratch, seed, posttrain, method),
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=adapters.lora_config(cfg.lora),  # TRL wraps the policy in a PeftModel
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
    for pair in tqdm(pairs, desc="held-out implicit rewards", unit="pair"):
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


@torch.no_grad()
def token_kl(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    max_length: int,
) -> float:
    """Mean over completion tokens of KL(pi(.|prefix) || ref(.|prefix)), exact over the
    vocabulary, along each pair's chosen answer: how far the method moved from the SFT model."""
    total, n = 0.0, 0
    for pair in tqdm(pairs, desc="held-out token KL", unit="pair"):
        p, c = split_completion(tokenizer, pair["prompt"], pair["chosen"])
        ids = torch.tensor([(p + c)[:max_length]])  # (1, T)
        if ids.shape[1] <= len(p):
            continue
        logp = policy(input_ids=ids).logits[0, len(p) - 1 : -1].log_softmax(-1)  # (C, V)
        logq = reference(input_ids=ids).logits[0, len(p) - 1 : -1].log_softmax(-1)
        total += float((logp.exp() * (logp - logq)).sum())
        n += logp.shape[0]
    return total / max(n, 1)


def heldout_generation(
    policy: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    tasks: list[str],
    cfg: AlignParams,
) -> dict[str, float]:
    """Greedy accuracy (the answer check) overall and per task on the held-out prompts, and
    the token KL to the reference; the same prompts RL's before/after measurement uses."""
    pairs = pairs[: cfg.rl.eval_max_prompts]
    rows = with_tasks(rl.rl_prompts(pairs), tasks)
    scores = rl.heldout_scores(
        policy, tokenizer, rows, [], [], cfg.rl.max_completion_length, EVAL_BATCH_SIZE
    )
    out = {f"heldout.{k}": v for k, v in scores.items() if k.startswith("accuracy")}
    out["heldout.kl"] = round(token_kl(policy, reference, tokenizer, pairs, cfg.max_length), 6)
    return out


def with_tasks(rows: list[dict[str, Any]], tasks: list[str]) -> list[dict[str, Any]]:
    return [{**r, "task": t} for r, t in zip(rows, tasks, strict=False)]


def load_reward_model(reward_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForSequenceClassification.from_pretrained(reward_dir, dtype=torch.float32)
    return model.eval().requires_grad_(False), AutoTokenizer.from_pretrained(reward_dir)


def reward_functions(
    cfg: AlignParams, reward_dir: Path
) -> tuple[list[rl_rewards.RewardFunc], list[float], bool]:
    """(reward functions, weights, whether the reward model is one of them)."""
    uses_rm = cfg.rl.rewards.get(rl_rewards.REWARD_MODEL, 0) != 0
    rm = None
    if uses_rm:
        model, rm_tokenizer = load_reward_model(reward_dir)
        rm = rl_rewards.reward_model_reward(model, rm_tokenizer, cfg.max_length, EVAL_BATCH_SIZE)
    funcs, weights = rl_rewards.weighted_rewards(dict(cfg.rl.rewards), rm)
    return funcs, weights, uses_rm


def load_policy(
    sft_dir: Path, lora: LoraParams, posttrain: PostTrainParams = AUTO_DEVICE
) -> PreTrainedModel:
    check_weights(sft_dir)  # a truncated file is named, with how to restore it
    return adapters.load_trainable(sft_dir, lora, posttrain)


def with_method(params: Reads, method: str) -> Reads:
    """The stage's view with `align.method` set to `method` (one run of `align.compare`)."""
    return params.model_copy(update={"align": params.align.model_copy(update={"method": method})})


def train(
    params: Reads, paths: Paths, out: Path, callbacks: list[TrainerCallback] | None = None
) -> Trained:
    """The training step of `align.method`: train the policy from the SFT model and save it to
    `out` (with LoRA: its adapter in `out/ADAPTER_SUBDIR`). Runs in the stage's process,
    or on every rank of `posttrain.ranks` (posttrain_worker), where rank 0 writes `out`."""
    cfg = params.align
    tokenizer = AutoTokenizer.from_pretrained(paths.sft)
    pairs, dropped = drop_bad_pairs(
        load_preference_pairs(paths.train, cfg.max_examples, params.seed),
        tokenizer,
        cfg.max_length,
        f"align: {paths.train}",
    )
    policy = load_policy(paths.sft, cfg.lora, params.posttrain)
    is_rl = cfg.method in RL_METHODS
    with scratch_dir("align") as scratch:
        if is_rl:
            funcs, weights, _ = reward_functions(cfg, paths.reward)
            trainer = rl.build_rl_trainer(
                policy,
                tokenizer,
                funcs,
                weights,
                rl.rl_prompts(pairs),
                cfg,
                scratch,
                params.seed,
                callbacks=callbacks,
                posttrain=params.posttrain,
            )
        else:
            # With LoRA no second copy: TRL's reference is the policy with adapters disabled.
            reference = None if cfg.lora.enabled else load_reference(paths.sft)
            trainer = build_trainer(
                policy,
                reference,
                tokenizer,
                pairs,
                cfg,
                scratch,
                params.seed,
                callbacks=callbacks,
                posttrain=params.posttrain,
            )
        result = trainer.train()
        save_trained(trainer, tokenizer, out)
    history = trainer.state.log_history
    series = {**rl.log_series(history, "reward"), **rl.log_series(history, "kl")} if is_rl else {}
    return Trained(
        metrics={
            **loss_summary(history),
            **series,
            "train_runtime_s": round(float(result.metrics["train_runtime"]), 3),
            "n_examples": len(pairs) + sum(dropped.values()),
            "n_train_pairs": len(pairs),
            **{f"dropped.{k}": v for k, v in dropped.items()},
            "ranks": params.posttrain.ranks,
            "zero_stage": zero_stage_run(trainer),
        },
        log_history=history,
    )


def finish(params: Reads, paths: Paths, out: Path) -> None:
    """With LoRA, the policy the step left as an adapter in `out` is merged onto the SFT model
    there, in this process: what is measured is what is served."""
    if params.align.lora.enabled:
        adapters.write_merged(paths.sft, out)


def load_trained_policy(model_dir: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@dataclass(frozen=True)
class HeldOut:
    """What a trained policy is measured on, in the stage's process (after the ranks, if any,
    are done): the held-out pairs and their tasks, and the frozen SFT model as reference."""

    tokenizer: PreTrainedTokenizerBase
    reference: PreTrainedModel
    pairs: list[dict[str, Any]]
    tasks: list[str]
    cfg: AlignParams

    def offline(self, policy: PreTrainedModel) -> dict[str, float]:
        """Implicit-reward accuracy and margin, greedy task accuracy and token KL."""
        args = (policy, self.reference, self.tokenizer, self.pairs)
        scores = evaluate_pairs(*args, self.cfg.beta, self.cfg.max_length)
        return scores | heldout_generation(*args, self.tasks, self.cfg)

    def rl_rows(self) -> list[dict[str, Any]]:
        return with_tasks(rl.rl_prompts(self.pairs[: self.cfg.rl.eval_max_prompts]), self.tasks)

    def kl(self, policy: PreTrainedModel) -> float:
        pairs = self.pairs[: self.cfg.rl.eval_max_prompts]
        kl = token_kl(policy, self.reference, self.tokenizer, pairs, self.cfg.max_length)
        return round(kl, 6)


def train_offline(
    params: Reads, paths: Paths, out: Path, tracker: Tracker, held_out: HeldOut
) -> dict[str, float]:
    """`align.method`'s policy trained into `out`; metrics of it and, as `methods.<m>.*`, of
    every method of `align.compare` (each trained from the SFT model into scratch, measured on
    the same held-out pairs, then discarded)."""
    cfg = params.align
    methods = [cfg.method, *(m for m in dict.fromkeys(cfg.compare) if m != cfg.method)]
    table: dict[str, float] = {}
    with scratch_dir("align-methods") as scratch:
        for method in methods:
            main = method == cfg.method
            out_m = out if main else scratch / method
            # Only the served method's steps go to the run's step metrics (same keys otherwise).
            trained = train_step("align", with_method(params, method), paths, out_m,
                                 tracker if main else None)  # fmt: skip
            finish(params, paths, out_m)
            scores = held_out.offline(load_trained_policy(out_m))
            log.info(
                "align %s: held-out implicit-reward accuracy %.3f on %d pairs",
                method,
                scores["test_accuracy"],
                len(held_out.pairs),
            )
            summary = {k: v for k, v in trained.metrics.items() if k.startswith("train_")}
            table.update({f"methods.{method}.{k}": v for k, v in (summary | scores).items()})
            if main:
                metrics = trained.metrics | scores
    return metrics | table


def train_rl(
    params: Reads, paths: Paths, out: Path, tracker: Tracker, held_out: HeldOut
) -> tuple[dict[str, float], bool]:
    """GRPO / RLOO from the SFT model into `out`; (metrics with held-out accuracy and reward
    before and after, whether the reward model rewarded)."""
    cfg = params.align
    funcs, weights, uses_rm = reward_functions(cfg, paths.reward)
    rows = held_out.rl_rows()

    def measure(model: PreTrainedModel) -> dict[str, float]:
        return rl.heldout_scores(
            model, held_out.tokenizer, rows, funcs, weights, cfg.rl.max_completion_length,
            EVAL_BATCH_SIZE,
        )  # fmt: skip

    before = measure(held_out.reference)  # the SFT model
    trained = train_step("align", params, paths, out, tracker)
    finish(params, paths, out)
    policy = load_trained_policy(out)
    after = measure(policy) | {"kl": held_out.kl(policy)}
    log.info(
        "align %s: held-out accuracy %s -> %s", cfg.method, before["accuracy"], after["accuracy"]
    )
    return {
        **trained.metrics,
        **{f"heldout_before.{k}": v for k, v in before.items()},
        **{f"heldout_after.{k}": v for k, v in after.items()},
        "n_eval_prompts": len(rows),
    }, uses_rm


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.align
    tokenizer = AutoTokenizer.from_pretrained(paths.sft)
    test_pairs, dropped_test = drop_bad_pairs(
        load_preference_pairs(paths.test, None, params.seed),
        tokenizer,
        cfg.max_length,
        f"align: {paths.test}",
    )
    check_weights(paths.sft)
    held_out = HeldOut(
        tokenizer, load_reference(paths.sft), test_pairs, task_names(paths.test, test_pairs), cfg
    )
    uses_rm = False
    with scratch_dir("align-adapter") as adapter_root:
        adapter_dir = adapter_root / ADAPTER_SUBDIR
        with atomic_model_dir(paths.out) as tmp:
            if cfg.method in RL_METHODS:
                metrics, uses_rm = train_rl(params, paths, tmp, tracker, held_out)
            else:
                metrics = train_offline(params, paths, tmp, tracker, held_out)
            if cfg.lora.enabled:  # the model directory holds the merged model only
                shutil.move(tmp / ADAPTER_SUBDIR, adapter_dir)  # /tmp: maybe another device
        version = register_policy(tracker, paths, cfg.lora, adapter_dir)
    if uses_rm:
        MlflowClient().set_model_version_tag(
            MODEL_POLICY, version, TAG_REWARD_MODEL, lineage.parent_model(paths.reward)
        )
    return StageResult(
        metrics={
            **metrics,
            "n_test_pairs": len(test_pairs),
            **{f"dropped_test.{k}": v for k, v in dropped_test.items()},
            "lora": int(cfg.lora.enabled),
            "qlora": int(cfg.lora.qlora),
        }
    )


def task_names(path: Path, pairs: list[dict[str, Any]]) -> list[str]:
    """The `task` of each pair (by its prompt, as written in `path`; `other` without one)."""
    by_prompt = {
        json.dumps(row["prompt"], sort_keys=True): row.get("task", "other")
        for row in read_jsonl(path)
    }
    return [by_prompt.get(json.dumps(p["prompt"], sort_keys=True), "other") for p in pairs]


def register_policy(tracker: Tracker, paths: Paths, lora: LoraParams, adapter_dir: Path) -> str:
    """Register the policy at `out` (with LoRA, its adapter first); the policy's version."""
    if not lora.enabled:
        mv = register_model_dir(
            tracker, paths.out, MODEL_POLICY, data_path=paths.train, parent_dir=paths.sft
        )
        return mv.version
    _, merged = adapters.register_adapter_and_merged(
        tracker,
        adapter_dir=adapter_dir,
        adapter_name=MODEL_POLICY_ADAPTER,
        merged_dir=paths.out,
        merged_name=MODEL_POLICY,
        base_dir=paths.sft,
        data_path=paths.train,
        cfg=lora,
    )
    return merged.split("/")[1]
