"""sft stage: supervised fine-tuning of the pretrained base on chat examples with TRL's SFTTrainer.

Setup -> train -> save, top to bottom:
1. read `{"id", "task", "messages": [user, assistant]}` rows, subsample `sft.max_examples` by seed;
2. SFTTrainer on the conversational `messages` column with `assistant_only_loss=True`: the chat
   template's `{% generation %}` markers give TRL an assistant-token mask, so the loss covers the
   answer and its closing `<|im_end|>` (what the model must learn to emit) and never the prompt;
3. with `sft.lora.enabled`, train LoRA adapters (with `sft.lora.qlora` on a 4-bit NF4 base),
   register them as `llmops-sft-adapter` and merge them into the fp32 base, so `out` is always
   a plain transformers model directory (what vLLM serves; components/training/adapters.py);
4. save model + tokenizer (safetensors) atomically at `out`, register it as `llmops-sft`.

Steps 1-2 and the adapter of step 3 are `train`: with `posttrain.ranks` > 1 they run on that
many DeepSpeed ranks (posttrain_worker), rank 0 writing the model; this process then merges the
adapter (with LoRA), registers the model and logs the metrics.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import (
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)
from trl import SFTConfig, SFTTrainer
from trl.chat_template_utils import has_generation_markers

from components.config import PostTrainParams, SftParams, StageParams
from components.constants import MODEL_SFT, MODEL_SFT_ADAPTER
from components.modeling.io import check_weights
from components.stage import StageResult
from components.tracking.registry import register_model_dir
from components.tracking.stage_run import Tracker
from components.training import adapters
from components.training.posttrain_worker import train_step
from components.training.trainer_common import (
    ADAPTER_SUBDIR,
    AUTO_DEVICE,
    Trained,
    atomic_model_dir,
    loss_summary,
    merged,  # noqa: F401 - tests fold adapters with sft.merged
    read_jsonl,
    require_keys,
    save_trained,
    scratch_dir,
    subsample,
    trainable_fraction,
    trainer_kwargs,
    zero_stage_run,
)

log = logging.getLogger(__name__)


class Reads(StageParams):
    seed: int
    posttrain: PostTrainParams
    sft: SftParams


@dataclass(frozen=True)
class Paths:
    base: Path  # pretrained model directory (HF format, tokenizer inside)
    data: Path  # sft_train.jsonl
    out: Path  # fine-tuned model directory
    metrics: Path


def load_examples(path: Path, max_examples: int | None, seed: int) -> Dataset:
    """The conversational dataset TRL expects: one `messages` column."""
    rows = subsample(read_jsonl(path), max_examples, seed)
    require_keys(rows, ("messages",), path)
    for n, row in enumerate(rows, 1):
        if not row["messages"] or row["messages"][-1].get("role") != "assistant":
            raise ValueError(
                f"{path}: example {n} (id {row.get('id')!r}) must end with an "
                "assistant message: that is the response SFT learns"
            )
    return Dataset.from_list([{"messages": row["messages"]} for row in rows])


def as_prompt_completion(dataset: Dataset) -> Dataset:
    """`messages` split into TRL's conversational prompt (every turn but the last) and
    completion (the last assistant turn): TRL then masks the loss to the completion whatever
    the chat template, so a model's own template needs no `{% generation %}` markers."""
    return dataset.map(
        lambda row: {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]},
        remove_columns=["messages"],
    )


def sft_config(
    cfg: SftParams,
    scratch: Path,
    seed: int,
    posttrain: PostTrainParams = AUTO_DEVICE,
    assistant_only: bool = True,
) -> SFTConfig:
    """`assistant_only`: loss on every assistant turn, by the template's generation markers;
    otherwise (a prompt-completion dataset) on the completion."""
    return SFTConfig(
        **trainer_kwargs(scratch, seed, posttrain),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        per_device_train_batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        assistant_only_loss=assistant_only,  # labels = -100 outside the generation markers
        packing=False,  # one conversation per row: the mask stays aligned with its tokens
    )


def build_trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Dataset,
    cfg: SftParams,
    scratch: Path,
    seed: int,
    callbacks: list[TrainerCallback] | None = None,
    posttrain: PostTrainParams = AUTO_DEVICE,
) -> SFTTrainer:
    """The trainer with its dataset already tokenized (`trainer.train_dataset` has `labels`)."""
    return SFTTrainer(
        model=model,
        args=sft_config(
            cfg, scratch, seed, posttrain, assistant_only="messages" in dataset.column_names
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=adapters.lora_config(cfg.lora),  # TRL wraps the model in a PeftModel when set
        callbacks=callbacks,
    )


def train(
    params: Reads, paths: Paths, out: Path, callbacks: list[TrainerCallback] | None = None
) -> Trained:
    """The training step: fine-tune the base and save it to `out`. Runs in the stage's process,
    or on every rank of `posttrain.ranks` (posttrain_worker), where rank 0 writes `out`."""
    cfg = params.sft
    dataset = load_examples(paths.data, cfg.max_examples, params.seed)
    tokenizer = AutoTokenizer.from_pretrained(paths.base)
    if not has_generation_markers(tokenizer.chat_template):  # a checkpoint's own template
        dataset = as_prompt_completion(dataset)
    check_weights(paths.base)  # a truncated file is named, with how to restore it
    model = adapters.load_trainable(paths.base, cfg.lora, params.posttrain)

    with scratch_dir("sft") as scratch:
        trainer = build_trainer(
            model,
            tokenizer,
            dataset,
            cfg,
            scratch,
            params.seed,
            callbacks=callbacks,
            posttrain=params.posttrain,
        )
        fraction = trainable_fraction(trainer.model)
        n_sequences = len(trainer.train_dataset)  # after TRL drops fully-truncated examples
        result = trainer.train()
        save_trained(trainer, tokenizer, out)
    losses = loss_summary(trainer.state.log_history)
    log.info("sft: %d examples, loss %s", len(dataset), losses)
    return Trained(
        metrics={
            **losses,
            "train_runtime_s": round(float(result.metrics["train_runtime"]), 3),
            "n_examples": len(dataset),
            "n_train_sequences": n_sequences,
            "trainable_fraction": round(fraction, 6),
            "lora": int(cfg.lora.enabled),
            "qlora": int(cfg.lora.qlora),
            "ranks": params.posttrain.ranks,
            "zero_stage": zero_stage_run(trainer),
        },
        log_history=trainer.state.log_history,
    )


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    lora = params.sft.lora
    with scratch_dir("sft-adapter") as scratch:
        adapter_dir = scratch / ADAPTER_SUBDIR
        with atomic_model_dir(paths.out) as tmp:
            trained = train_step("sft", params, paths, tmp, tracker)
            if lora.enabled:  # the model directory holds the merged model only
                adapters.write_merged(paths.base, tmp)
                shutil.move(tmp / ADAPTER_SUBDIR, adapter_dir)  # /tmp: maybe another device
        log.info("sft: saved %s", paths.out)
        if lora.enabled:
            adapters.register_adapter_and_merged(
                tracker,
                adapter_dir=adapter_dir,
                adapter_name=MODEL_SFT_ADAPTER,
                merged_dir=paths.out,
                merged_name=MODEL_SFT,
                base_dir=paths.base,
                data_path=paths.data,
                cfg=lora,
            )
        else:
            register_model_dir(
                tracker, paths.out, MODEL_SFT, data_path=paths.data, parent_dir=paths.base
            )
    return StageResult(metrics=trained.metrics)
