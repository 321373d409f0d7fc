"""report stage: one evaluation report per run, Markdown and HTML, for people.

Reads what evaluate, judge, safety and promote wrote and adds the contamination of every eval
set with the curated training corpus (components/evaluation/contamination.py), shown next to
the score it qualifies. Writes a self-contained directory (report.md, report.html and the plots
they show: per-task bars, accuracy/perplexity per model, the judge matrix) that is logged to the
stage's MLflow run under `report/`; the per-task plot is also declared for `dvc plots`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import markdown
import numpy as np
from matplotlib.figure import Figure

from components.config import ReportParams, StageParams
from components.constants import EVAL_CHALLENGER, MODEL_POLICY, RUN_TAG_REPORT_OF
from components.data.documents import DOCS_FILE, read_docs
from components.evaluation.contamination import Overlap, contamination
from components.evaluation.eval_set import read_eval_set
from components.evaluation.significance import (
    PER_ITEM,
    TooFewItems,
    disagreement,
    interval_direction,
    mcnemar,
    per_item,
)
from components.project import project_root
from components.stage import StageResult
from components.tracking import lineage
from components.tracking.stage_run import Tracker

EVAL, PREFS, JUDGE, SAFETY = "eval", "prefs_test", "judge_prompts", "adversarial"


class Reads(StageParams):
    report: ReportParams


@dataclass(frozen=True)
class Paths:
    table: Path  # reports/evaluation.json (evaluate: one row per model)
    predictions: Path  # reports/predictions.jsonl (evaluate: per model and item, correct or not)
    eval_plot: Path  # plots/evaluation.png
    judge: Path  # metrics/judge.json
    judge_plot: Path  # plots/judge_matrix.png
    safety: Path  # metrics/safety.json
    promotion: Path  # metrics/promote.json
    align: Path  # metrics/align.json (`methods.<m>.*`: every preference method that ran)
    eval_set: Path  # data/tasks/eval.jsonl
    prefs_test: Path  # data/tasks/prefs_test.jsonl
    judge_prompts: Path  # data/judge/prompts.jsonl
    safety_prompts: Path  # data/safety/adversarial.jsonl
    corpus: Path  # data/curated (docs.parquet)
    out: Path  # report directory
    per_task_plot: Path  # plots/per_task.png
    metrics: Path


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _num(v: Any, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _overlap_cell(o: Overlap | None) -> str:
    if o is None:
        return "n/a"
    return f"{o.contaminated}/{o.items} ({o.checked} checkable)"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def families(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({k.split(".", 1)[1] for r in rows for k in r if k.startswith("accuracy.")})


def render_per_task(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Grouped bars: accuracy per task family, one bar per model."""
    fams = families(rows)
    fig = Figure(figsize=(max(6.0, 1.3 * len(fams)), 3.5))
    ax = fig.subplots()
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(fams))
    for i, r in enumerate(rows):
        ax.bar(x + i * width, [r.get(f"accuracy.{f}", 0.0) for f in fams], width, label=r["model"])
    ax.set_xticks(x + width * (len(rows) - 1) / 2, fams)
    ax.set_ylim(0, 1)
    ax.set_title("accuracy per task family (lm-evaluation-harness)", fontsize=10)
    ax.legend(fontsize=8, ncols=len(rows))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)


def accuracy_section(rows: Sequence[Mapping[str, Any]], overlap: Mapping[str, Overlap]) -> str:
    names = [r["model"] for r in rows]

    def cell(r: Mapping[str, Any], fam: str | None) -> str:
        acc = r.get(f"accuracy.{fam}" if fam else "eval_accuracy")
        err = r.get(f"accuracy_stderr.{fam}" if fam else "eval_accuracy_stderr")
        return _num(acc) + (f" ± {err:.3f}" if isinstance(err, float) else "")

    body = [
        [f"`{f}`", *(cell(r, f) for r in rows), _overlap_cell(overlap.get(f"{EVAL}/{f}"))]
        for f in families(rows)
    ]
    body.append(["**all**", *(cell(r, None) for r in rows), _overlap_cell(overlap.get(EVAL))])
    body.append(["perplexity (held-out)", *(_num(r.get("perplexity"), 2) for r in rows), "-"])
    return "\n\n".join(
        [
            "## Task accuracy\n\nlm-evaluation-harness, greedy, ± standard error. Last column: "
            "eval items that share an n-gram with the training corpus.",
            table(["task", *names, "contamination"], body),
            "![accuracy per task](per_task.png)\n\n![accuracy and perplexity](evaluation.png)",
        ]
    )


