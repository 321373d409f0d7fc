"""What a person reads at the end of a run: task accuracy per model, the promotion decision and
where to look next, in a few lines instead of every metric DVC tracks.

Reads only files the report stage also reads (the evaluate table, the judge and promote
metrics); missing ones are said to be missing, since a run can stop before them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from components.evaluation.report import families, verdict_words


def _acc(row: Mapping[str, Any], family: str | None) -> str:
    acc = row.get(f"accuracy.{family}" if family else "eval_accuracy")
    err = row.get(f"accuracy_stderr.{family}" if family else "eval_accuracy_stderr")
    if acc is None:
        return "n/a"
    return f"{acc:.3f}" + (f" ± {err:.3f}" if isinstance(err, float) else "")


def accuracy_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="held-out task accuracy (± stderr)", title_justify="left")
    table.add_column("task")
    for row in rows:
        table.add_column(str(row["model"]), justify="right")
    for family in families(rows):
        table.add_row(family, *(_acc(r, family) for r in rows))
    table.add_row("all", *(_acc(r, None) for r in rows), style="bold")
    table.add_row(
        "perplexity",
        *(f"{r['perplexity']:.2f}" if r.get("perplexity") is not None else "n/a" for r in rows),
    )
    return table


def decision_lines(promotion: Mapping[str, Any] | None, judge: Mapping[str, Any] | None) -> Text:
    text = Text()
    if promotion is None:
        text.append("promotion: did not run\n", style="yellow")
    else:
        promoted = bool(promotion.get("promoted"))
        verdict = verdict_words(promotion)
        text.append("promotion: ", style="bold")
        text.append(
            f"challenger v{promotion.get('challenger_version')} {verdict} "
            f"(champion: v{promotion.get('champion_version')})\n",
            style="green" if promoted else "yellow",
        )
        if promotion.get("reason"):
            text.append(f"  {promotion['reason']}\n")
        for key in sorted(k for k in promotion if k.startswith("gate.")):
            text.append(f"  gate {key.removeprefix('gate.')}: {promotion[key]}\n")
    if judge is not None:
        if judge.get("judge.available"):
            text.append(
                f"judge ({judge.get('judge.judge')}): win rate {judge['judge.win_rate']:.3f} "
                f"[{judge['judge.win_rate_ci_low']:.3f}, {judge['judge.win_rate_ci_high']:.3f}] "
                f"vs {judge.get('judge.baseline')}\n"
            )
        else:
            text.append(f"judge: unavailable ({judge.get('judge.error', 'no verdicts')})\n")
    return text


def _read(path: Path) -> Any | None:
    return json.loads(path.read_text()) if path.is_file() else None


def summary(reports: Path, metrics: Path) -> Group:
    """The end-of-run summary from a project's `reports/` and `metrics/` folders."""
    rows = _read(reports / "evaluation.json")
    html = reports / "evaluation_report" / "report.html"
    parts: list[Any] = [
        accuracy_table(rows) if rows else Text("evaluation: did not run\n", style="yellow"),
        decision_lines(_read(metrics / "promote.json"), _read(metrics / "judge.json")),
        Text(
            (f"report: {html}\n" if html.is_file() else "report: not written\n")
            + "UIs: `llmops ui` (Prefect :4200, MLflow :5000); plots: `dvc plots show`; "
            "every metric: `dvc metrics show`"
        ),
    ]
    return Group(*parts)
