"""What a registering run records for lineage, beside the version's tags, and how it is read.

The run that registers a version logs:
- ARTIFACT_PARAMS: the whole params file the stage ran with (profile and overrides applied);
  the `params_hash` tag covers only the sections the stage read, and a hash cannot be read back.
- ARTIFACT_SOURCES: when the training data holds the packed corpus (documents.parquet), the
  document count per curated source. A few lines whatever the corpus size; which documents it
  held is answered from DVC's cache by `data_hash` (components/tracking/trace.py), once per
  corpus rather than once per version.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq
import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.constants import ARTIFACT_PARAMS, ARTIFACT_SOURCES, DOCUMENTS_FILE


class LineageNotRecorded(LookupError):
    """A version whose registering run did not record lineage (e.g. registered in the UI)."""


def source_counts(data: Path) -> dict[str, int]:
    """{curated source: documents} of the packed corpus at `data`; {} when it holds none."""
    documents = data / DOCUMENTS_FILE if data.is_dir() else data
    if documents.name != DOCUMENTS_FILE or not documents.is_file():
        return {}
    column = pq.read_table(documents, columns=["source"]).column("source")
    counts = column.value_counts().to_pylist()
    return {row["values"]: row["counts"] for row in sorted(counts, key=lambda r: r["values"])}


def record(params_text: str, data: Path) -> None:
    """Log the lineage artifacts into the active run (the one registering the model)."""
    mlflow.log_text(params_text, ARTIFACT_PARAMS)
    counts = source_counts(data)
    if counts:
        mlflow.log_dict(counts, ARTIFACT_SOURCES)


def _artifact(client: MlflowClient, version: ModelVersion, path: str) -> str | None:
    if not version.run_id:
        return None
    with tempfile.TemporaryDirectory() as scratch:
        try:
            local = client.download_artifacts(version.run_id, path, dst_path=scratch)
        except (MlflowException, OSError):
            return None
        return Path(local).read_text()


def _name(version: ModelVersion) -> str:
    return f"{version.name}/{version.version}"


def recorded_params(client: MlflowClient, version: ModelVersion) -> dict[str, Any]:
    """The params file the version's stage ran with, as recorded when it was registered."""
    return yaml.safe_load(recorded_params_text(client, version)) or {}


def recorded_params_text(client: MlflowClient, version: ModelVersion) -> str:
    """The recorded params file, byte for byte (what a rebuild writes back)."""
    text = _artifact(client, version, ARTIFACT_PARAMS)
    if text is None:
        raise LineageNotRecorded(
            f"model version {_name(version)} has no recorded params ({ARTIFACT_PARAMS} in run "
            f"{version.run_id or '(none)'}): it was not registered by a pipeline stage (e.g. "
            "by hand in the MLflow UI, or before params were recorded); re-run the stage that "
            "produces it with `dvc repro --force STAGE` to register a traceable version"
        )
    return text


def recorded_sources(client: MlflowClient, version: ModelVersion) -> Mapping[str, int]:
    """{curated source: documents} of the version's training corpus; {} if it had none."""
    text = _artifact(client, version, ARTIFACT_SOURCES)
    return json.loads(text) if text else {}