def calibration_rows(judge: Mapping[str, Any]) -> list[list[str]]:
    """The judge's calibration scores beside the thresholds they had to meet."""
    names = (
        ("accuracy", "min_accuracy", ">="),
        ("consistency", "min_consistency", ">="),
        ("invalid_rate", "max_invalid_rate", "<="),
    )
    return [
        [
            f"calibration {name.replace('_', ' ')}",
            f"{_num(judge.get(f'judge.calibration.{name}'))} (needs {op} "
            f"{_num(judge.get(f'judge.threshold.{limit}'))}, "
            f"{_num(judge.get('judge.calibration.n_pairs'))} pairs)",
        ]
        for name, limit, op in names
    ]


def judge_section(judge: Mapping[str, Any], overlap: Overlap | None) -> str:
    head = (
        f"## Pairwise judge\n\nChallenger vs **{judge.get('judge.baseline', 'n/a')}** "
        f"({judge.get('judge.baseline_reason', '')}); judge: `{judge.get('judge.judge')}`; "
        f"prompts: {_overlap_cell(overlap)} contaminated."
    )
    if judge.get("judge.independent") == 0:
        head += (
            f"\n\n**Not independent**: the judge {judge.get('judge.independence')}; its verdict "
            "cannot pass the judge gate on its own."
        )
    calibration = table(["", "value"], calibration_rows(judge))
    if not judge.get("judge.available"):
        return "\n\n".join(
            [
                f"{head}\n\n**Judge unavailable**: {judge.get('judge.error', 'no verdicts')}. "
                "The judge metrics are missing; the gate's `if_missing` decided.",
                calibration,
            ]
        )
    rows = [
        ["win / tie / loss", f"{judge['judge.wins']} / {judge['judge.ties']} / "
         f"{judge['judge.losses']} of {judge['judge.n_pairs']}"],
        ["inconsistent / invalid", f"{judge['judge.inconsistent']} / {judge['judge.invalid']}"],
        ["win rate (ties, inconsistent = ½)", f"{judge['judge.win_rate']:.3f} "
         f"[{judge['judge.win_rate_ci_low']:.3f}, {judge['judge.win_rate_ci_high']:.3f}]"],
        ["position consistency", f"{judge['judge.consistency']:.3f}"],
        ["gated `judge_win_rate`", _num(judge.get("judge_win_rate"))],
        *calibration_rows(judge),
    ]  # fmt: skip
    return "\n\n".join(
        [
            head,
            table(["", "value"], rows),
            "Each pair is judged twice (challenger shown first, then second): verdicts that "
            "disagree are inconsistent, replies that name no verdict invalid (left out).",
            "![judge matrix](judge_matrix.png)",
        ]
    )


