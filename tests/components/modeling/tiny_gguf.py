"""A tiny GGUF file written with the `gguf` package (what llama.cpp's converter writes, in
miniature): a random 1-layer Llama in F32 and its byte-level BPE tokenizer, so transformers'
`gguf_file=` loader reads it back without any download."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import torch

from components.modeling.llama import build_model
from components.tokenizer.train import train_tokenizer
from tests.components.training.tiny import TINY, corpus

# transformers' GGUF names of one Llama block's tensors, by HF module path.
_BLOCK = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's q/k row order (interleaved RoPE halves); transformers undoes it on load."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def write_tiny_gguf(path: Path, architecture: str = "llama", seed: int = 0) -> dict:
    """Write the file; returns the HF state dict it holds (to compare with what loads back)."""
    tokenizer = train_tokenizer([corpus()], vocab_size=400, min_frequency=1)
    torch.manual_seed(seed)
    model = build_model(TINY, tokenizer)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(len(tokenizer))

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = set(tokenizer.all_special_tokens)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t, _ in vocab]
    )
    writer.add_token_merges(
        [" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]]
    )
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"].numpy())
    writer.add_tensor("output_norm.weight", state["model.norm.weight"].numpy())
    for i in range(cfg.num_hidden_layers):
        for hf, name in _BLOCK.items():
            w = state[f"model.layers.{i}.{hf}.weight"]
            if name == "attn_q":
                w = _permute(w, cfg.num_attention_heads)
            elif name == "attn_k":
                w = _permute(w, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{name}.weight", w.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return state
