"""evaluate stage: held-out perplexity and task accuracy of base, sft, policy and its quantized
variants (policy_int8, policy_int4: compressed-tensors, loaded quantized by transformers).

- Perplexity: exp(mean next-token NLL) over the first `ppl_batches` batches of the packed
  validation array (the same tokens for every model, so the numbers compare).
- Accuracy: lm-evaluation-harness (components/evaluation/harness.py) on the first
  `max_examples` eval prompts: the bundled `llmops` group (one task per family, chat-formatted,
  greedy, scored with `components.evaluation.answer_check.is_correct`), with a standard error per
  task, plus any lm-eval task named in `evaluate.lm_eval_tasks` (`lm_eval.<task>.<metric>`).
The policy's numbers are also written under the plain keys (`eval_accuracy`, `perplexity`,
...): those are the challenger's metrics that the promote stage's gates read.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lm_eval.tasks import TaskManager
from matplotlib.figure import Figure  # no pyplot: no global backend or display needed
from transformers import PreTrainedModel

from components.config import EvaluateParams, StageParams
from components.constants import EVAL_CHALLENGER
from components.evaluation import harness
from components.evaluation.eval_set import read_eval_set
from components.modeling.io import load_for_inference
from components.stage import StageResult
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

MODELS = ("base", "sft", "policy", "policy_int8", "policy_int4")  # Paths fields, in table order
PROMOTED = EVAL_CHALLENGER  # its metrics are also written under the top-level keys


class Reads(StageParams):
    evaluate: EvaluateParams


@dataclass(frozen=True)
class Paths:
    base: Path
    sft: Path
    policy: Path
    policy_int8: Path  # compressed-tensors checkpoints (quantize stage)
    policy_int4: Path
    val: Path  # packed directory (val.npy)
    eval_set: Path  # JSONL: id, task, prompt, answer
    table: Path  # JSON: one row per model
    plot: Path  # PNG
    predictions: Path  # JSONL: one line per (model, example)
    metrics: Path


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
        colors = ["#9e9e9e", "#64b5f6", "#1976d2", "#7e57c2", "#b39ddb"][: len(rows)]
        bars = ax.bar(names, values, color=colors)
        ax.bar_label(bars, fmt="%.3g")
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20)
        ax.margins(y=0.15)  # room for the bar labels
    ax_acc.set_ylim(0, 1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)


def _stderr(value: float | None) -> float | None:
    """None where there is none (a single example): NaN is not JSON."""
    return None if value is None or math.isnan(value) else round(value, 4)


def _row(
    name: str, ppl: float, bundled: harness.HarnessResult, extra: harness.HarnessResult | None
) -> dict[str, Any]:
    """One table row: the bundled tasks under the keys the report and the promote gates use,
    any other lm-eval result as lm_eval.<task>.<metric>."""
    acc, stderr, n = harness.overall(bundled)
    row: dict[str, Any] = {
        "model": name,
        "eval_accuracy": round(acc, 4),
        "eval_accuracy_stderr": _stderr(stderr),
        "perplexity": round(ppl, 4),
        "n_examples": n,
    }
    prefix = f"{harness.BUNDLED_GROUP}_"
    for task, metrics in sorted(bundled.scores.items()):
        family = task.removeprefix(prefix)
        row[f"accuracy.{family}"] = round(metrics[harness.METRIC], 4)
        row[f"accuracy_stderr.{family}"] = _stderr(metrics.get(f"{harness.METRIC}_stderr"))
    for task, metrics in sorted((extra.scores if extra else {}).items()):
        row.update({f"lm_eval.{task}.{m}": round(v, 4) for m, v in metrics.items()})
    return row


def predictions(name: str, result: harness.HarnessResult) -> list[dict[str, Any]]:
    """One line per (model, bundled example): what it generated and whether it was right."""
    return [
        {
            "model": name,
            **{k: s["doc"][k] for k in ("id", "task", "prompt", "answer")},
            "generated": s["filtered_resps"][0],
            "correct": bool(s[harness.METRIC]),
        }
        for _, samples in sorted(result.samples.items())
        for s in samples
    ]


def evaluate_model(
    model_dir: Path,
    val: np.ndarray,
    tm: TaskManager,
    families: Sequence[str],
    params: Reads,
    name: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cfg = params.evaluate
    model, tokenizer = load_for_inference(model_dir)
    ppl = perplexity(model, val, batch_size=cfg.ppl_batch_size, max_batches=cfg.ppl_batches)
    lm = harness.hf_backend(model, tokenizer, cfg.generation_batch_size)
    bundled = harness.evaluate_tasks(
        lm, tm, harness.bundled_tasks(families), cfg.max_examples, cfg.max_new_tokens
    )
    extra = (
        harness.evaluate_tasks(lm, tm, cfg.lm_eval_tasks, cfg.max_examples)
        if cfg.lm_eval_tasks
        else None
    )
    row = _row(name, ppl, bundled, extra)
    log.info("%s: accuracy %.3f, perplexity %.2f", name, row["eval_accuracy"], ppl)
    return row, predictions(name, bundled)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.evaluate
    val = np.load(paths.val / "val.npy", mmap_mode="r")  # (n_sequences, seq_len)
    examples = read_eval_set(paths.eval_set, cfg.max_examples)  # fails on a bad line first
    tm = harness.task_manager(paths.eval_set, cfg.max_examples, cfg.lm_eval_tasks)
    families = sorted({ex["task"] for ex in examples})
    rows, lines = [], []
    for name in MODELS:
        row, preds = evaluate_model(getattr(paths, name), val, tm, families, params, name)
        rows.append(row)
        lines += [json.dumps(p) for p in preds]

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
    metrics.update({k: v for k, v in promoted.items() if k != "model"})
    return StageResult(metrics=metrics)