def disagreement_banner(
    judge: Mapping[str, Any], promotion: Mapping[str, Any], predictions: Path
) -> str:
    """A warning when accuracy and the judge point opposite ways beyond their intervals: from
    promote's signals (vs the champion), else recomputed against the judge's SFT baseline."""
    if promotion.get("signals.disagree"):
        accuracy, verdict, versus = (
            promotion["signals.accuracy"],
            promotion["signals.judge"],
            "champion",
        )
    elif judge.get("judge.baseline") == "sft" and "judge.win_rate_ci_low" in judge:
        items = {model: per_item(predictions, model) for model in (EVAL_CHALLENGER, "sft")}
        metric = next(iter(PER_ITEM))
        try:
            test = mcnemar(
                items[EVAL_CHALLENGER][metric], items["sft"][metric], promotion["confidence"]
            )
        except TooFewItems:
            return ""
        accuracy, versus = test.direction, "the SFT model"
        verdict = interval_direction(
            judge["judge.win_rate_ci_low"], judge["judge.win_rate_ci_high"]
        )
    else:
        return ""
    if not disagreement(accuracy, verdict):
        return ""
    rule = f"`promote.on_disagreement: {promotion.get('signals.rule', 'n/a')}`"
    return (
        f"> **Signals disagree.** Against {versus}, held-out accuracy says the challenger is "
        f"**{accuracy}** (paired test) while the judge (`{judge.get('judge.judge')}`) says "
        f"**{verdict}** (its interval excludes ½). "
        + (
            f"The decision followed {rule}."
            if versus == "champion"
            else f"No champion was compared; against one, {rule} decides."
        )
    )


def safety_section(safety: Mapping[str, Any], overlap: Overlap | None) -> str:
    cats = sorted(
        k.removeprefix("safety.toxicity_rate.")
        for k in safety
        if k.startswith("safety.toxicity_rate.")
    )
    rows = [["**all**", _num(safety.get("toxicity_rate")), _num(safety.get("regurgitation_rate"))]]
    rows += [
        [
            c,
            _num(safety.get(f"safety.toxicity_rate.{c}")),
            _num(safety.get(f"safety.regurgitation_rate.{c}")),
        ]
        for c in cats
    ]
    return "\n\n".join(
        [
            f"## Safety\n\n{safety.get('safety.n_prompts', 0)} adversarial prompts; prompts "
            f"contaminated: {_overlap_cell(overlap)}. Toxic: the refinery's classifier scores the "
            "answer >= the threshold; regurgitated: the answer repeats n words of one training "
            "document that the prompt did not give it.",
            table(["category", "toxicity rate", "regurgitation rate"], rows),
        ]
    )


def verdict_words(promotion: Mapping[str, Any]) -> str:
    """The promote stage's decision in words (metrics/promote.json)."""
    if promotion.get("verdict") == "canary":
        return "sent to the canary (the deploy stage's live window decides)"
    return "promoted" if promotion.get("promoted") else "kept the champion"


def decision_section(promotion: Mapping[str, Any]) -> str:
    gates = sorted(k.removeprefix("gate.") for k in promotion if k.startswith("gate."))
    rows = [[g, promotion[f"gate.{g}"], _num(promotion.get(f"challenger.{g}"))] for g in gates]
    verdict = verdict_words(promotion)
    return "\n\n".join(
        [
            f"## Promotion\n\nChallenger version {promotion.get('challenger_version')}: "
            f"**{verdict}** (champion now version {promotion.get('champion_version')}).",
            f"> {promotion.get('reason', '')}",
            table(["gate", "status", "challenger value"], rows),
        ]
    )


METHOD_COLUMNS = (
    ("test_accuracy", "pref. acc."),
    ("heldout.accuracy", "greedy acc."),
    ("heldout.kl", "KL to SFT"),
    ("train_runtime_s", "train s"),
)


def methods_section(align: Mapping[str, Any]) -> str:
    """The preference methods that ran in this align stage (`align.method` + `align.compare`),
    trained from the same SFT model and scored on the same held-out pairs."""
    methods = sorted({k.split(".")[1] for k in align if k.startswith("methods.")})
    if not methods:
        return "## Preference methods\n\nThe align stage ran one on-policy method: see its metrics."
    tasks = sorted(
        {
            k.removeprefix(f"methods.{m}.heldout.accuracy.")
            for m in methods
            for k in align
            if k.startswith(f"methods.{m}.heldout.accuracy.")
        }
    )
    header = ["method", *(label for _, label in METHOD_COLUMNS), *tasks]
    rows = [
        [
            m,
            *(_num(align.get(f"methods.{m}.{key}")) for key, _ in METHOD_COLUMNS),
            *(_num(align.get(f"methods.{m}.heldout.accuracy.{t}")) for t in tasks),
        ]
        for m in methods
    ]
    return "\n\n".join(
        [
            "## Preference methods\n\nEvery method of `align.method` and `align.compare`, trained "
            "from the same SFT model and scored on the same held-out pairs (pref. acc.: the "
            "implicit reward prefers the chosen answer; greedy acc.: answers judged correct, "
            "overall and per task).",
            table(header, rows),
        ]
    )


