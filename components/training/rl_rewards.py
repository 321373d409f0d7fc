"""Rewards for on-policy RL (align.method: grpo | rloo): verifiable checks of the bundled tasks and
the trained reward model, in the call shape TRL's GRPOTrainer and RLOOTrainer use.

A reward function gets `prompts`, `completions` (conversational: one assistant message each) and
every other dataset column as a keyword list (here `answer`), and returns one float per
completion. `params.align.rl.rewards` names them with weights; TRL sums the weighted rewards.

- `correct`: 1 when `judge.is_correct(answer, completion)`, the rule evaluation uses (the
  answer first on the first line; trailing words forgiven);
- `exact`: 1 when the whole completion is the answer (nothing after it): rewards stopping;
- `reward_model`: the reward stage's scalar score of the full conversation.

A function that raises stops training with `RewardFunctionError` naming it (`guarded`), so a
broken reward never trains, or registers, a policy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.evaluation.answer_check import is_correct, normalize_answer
from components.modeling.scoring import score

RewardFunc = Callable[..., list[float]]
Conversation = list[dict[str, str]]
REWARD_MODEL = "reward_model"


class RewardFunctionError(RuntimeError):
    """A reward function raised; the message names it."""


def completion_text(completion: str | Conversation) -> str:
    """The generated text of a standard (str) or conversational (messages) completion."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion)


def correct(completions: Sequence[Any], answer: Sequence[str], **_: Any) -> list[float]:
    return [
        float(is_correct(a, completion_text(c))) for c, a in zip(completions, answer, strict=True)
    ]


def exact(completions: Sequence[Any], answer: Sequence[str], **_: Any) -> list[float]:
    return [
        float(normalize_answer(completion_text(c)) == normalize_answer(a))
        for c, a in zip(completions, answer, strict=True)
    ]


# The verifiable rewards by the names params.yaml uses.
VERIFIABLE: dict[str, RewardFunc] = {"correct": correct, "exact": exact}


def reward_model_reward(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int
) -> RewardFunc:
    """The reward model as a reward function (scored like the reward stage's evaluation)."""

    def reward_model(
        prompts: Sequence[Conversation], completions: Sequence[Conversation], **_: Any
    ) -> list[float]:
        conversations = [list(p) + list(c) for p, c in zip(prompts, completions, strict=True)]
        return score(model, tokenizer, conversations, max_length, batch_size)

    return reward_model


def guarded(name: str, func: RewardFunc) -> RewardFunc:
    """`func` under `name` (TRL logs `rewards/<name>/mean`); an exception it raises becomes a
    RewardFunctionError naming it."""

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> list[float]:
        try:
            return func(*args, **kwargs)
        except Exception as err:
            raise RewardFunctionError(
                f"reward function {name!r} raised {type(err).__name__}: {err}; fix it, or set its "
                "weight to 0 under align.rl.rewards in params.yaml"
            ) from err

    call.__name__ = name
    return call


def weighted_rewards(
    weights: dict[str, float], reward_model: RewardFunc | None
) -> tuple[list[RewardFunc], list[float]]:
    """(guarded reward functions, weights) for the non-zero entries of `weights`, in order."""
    known = {**VERIFIABLE, REWARD_MODEL: reward_model}
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ValueError(
            f"align.rl.rewards names unknown rewards {unknown}; choose from {sorted(known)}"
        )
    active = {name: w for name, w in weights.items() if w != 0}
    if not active:
        raise ValueError("align.rl.rewards gives every reward weight 0: nothing to optimise")
    funcs = []
    for name in active:
        func = known[name]
        if func is None:
            raise ValueError(f"align.rl.rewards.{name} is non-zero but no reward model was given")
        funcs.append(guarded(name, func))
    return funcs, list(active.values())
