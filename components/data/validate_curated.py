"""validate_curated stage: a Great Expectations gate on the refinery's output.

Re-checks the curated table independently of the blocks that produced it: no PII pattern and no
eval-set n-gram left, only the configured languages, unique ids, sane lengths. A failing suite
fails the stage with the result saved, and the tokenizer (and everything after) does not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from components.config import CurateParams, StageParams
from components.constants import EVAL_SET_FILES
from components.data.decontam import DecontaminationFilter, load_eval_sets
from components.data.documents import DOCS_FILE, Doc
from components.data.expectations import (
    failed_expectations,
    save_result,
    stop_if_failed,
    validate_frame,
)
from components.data.pii_check import find_pii
from components.stage import StageResult
from components.tracking.stage_run import Tracker


class Reads(StageParams):
    curate: CurateParams


@dataclass(frozen=True)
class Paths:
    docs: Path  # curated directory
    tasks: Path  # eval sets the data must not overlap
    report: Path  # GE validation result (JSON)
    docs_site: Path  # GE Data Docs (HTML)
    metrics: Path


def curated_docs_suite(params: Reads, check_decontam: bool) -> gx.ExpectationSuite:
    cfg = params.curate
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="text"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=1, max_value=cfg.max_chars_per_doc
        ),
        gxe.ExpectColumnValuesToBeBetween(column="pii_left", max_value=0),
    ]
    if cfg.languages:
        expectations.append(
            gxe.ExpectColumnDistinctValuesToBeInSet(column="lang", value_set=list(cfg.languages))
        )
    if check_decontam:
        expectations.append(
            gxe.ExpectColumnValuesToBeBetween(column="eval_ngrams_left", max_value=0)
        )
    return gx.ExpectationSuite(name="curated_docs", expectations=expectations)


def with_checks(df: pd.DataFrame, params: Reads, eval_sets: dict[str, list[str]]) -> pd.DataFrame:
    """The table plus the derived columns the suite checks."""
    cfg = params.curate
    out = df.copy()
    out["pii_left"] = out["text"].map(lambda t: sum(find_pii(t).values()))
    if cfg.decontam_ngram is not None:
        probe = DecontaminationFilter(eval_sets, cfg.decontam_ngram, cfg.decontam_min_words)
        out["eval_ngrams_left"] = [
            sum(probe.contaminating_sets(Doc("", t, "")).values()) for t in out["text"]
        ]
    return out


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    df = pd.read_parquet(paths.docs / DOCS_FILE)
    eval_sets = load_eval_sets([paths.tasks / name for name in EVAL_SET_FILES])
    checked = with_checks(df, params, eval_sets)
    suite = curated_docs_suite(params, check_decontam="eval_ngrams_left" in checked)
    result = validate_frame(checked, suite, paths.docs_site)
    save_result(result, paths.report, paths.docs_site, tracker)
    stop_if_failed(
        failed_expectations(result),
        paths.docs,
        paths.report,
        "Tighten params.curate (or fix the blocks); nothing downstream was run.",
    )
    stats = result["statistics"]
    return StageResult(
        metrics={
            "rows": len(df),
            "expectations": stats["evaluated_expectations"],
            "success_percent": stats["success_percent"],
            "pii_left": int(checked["pii_left"].sum()),
        }
    )
