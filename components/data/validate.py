"""validate_raw stage: a Great Expectations gate on the ingested documents.

A failing suite fails the stage (so DVC and the flow stop before anything downstream runs), after
the full validation result has been written for inspection.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from components.config import IngestParams, StageParams, ValidateRawParams
from components.data.documents import DOCS_FILE
from components.stage import StageResult
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """The data did not pass its expectation suite."""


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


def validate_frame(
    df: pd.DataFrame, suite: gx.ExpectationSuite, docs_site: Path | None = None
) -> dict:
    """Run `suite` on `df`; returns the JSON validation result.

    With `docs_site`, the run goes through a GE checkpoint in a throw-away file context whose
    Data Docs (HTML) are then copied to `docs_site`.
    """
    with tempfile.TemporaryDirectory() as tmp:
        context = (
            gx.get_context(mode="file", project_root_dir=tmp)
            if docs_site
            else gx.get_context(mode="ephemeral")
        )
        source = context.data_sources.add_pandas(f"{suite.name}_source")
        batch_def = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe(
            "all"
        )
        suite = context.suites.add(suite)
        if docs_site is None:
            batch = batch_def.get_batch(batch_parameters={"dataframe": df})
            return batch.validate(suite).to_json_dict()
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch_def, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=suite.name,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": df})
        site = Path(tmp) / "gx" / "uncommitted" / "data_docs" / "local_site"
        if docs_site.exists():
            shutil.rmtree(docs_site)
        shutil.copytree(site, docs_site)
        return next(iter(run.run_results.values())).to_json_dict()


# Keys of a GE result that differ on every run of the same suite on the same data (ids, clock).
VOLATILE_KEYS = frozenset(
    {
        "id",
        "run_id",
        "run_name",
        "run_time",
        "validation_time",
        "ge_load_time",
        "checkpoint_id",
        "validation_id",
    }
)


def stable(result):
    """The result without run ids and timestamps: the report is a DVC output that downstream
    stages depend on, so the same data must give the same bytes or every gate run would
    invalidate them."""
    if isinstance(result, dict):
        return {k: stable(v) for k, v in result.items() if k not in VOLATILE_KEYS}
    if isinstance(result, list):
        return [stable(v) for v in result]
    return result


def save_result(result: dict, report: Path, docs_site: Path, tracker: Tracker) -> None:
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(stable(result), indent=2, sort_keys=True, default=str) + "\n")
    tracker.log_artifact(report, "validation")
    tracker.log_artifact(docs_site, "validation/data_docs")


def failed_expectations(result: dict) -> list[str]:
    return [
        f"{r['expectation_config']['type']}({r['expectation_config']['kwargs'].get('column', '')})"
        for r in result["results"]
        if not r["success"]
    ]


def stop_if_failed(failed: list[str], data: Path, report: Path, what_to_do: str) -> None:
    """The gate: raise, naming the failed expectations, the full result and the remedy."""
    if failed:
        raise ValidationFailed(
            f"{len(failed)} expectation(s) failed on {data}: {', '.join(failed)}. "
            f"Full result: {report}. {what_to_do}"
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
