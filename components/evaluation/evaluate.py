"""evaluate stage: held-out perplexity and task accuracy of base, sft, policy and policy_int8.

- Perplexity: exp(mean next-token NLL) over the first `ppl_batches` batches of the packed
  validation array (the same tokens for every model, so the numbers compare).
- Accuracy: greedy generation on the first `max_examples` eval prompts, each formatted with the
  tokenizer's chat template (the base model gets the same formatting), decoded without special
  tokens and scored with `components.evaluation.judge.is_correct`; overall and per task.
The policy's numbers are also written under the plain keys `eval_accuracy` / `perplexity`, the
keys the promote stage reads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure  # no pyplot: no global backend or display needed
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from components.chat import IM_END
from components.config import EvaluateParams, StageParams
from components.evaluation.judge import is_correct
from components.modeling.io import load_for_inference
from components.stage import StageResult
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

MODELS = ("base", "sft", "policy", "policy_int8")  # Paths fields, in table order
PROMOTED = "policy"  # its metrics are also written under the top-level keys
EVAL_KEYS = ("id", "task", "prompt", "answer")

# prompts (user messages) -> completions, one per prompt
Generate = Callable[[Sequence[str]], list[str]]
Judge = Callable[[str, str], bool]


class Reads(StageParams):
    evaluate: EvaluateParams


@dataclass(frozen=True)
class Paths:
    base: Path
    sft: Path
    policy: Path
    policy_int8: Path
    val: Path  # packed directory (val.npy)
    eval_set: Path  # JSONL: id, task, prompt, answer
    table: Path  # JSON: one row per model
    plot: Path  # PNG
    predictions: Path  # JSONL: one line per (model, example)
    metrics: Path


@dataclass(frozen=True)
class Prediction:
    id: str
    task: str
    prompt: str
    answer: str
    generated: str
    correct: bool


@dataclass(frozen=True)
class AccuracyResult:
    accuracy: float
    per_task: dict[str, float]
    predictions: list[Prediction]


@torch.no_grad()
def perplexity(
    model: PreTrainedModel, tokens: np.ndarray, batch_size: int, max_batches: int | None = None
) -> float:
    """exp(mean NLL of every next token) over (n, seq_len) token rows, batch by batch."""
    n = tokens.shape[0] if max_batches is None else min(tokens.shape[0], max_batches * batch_size)
    if n == 0 or tokens.shape[1] < 2:
        raise ValueError(f"perplexity needs at least one row of >= 2 tokens; got {tokens.shape}")
    total_nll, count = 0.0, 0
    for start in range(0, n, batch_size):
        ids = torch.from_numpy(
            np.asarray(tokens[start : min(start + batch_size, n)], dtype=np.int64)
        )  # (B, T)
        logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V) predicts ids[:, 1:]
        nll = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="sum"
        )
        total_nll += float(nll)
        count += ids[:, 1:].numel()
    return math.exp(total_nll / count)


def chat_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[str]:
    """Each prompt as one user turn, followed by the assistant header the model continues."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]


