"""The end-of-run summary: the accuracy table per model and task, the decision, the report."""

from __future__ import annotations

import json

from rich.console import Console

from components.evaluation.summary import summary

ROWS = [
    {
        "model": "base",
        "eval_accuracy": 0.1,
        "eval_accuracy_stderr": 0.02,
        "perplexity": 12.5,
        "accuracy.count": 0.2,
        "accuracy_stderr.count": 0.04,
        "accuracy.arith": 0.0,
        "accuracy_stderr.arith": 0.0,
    },
    {
        "model": "sft",
        "eval_accuracy": 0.45,
        "eval_accuracy_stderr": 0.03,
        "perplexity": 14.25,
        "accuracy.count": 0.5,
        "accuracy_stderr.count": 0.05,
        "accuracy.arith": 0.4,
        "accuracy_stderr.arith": 0.049,
    },
]


def _render(reports, metrics) -> str:
    console = Console(width=200, record=True)
    console.print(summary(reports, metrics))
    return console.export_text().replace("│", " ")


def test_the_summary_shows_each_model_per_task_and_the_decision(tmp_path):
    reports, metrics = tmp_path / "reports", tmp_path / "metrics"
    (reports / "evaluation_report").mkdir(parents=True)
    metrics.mkdir()
    (reports / "evaluation.json").write_text(json.dumps(ROWS))
    (reports / "evaluation_report" / "report.html").write_text("<html/>")
    (metrics / "promote.json").write_text(
        json.dumps(
            {
                "promoted": False,
                "challenger_version": "3",
                "champion_version": "2",
                "reason": "eval_accuracy: gain not significant",
                "gate.eval_accuracy": "fail",
            }
        )
    )
    text = _render(reports, metrics)
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    assert "base" in text and "sft" in text
    assert lines["arith"][1:] == ["0.000", "±", "0.000", "0.400", "±", "0.049"]
    assert lines["all"][1:] == ["0.100", "±", "0.020", "0.450", "±", "0.030"]
    assert lines["perplexity"][1:] == ["12.50", "14.25"]
    assert "challenger v3 kept the champion (champion: v2)" in text
    assert "gate eval_accuracy: fail" in text
    assert str(reports / "evaluation_report" / "report.html") in text


def test_a_run_that_stopped_early_says_what_is_missing(tmp_path):
    text = _render(tmp_path / "reports", tmp_path / "metrics")
    assert "evaluation: did not run" in text
    assert "promotion: did not run" in text
    assert "report: not written" in text
