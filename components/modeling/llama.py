"""The decoder built from params via transformers: Llama (RoPE, RMSNorm, SwiGLU, GQA) or its
Mixture-of-Experts sibling Mixtral (the same blocks with top-k routed SwiGLU experts)."""

from __future__ import annotations

from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MixtralConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from components.chat import stop_token_ids
from components.config import ModelParams


def llama_config(cfg: ModelParams, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    eos = stop_token_ids(tokenizer)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        hidden_act="silu",  # SwiGLU
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=1e-5,
        tie_word_embeddings=cfg.tie_word_embeddings is not False,  # null: tied
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    if cfg.architecture == "mixtral":
        return MixtralConfig(
            **common,
            num_local_experts=cfg.num_experts,
            num_experts_per_tok=cfg.experts_per_token,
            output_router_logits=True,
        )  # adds the load-balancing loss
    return LlamaConfig(**common)


def build_model(cfg: ModelParams, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    return AutoModelForCausalLM.from_config(llama_config(cfg, tokenizer))