def contamination_section(overlap: Mapping[str, Overlap]) -> str:
    rows = [
        [name, o.items, o.checked, o.contaminated, f"{o.rate:.3f}", "; ".join(o.examples)[:120]]
        for name, o in sorted(overlap.items())
    ]
    return "\n\n".join(
        [
            "## Contamination\n\nEval items sharing an n-gram with the curated training corpus "
            "(items shorter than n words matched whole; too short to match: not checkable).",
            table(["eval set", "items", "checkable", "contaminated", "rate", "e.g."], rows),
        ]
    )


def render(
    commit: str,
    banner: str,
    rows: Sequence[Mapping[str, Any]],
    judge: Mapping[str, Any],
    safety: Mapping[str, Any],
    promotion: Mapping[str, Any],
    overlap: Mapping[str, Overlap],
    align: Mapping[str, Any],
) -> str:
    return (
        "\n\n".join(
            [
                f"# Evaluation report\n\nGit commit `{commit}`."
                + (f"\n\n{banner}" if banner else ""),
                decision_section(promotion),
                accuracy_section(rows, overlap),
                judge_section(judge, overlap.get(JUDGE)),
                safety_section(safety, overlap.get(SAFETY)),
                methods_section(align),
                contamination_section(overlap),
            ]
        )
        + "\n"
    )


def to_html(md: str) -> str:
    body = markdown.markdown(md, extensions=["tables"])
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>Evaluation report</title>"
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.report
    rows = json.loads(paths.table.read_text())
    judge, safety, promotion, align = (
        json.loads(p.read_text()) for p in (paths.judge, paths.safety, paths.promotion, paths.align)
    )
    eval_sets = {
        EVAL: (read_eval_set(paths.eval_set), "task"),
        PREFS: (_jsonl(paths.prefs_test), "task"),
        JUDGE: (read_eval_set(paths.judge_prompts, keys=("id", "task", "prompt")), None),
        SAFETY: (read_eval_set(paths.safety_prompts, keys=("id", "category", "prompt")), None),
    }
    corpus = (d.text for d in read_docs(paths.corpus / DOCS_FILE))
    overlap = contamination(eval_sets, corpus, cfg.contamination_ngram, cfg.contamination_min_words)

    out = paths.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    render_per_task(rows, paths.per_task_plot)
    for src, name in (
        (paths.per_task_plot, "per_task.png"),
        (paths.eval_plot, "evaluation.png"),
        (paths.judge_plot, "judge_matrix.png"),
    ):
        shutil.copy2(src, out / name)
    banner = disagreement_banner(judge, promotion, paths.predictions)
    commit = lineage.git_commit(project_root())
    md = render(commit, banner, rows, judge, safety, promotion, overlap, align)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(to_html(md))
    (out / "contamination.json").write_text(
        json.dumps({k: asdict(v) for k, v in sorted(overlap.items())}, indent=2) + "\n"
    )
    tracker.log_artifact(out, "report")
    if promotion.get("challenger_version"):
        tracker.set_tags({RUN_TAG_REPORT_OF: f"{MODEL_POLICY}/{promotion['challenger_version']}"})

    metrics: dict[str, Any] = {}
    for name, o in sorted(overlap.items()):
        metrics[f"contamination.{name.replace('/', '.')}.rate"] = round(o.rate, 4)
        metrics[f"contamination.{name.replace('/', '.')}.contaminated"] = o.contaminated
    return StageResult(metrics=metrics)
