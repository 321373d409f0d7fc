"""validate_raw stage: a Great Expectations gate on the ingested documents.

A failing suite fails the stage (so DVC and the flow stop before anything downstream runs), after
the full validation result has been written for inspection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from components.config import IngestParams, StageParams, ValidateRawParams
from components.data.documents import DOCS_FILE
from components.data.expectations import (
    failed_expectations,
    save_result,
    stop_if_failed,
    validate_frame,
)
from components.stage import StageResult
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)


class Reads(StageParams):
    ingest: IngestParams
    validate_raw: ValidateRawParams


@dataclass(frozen=True)
class Paths:
    docs: Path  # ingested directory
    report: Path  # GE validation result (JSON)
    docs_site: Path  # GE Data Docs (HTML)
    metrics: Path


def raw_docs_suite(params: Reads) -> gx.ExpectationSuite:
    cfg = params.validate_raw
    return gx.ExpectationSuite(
        name="raw_docs",
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            gxe.ExpectColumnValuesToNotBeNull(column="id"),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="text", min_value=cfg.min_chars, max_value=cfg.max_chars
            ),
            gxe.ExpectColumnValuesToBeInSet(column="source", value_set=list(params.ingest.sources)),
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
        ],
    )


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    df = pd.read_parquet(paths.docs / DOCS_FILE)
    result = validate_frame(df, raw_docs_suite(params), paths.docs_site)
    save_result(result, paths.report, paths.docs_site, tracker)
    stats = result["statistics"]
    stop_if_failed(
        failed_expectations(result),
        paths.docs,
        paths.report,
        "Fix the raw data or params.validate_raw; nothing downstream was run.",
    )
    return StageResult(
        metrics={
            "rows": len(df),
            "expectations": stats["evaluated_expectations"],
            "success_percent": stats["success_percent"],
        }
    )
