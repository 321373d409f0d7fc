"""Reward of a conversation by a scalar reward model: what the reward stage reports on held-out
pairs, RL uses as its reward, and the judge's reward signal reads."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.no_grad()
def score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: list[list[dict[str, str]]],
    max_length: int,
    batch_size: int,
) -> list[float]:
    """Reward of each full conversation, tokenized with the chat template as in training.

    A conversation longer than `max_length` keeps its last `max_length` tokens (the response
    end, where the reward is read), so every held-out pair is scored.
    """
    model.eval()
    device = next(model.parameters()).device
    rewards: list[float] = []
    for i in range(0, len(conversations), batch_size):
        seqs = [
            torch.tensor(
                tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"][
                    -max_length:
                ]
            )
            for c in conversations[i : i + batch_size]
        ]
        ids = torch.nn.utils.rnn.pad_sequence(
            seqs, batch_first=True, padding_value=tokenizer.pad_token_id
        )  # (B, T), right-padded: the head reads the last non-pad token
        mask = torch.nn.utils.rnn.pad_sequence(
            [torch.ones_like(s) for s in seqs], batch_first=True
        )  # (B, T)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits  # (B, 1)
        rewards.extend(logits[:, 0].float().tolist())
    return rewards
