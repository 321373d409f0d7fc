"""lm-evaluation-harness against the live vLLM endpoint: the served model evaluated as served.

The same task YAMLs as the evaluate stage (components/evaluation/harness.py), through lm-eval's
`local-chat-completions` backend: each prompt goes to /v1/chat/completions, so the server's own
chat template, dtype, quantization and stop tokens are what is scored. The API key travels in
the request header (`header=`), not in OPENAI_API_KEY, so no environment is touched.

`deploy.eval_tasks` lists lm-eval task names; "llmops" stands for every bundled family present
in the eval set (lm-eval cannot build a task on an empty split).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from components.config import DeployParams
from components.evaluation import harness
from components.evaluation.eval_set import read_eval_set

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 120
MAX_RETRIES = 1  # a failing endpoint fails the stage quickly; lm-eval retries with backoff


def task_names(requested: tuple[str, ...], eval_set: Path) -> tuple[list[str], int]:
    """(lm-eval task names, examples in the eval set): "llmops" expanded to the families."""
    examples = read_eval_set(eval_set)
    families = sorted({ex["task"] for ex in examples})
    names: list[str] = []
    for task in requested:
        names += harness.bundled_tasks(families) if task == harness.BUNDLED_GROUP else [task]
    return list(dict.fromkeys(names)), len(examples)


def model_args(server_url: str, served_name: str, api_key: str | None) -> dict[str, Any]:
    """Keyword arguments of lm-eval's LocalChatCompletion for this server."""
    return {
        "model": served_name,
        "base_url": f"{server_url}/chat/completions",
        "tokenizer_backend": None,  # strings go to the server, which tokenizes as it serves
        "max_retries": MAX_RETRIES,
        "timeout": REQUEST_TIMEOUT_S,
        "header": {"Authorization": f"Bearer {api_key or 'EMPTY'}"},
    }


def _evaluate(server: Any, cfg: DeployParams, eval_set: Path) -> harness.HarnessResult | None:
    if not cfg.eval_tasks:
        return None
    from lm_eval.models.openai_completions import LocalChatCompletion

    tasks, n_examples = task_names(cfg.eval_tasks, eval_set)
    extra = [t for t in tasks if not t.startswith(f"{harness.BUNDLED_GROUP}_")]
    tm = harness.task_manager(eval_set, n_examples, extra)
    lm = LocalChatCompletion(**model_args(server.base_url, server.served_name, server.api_key))
    result = harness.evaluate_tasks(lm, tm, tasks, cfg.eval_limit)
    log.info("live endpoint lm-eval (%s): %s", server.served_name, result.scores)
    return result


def evaluate_endpoint(server: Any, cfg: DeployParams, eval_set: Path) -> dict[str, dict]:
    """{task: {metric: value, metric_stderr: value}} for deploy.eval_tasks; {} when none."""
    result = _evaluate(server, cfg, eval_set)
    return result.scores if result else {}


def pooled_accuracy(server: Any, cfg: DeployParams, eval_set: Path) -> float | None:
    """The bundled tasks' accuracy over every sample on this endpoint; None without tasks."""
    result = _evaluate(server, cfg, eval_set)
    return harness.overall(result)[0] if result else None


def flat(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Stage metrics: lm_eval.<task>.<metric> (stderr as <metric>_stderr)."""
    return {
        f"lm_eval.{task}.{metric}": round(value, 4)
        for task, metrics in scores.items()
        for metric, value in metrics.items()
    }
