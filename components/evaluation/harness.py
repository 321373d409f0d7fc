"""Task accuracy through lm-evaluation-harness: the bundled tasks as lm-eval task YAMLs
(`lm_eval_tasks/`, data from the eval JSONL, scored by `judge.is_correct`), plus any lm-eval
task a user names in `evaluate.lm_eval_tasks` (a registered name or a YAML path).

Models run in-process through lm-eval's `hf` backend (`HFLM` around the already loaded model,
so the int8 model is evaluated as quantized); the chat template is applied by the harness, as
the hand-written loop did.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lm_eval import simple_evaluate
from lm_eval.api.model import LM
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import PreTrainedModel, PreTrainedTokenizerBase

# lm-eval imports this module by path from the YAMLs (`!function llmops_tasks.<name>`); importing
# it here too makes it and the judge it uses code deps of the evaluate stage (`llmops dag`).
from components.evaluation.lm_eval_tasks import llmops_tasks  # noqa: E402,F401

TASKS_DIR = Path(llmops_tasks.__file__).parent
BUNDLED_GROUP = "llmops"
METRIC = "acc"  # the bundled tasks' metric (process_results in lm_eval_tasks/llmops_tasks.py)


class UnknownTask(ValueError):
    """A task in params that lm-eval does not know."""


@dataclass(frozen=True)
class HarnessResult:
    # {task or group name: {metric: value}}, stderr as "<metric>_stderr"
    scores: dict[str, dict[str, float]]
    samples: dict[str, list[dict[str, Any]]]  # lm-eval's per-example records, per task


def _is_yaml(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml"))


def task_manager(eval_set: Path, max_examples: int, extra: Sequence[str] = ()) -> TaskManager:
    """lm-eval's task index over the bundled YAMLs (and its built-in tasks only when a named
    extra task needs them: indexing ~15k YAMLs costs ~15 s). Unknown names fail here, before
    any model is loaded."""
    bundled = {p.stem for p in TASKS_DIR.glob("llmops*.yaml")}
    named = [t for t in extra if not _is_yaml(t)]
    tm = TaskManager(
        include_path=str(TASKS_DIR),
        include_defaults=any(t not in bundled for t in named),
        metadata={"eval_set": str(eval_set), "max_examples": max_examples},
    )
    unknown = [t for t in named if t not in tm.all_tasks]
    missing = [t for t in extra if _is_yaml(t) and not Path(t).is_file()]
    if unknown or missing:
        hints = {t: difflib.get_close_matches(t, tm.all_tasks, n=5) for t in unknown}
        raise UnknownTask(
            f"evaluate.lm_eval_tasks names tasks lm-eval does not know: {unknown + missing}. "
            f"Bundled: {sorted(bundled)}; close matches: {hints}; all {len(tm.all_tasks)} "
            "names: `lm-eval ls tasks` (a YAML path must exist)"
        )
    return tm


def bundled_tasks(families: Sequence[str]) -> list[str]:
    """The bundled tasks of the families present in the eval slice (lm-eval cannot build a
    task on an empty split). Requested one by one, not as the `llmops` group YAML: the overall
    accuracy is computed from their samples (`overall`)."""
    return [f"{BUNDLED_GROUP}_{f}" for f in families]


def hf_backend(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int) -> HFLM:
    """lm-eval's `hf` backend around a loaded model (the int8 model stays quantized)."""
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


def evaluate_tasks(
    lm: LM,
    tm: TaskManager,
    tasks: Sequence[str],
    limit: int | None,
    max_new_tokens: int | None = None,
) -> HarnessResult:
    """lm-eval on `tasks`; `max_new_tokens` overrides their generation length (the bundled
    tasks' knob; user tasks keep their own)."""
    out = simple_evaluate(
        model=lm,
        tasks=list(tasks),
        task_manager=tm,
        apply_chat_template=True,
        limit=limit,
        log_samples=True,
        gen_kwargs={"max_gen_toks": max_new_tokens} if max_new_tokens else None,
        bootstrap_iters=1000,  # only metrics without a closed-form stderr use it
    )
    return HarnessResult(
        {name: _metrics(row) for name, row in out["results"].items()}, out.get("samples", {})
    )


def overall(result: HarnessResult, metric: str = METRIC) -> tuple[float, float, int]:
    """Mean, standard error (sample std / sqrt(n), lm-eval's `mean_stderr`) and count of
    `metric` over every sample of every task in `result`: the bundled tasks' pooled accuracy."""
    values = [float(s[metric]) for samples in result.samples.values() for s in samples]
    n = len(values)
    if n == 0:
        raise ValueError("no samples to aggregate: was the eval slice empty?")
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
    return mean, math.sqrt(var / n), n


def _metrics(row: dict[str, Any]) -> dict[str, float]:
    """lm-eval's "acc,none" / "acc_stderr,none" keys as "acc" / "acc_stderr" (filter "none"
    only; other filters keep their name: "acc.strict-match")."""
    metrics = {}
    for key, value in row.items():
        name, _, filt = key.partition(",")
        if not filt or not isinstance(value, int | float) or isinstance(value, bool):
            continue  # alias, sample counts and other non-metrics
        metrics[name if filt == "none" else f"{name}.{filt}"] = float(value)
    return metrics
