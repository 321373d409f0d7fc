"""Tiny, real fixtures for the post-training stages: a BPE tokenizer, a 1-layer Llama, JSONL tasks.

Everything is generated (no downloads) and small enough that a stage trains in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from components.config import ModelParams, Params, parse_params
from components.constants import REGISTRY_RECORD
from components.modeling.llama import build_model
from components.tokenizer.train import train_tokenizer
from tests.helpers import project_params

TINY = ModelParams(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    rope_theta=10000,
    max_position_embeddings=128,
)
# Short sequences, few steps: every post-training section shrunk to test size.
SMALL = {
    "sft": {"epochs": 1, "batch_size": 4, "max_length": 48, "max_examples": 24, "lr": 1e-3},
    "reward": {"epochs": 1, "batch_size": 4, "max_length": 48, "max_examples": 24, "lr": 1e-3},
    "align": {"epochs": 1, "batch_size": 4, "max_length": 48, "max_examples": 24, "lr": 1e-3},
}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def tiny_params(**sections: dict[str, Any]) -> Params:
    """params.yaml with the post-training sections shrunk, plus overrides (validated, nested)."""
    raw = project_params().model_dump(mode="json")
    return parse_params(_deep_merge(_deep_merge(raw, SMALL), sections), source="test params")


def _question(i: int) -> tuple[str, str, str]:
    a, b = i % 9, (i * 7) % 11
    return f"what is {a} + {b}?", f"{a + b}", f"{a + b + 3}"


def corpus() -> list[str]:
    texts = []
    for i in range(300):
        q, good, bad = _question(i)
        texts.append(f"{q} the answer is {good}, not {bad}. the fox {i} jumps over dogs")
    return texts


def save_base_model(out: Path, seed: int = 0) -> Path:
    """A random tiny Llama + tokenizer saved like the pretrain stage's output, with its record."""
    tokenizer = train_tokenizer([corpus()], vocab_size=400, min_frequency=1)
    torch.manual_seed(seed)
    model = build_model(TINY, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / REGISTRY_RECORD).write_text(json.dumps({"name": "llmops-base", "version": "1"}))
    return out


def plain_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    """A BPE tokenizer with only `</s>`: no ChatML tokens, no padding token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["</s>"], show_progress=False)
    tok.train_from_iterator([corpus()], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")
    fast.chat_template = chat_template
    return fast


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sft_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i in range(offset, offset + n):
        q, good, _ = _question(i)
        rows.append(
            {
                "id": f"sft-{i}",
                "task": "arith",
                "messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": f"the answer is {good}"},
                ],
            }
        )
    return rows


def pref_rows(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """TRL's conversational preference format: prompt messages, one-message chosen/rejected."""
    rows = []
    for i in range(offset, offset + n):
        q, good, bad = _question(i)
        rows.append(
            {
                "id": f"pref-{i}",
                "task": "arith",
                "prompt": [{"role": "user", "content": q}],
                "chosen": [{"role": "assistant", "content": f"the answer is {good}"}],
                "rejected": [{"role": "assistant", "content": f"dogs dogs {bad} fox"}],
            }
        )
    return rows
