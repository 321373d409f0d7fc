"""Running a Great Expectations suite on a data frame and keeping its result: the gate every
validate_* stage applies to its own suite."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import great_expectations as gx
import pandas as pd

from components.tracking.stage_run import Tracker


class ValidationFailed(RuntimeError):
    """The data did not pass its expectation suite."""


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
