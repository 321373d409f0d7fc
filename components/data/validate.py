"""validate_raw stage: a Great Expectations gate on the ingested documents.

A failing suite fails the stage (so DVC and the flow stop before anything downstream runs), after
the full validation result has been written for inspection.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from components.config import Params
from components.data.documents import DOCS_FILE
from components.stage import StageResult
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """The data did not pass its expectation suite."""


@dataclass(frozen=True)
class Paths:
    docs: Path     # ingested directory
    report: Path   # GE validation result (JSON)
    metrics: Path


def raw_docs_suite(params: Params) -> gx.ExpectationSuite:
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


def validate_frame(df: pd.DataFrame, suite: gx.ExpectationSuite) -> dict:
    """Run `suite` on `df` with an ephemeral GE context; returns the JSON validation result."""
    context = gx.get_context(mode="ephemeral")
    source = context.data_sources.add_pandas(f"{suite.name}_source")
    batch_def = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(suite)
    batch = batch_def.get_batch(batch_parameters={"dataframe": df})
    return batch.validate(suite).to_json_dict()


def failed_expectations(result: dict) -> list[str]:
    return [
        f"{r['expectation_config']['type']}({r['expectation_config']['kwargs'].get('column', '')})"
        for r in result["results"]
        if not r["success"]
    ]


def run(params: Params, paths: Paths, tracker: Tracker) -> StageResult:
    df = pd.read_parquet(paths.docs / DOCS_FILE)
    result = validate_frame(df, raw_docs_suite(params))
    paths.report.parent.mkdir(parents=True, exist_ok=True)
    paths.report.write_text(json.dumps(result, indent=2, default=str))
    tracker.log_artifact(paths.report, "validation")
    stats = result["statistics"]
    if not result["success"]:
        failed = failed_expectations(result)
        raise ValidationFailed(
            f"{len(failed)} expectation(s) failed on {paths.docs}: {', '.join(failed)}. "
            f"Full result: {paths.report}. Fix the raw data or params.validate_raw; "
            "nothing downstream was run."
        )
    return StageResult(metrics={
        "rows": len(df),
        "expectations": stats["evaluated_expectations"],
        "success_percent": stats["success_percent"],
    })
