"""The Llama-style model built from params (RoPE, RMSNorm, SwiGLU, GQA) via transformers."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from components.config import ModelParams
from components.tokenizer.train import IM_END


def llama_config(cfg: ModelParams, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    eos = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)]
    return LlamaConfig(
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
        tie_word_embeddings=cfg.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )


def build_model(cfg: ModelParams, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    return LlamaForCausalLM(llama_config(cfg, tokenizer))