@torch.no_grad()
def generate_greedy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
) -> list[str]:
    """Greedy completions of chat-formatted prompts in one left-padded batch."""
    # Left padding keeps every prompt's last token at the end, where generation continues.
    enc = tokenizer(
        chat_prompts(tokenizer, prompts),
        return_tensors="pt",
        padding=True,
        padding_side="left",
        add_special_tokens=False,
    )
    stop = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)]
    out = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stop,
        pad_token_id=tokenizer.pad_token_id,
    )
    new = out[:, enc["input_ids"].shape[1] :]  # (B, <= max_new_tokens)
    return [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def accuracy(
    examples: Sequence[dict[str, Any]],
    generate: Generate,
    judge: Judge = is_correct,
    batch_size: int = 16,
    desc: str = "generate",
) -> AccuracyResult:
    """Share of examples whose generation `judge(answer, generated)` accepts; also per task."""
    if not examples:
        raise ValueError("accuracy needs at least one example")
    preds: list[Prediction] = []
    for start in tqdm(range(0, len(examples), batch_size), desc=desc, unit="batch"):
        batch = examples[start : start + batch_size]
        outputs = generate([ex["prompt"] for ex in batch])
        if len(outputs) != len(batch):
            raise ValueError(f"generate returned {len(outputs)} completions for {len(batch)}")
        preds += [
            Prediction(
                str(ex["id"]),
                ex["task"],
                ex["prompt"],
                str(ex["answer"]),
                out,
                bool(judge(str(ex["answer"]), out)),
            )
            for ex, out in zip(batch, outputs, strict=True)
        ]
    by_task: dict[str, list[bool]] = defaultdict(list)
    for p in preds:
        by_task[p.task].append(p.correct)
    return AccuracyResult(
        accuracy=sum(p.correct for p in preds) / len(preds),
        per_task={t: sum(v) / len(v) for t, v in sorted(by_task.items())},
        predictions=preds,
    )


def read_eval_set(path: Path, limit: int) -> list[dict[str, Any]]:
    """The first `limit` examples of the eval JSONL, checked for the expected keys."""
    examples = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if len(examples) >= limit:
                break
            if not line.strip():
                continue
            ex = json.loads(line)
            missing = [k for k in EVAL_KEYS if k not in ex]
            if missing:
                raise ValueError(f"{path}:{lineno} lacks keys {missing}; expected {EVAL_KEYS}")
            examples.append(ex)
    if not examples:
        raise ValueError(f"{path} holds no eval examples")
    return examples


def render_plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Two bar charts side by side: eval accuracy and held-out perplexity per model."""
    names = [r["model"] for r in rows]
    fig = Figure(figsize=(9, 3.5))  # rendered by the Agg canvas
    ax_acc, ax_ppl = fig.subplots(1, 2)
    for ax, key, title in (
        (ax_acc, "eval_accuracy", "eval accuracy (higher is better)"),
        (ax_ppl, "perplexity", "held-out perplexity (lower is better)"),
    ):
        values = [r[key] for r in rows]
        bars = ax.bar(
            names, values, color=["#9e9e9e", "#64b5f6", "#1976d2", "#7e57c2"][: len(rows)]
        )
        ax.bar_label(bars, fmt="%.3g")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20)
        ax.margins(y=0.15)  # room for the bar labels
    ax_acc.set_ylim(0, 1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)


def evaluate_model(
    model_dir: Path, val: np.ndarray, examples: Sequence[dict[str, Any]], params: Reads, name: str
) -> tuple[dict[str, Any], list[Prediction]]:
    cfg = params.evaluate
    model, tokenizer = load_for_inference(model_dir)
    ppl = perplexity(model, val, batch_size=cfg.ppl_batch_size, max_batches=cfg.ppl_batches)

    def generate(prompts: Sequence[str]) -> list[str]:
        return generate_greedy(model, tokenizer, prompts, cfg.max_new_tokens)

    result = accuracy(
        examples, generate, batch_size=cfg.generation_batch_size, desc=f"generate {name}"
    )
    row = {
        "model": name,
        "eval_accuracy": round(result.accuracy, 4),
        "perplexity": round(ppl, 4),
        "n_examples": len(result.predictions),
        **{f"accuracy.{t}": round(a, 4) for t, a in result.per_task.items()},
    }
    log.info("%s: accuracy %.3f, perplexity %.2f", name, result.accuracy, ppl)
    return row, result.predictions


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    val = np.load(paths.val / "val.npy", mmap_mode="r")  # (n_sequences, seq_len)
    examples = read_eval_set(paths.eval_set, params.evaluate.max_examples)
    rows, lines = [], []
    for name in MODELS:
        row, preds = evaluate_model(getattr(paths, name), val, examples, params, name)
        rows.append(row)
        lines += [json.dumps({"model": name, **dataclasses.asdict(p)}) for p in preds]

    _write_json(paths.table, rows)
    render_plot(rows, paths.plot)
    paths.predictions.parent.mkdir(parents=True, exist_ok=True)
    paths.predictions.write_text("\n".join(lines) + "\n")
    for artifact in (paths.table, paths.plot, paths.predictions):
        tracker.log_artifact(artifact, "evaluation")

    metrics: dict[str, float | int | str] = {
        f"{row['model']}.{k}": v for row in rows for k, v in row.items() if k != "model"
    }
    promoted = next(r for r in rows if r["model"] == PROMOTED)
    metrics["eval_accuracy"] = promoted["eval_accuracy"]
    metrics["perplexity"] = promoted["perplexity"]
    return StageResult(metrics=metrics)
