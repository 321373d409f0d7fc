"""The planner's inputs from params.yaml: model shape, cluster and the run's token budget."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from components.config import (
    ClusterParams,
    ModelParams,
    PackParams,
    PretrainParams,
    TokenizerParams,
)
from components.training.accelerator import Device, resolve_precision
from components.training.planner import (
    Cluster,
    ModelShape,
    Plan,
    Precision,
    StageChoice,
    cheapest_zero_stage,
    make_plan,
)

# Published shapes, for sizing runs bigger than this project's own model.
PRESETS: dict[str, ModelShape] = {
    "llama2-7b": ModelShape(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=11008,
        num_layers=32,
        num_heads=32,
        num_kv_heads=32,
    ),
    "llama2-70b": ModelShape(
        vocab_size=32000,
        hidden_size=8192,
        intermediate_size=28672,
        num_layers=80,
        num_heads=64,
        num_kv_heads=8,
    ),
    "mixtral-8x7b": ModelShape(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_layers=32,
        num_heads=32,
        num_kv_heads=8,
        num_experts=8,
        experts_per_token=2,
    ),
}


class PlanInputs(Protocol):
    """The sections the planner reads: the whole params (CLI) or the pretrain stage's `Reads`."""

    @property
    def tokenizer(self) -> TokenizerParams: ...
    @property
    def pack(self) -> PackParams: ...
    @property
    def model(self) -> ModelParams: ...
    @property
    def cluster(self) -> ClusterParams: ...
    @property
    def pretrain(self) -> PretrainParams: ...


def model_shape(cfg: ModelParams, vocab_size: int) -> ModelShape:
    if cfg.hidden_size is None:
        raise ValueError(
            f"the model shape comes from the checkpoint (model.init {cfg.init!r}): run the "
            "checkpoint stage (`dvc repro checkpoint`) and size from its models/init"
        )
    moe = cfg.architecture == "mixtral"
    return ModelShape(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_layers=cfg.num_hidden_layers,
        num_heads=cfg.num_attention_heads,
        num_kv_heads=cfg.num_key_value_heads,
        tie_embeddings=cfg.tie_word_embeddings is not False,
        num_experts=cfg.num_experts if moe else 1,
        experts_per_token=cfg.experts_per_token if moe else 1,
    )


def cluster_of(cfg: ClusterParams) -> Cluster:
    return Cluster(
        nodes=cfg.nodes,
        gpus_per_node=cfg.ranks_per_node,
        gpu_memory_gb=cfg.accelerator_memory_gb,
        cpu_memory_gb=cfg.cpu_memory_gb,
        peak_tflops=cfg.peak_tflops,
        mfu=cfg.assumed_mfu,
    )


def token_budget(params: PlanInputs) -> int:
    """Tokens the configured run trains on: steps × global batch × sequence length."""
    p = params.pretrain
    global_batch = p.micro_batch_size * p.grad_accum_steps * params.cluster.world_size
    return p.max_steps * global_batch * params.pack.seq_len


def vocab_size(params: PlanInputs, tokenizer_dir: Path | None) -> int:
    """The trained tokenizer's size when it exists (special tokens included), else the target."""
    if tokenizer_dir is not None and (tokenizer_dir / "tokenizer.json").exists():
        from transformers import AutoTokenizer

        return len(AutoTokenizer.from_pretrained(tokenizer_dir))  # as the model's embedding
    return params.tokenizer.vocab_size


def plan_for(
    params: PlanInputs,
    tokenizer_dir: Path | None = None,
    precision: Precision = "mixed",
    n_params: float | None = None,
    tokens: float | None = None,
    preset: str | None = None,
) -> Plan:
    """Plan the configured run; `preset`, `n_params` and `tokens` size a hypothetical one."""
    shape = (
        PRESETS[preset] if preset else model_shape(params.model, vocab_size(params, tokenizer_dir))
    )
    return make_plan(
        shape,
        cluster_of(params.cluster),
        tokens=tokens if tokens is not None else token_budget(params),
        seq_len=params.pack.seq_len,
        precision=precision,
        max_micro_batch=max(64, params.pretrain.micro_batch_size),
        n_params=n_params,
    )


def zero_stage_for(params: PlanInputs, tokenizer_dir: Path | None, device: Device) -> StageChoice:
    """`pretrain.zero_stage` as the ranks will run it: the number when one is set, else (auto)
    the planner's cheapest stage that fits this cluster at the configured micro-batch."""
    cfg = params.pretrain
    if cfg.zero_stage != "auto":
        return StageChoice(cfg.zero_stage, f"ZeRO-{cfg.zero_stage}, set in pretrain.zero_stage")
    return cheapest_zero_stage(
        model_shape(params.model, vocab_size(params, tokenizer_dir)),
        cluster_of(params.cluster),
        seq_len=params.pack.seq_len,
        micro_batch=cfg.micro_batch_size,
        offload=cfg.offload,
        checkpointing=cfg.activation_checkpointing,
        precision="mixed" if resolve_precision(cfg.precision, device) == "bf16" else "fp32",
        flash_attention=cfg.attn_implementation != "eager",
    )
