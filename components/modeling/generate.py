"""Greedy generation from chat prompts: what evaluation and RL's held-out check both read."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.chat import stop_token_ids

Conversation = list[dict[str, str]]


def user_turns(prompts: Sequence[str]) -> list[Conversation]:
    """Each prompt as a one-turn user conversation."""
    return [[{"role": "user", "content": p}] for p in prompts]


def chat_prompts(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation]
) -> list[str]:
    """Each conversation followed by the assistant header the model continues."""
    return [
        tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True)
        for c in conversations
    ]


@torch.no_grad()
def generate_greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    max_new_tokens: int,
    batch_size: int | None = None,
) -> list[str]:
    """Greedy completion text of each conversation, in left-padded batches (one by default)."""
    model.eval()
    stop = stop_token_ids(tokenizer)
    step = batch_size or max(len(conversations), 1)
    texts: list[str] = []
    for i in range(0, len(conversations), step):
        # Left padding keeps every prompt's last token at the end, where generation continues.
        enc = tokenizer(
            chat_prompts(tokenizer, conversations[i : i + step]),
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=False,
        ).to(model.device)
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[:, enc["input_ids"].shape[1] :]  # (B, <= max_new_tokens)
        texts.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return texts
