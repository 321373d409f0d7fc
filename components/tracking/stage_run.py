"""One MLflow run per stage, and the one interface stages use to record what they did."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from components.config import StageParams, flatten
from components.constants import (
    ENV_EXPERIMENT,
    ENV_PARENT_RUN_ID,
    RUN_TAG_PIPELINE,
    RUN_TAG_STAGE,
    TAG_EXPERIMENT,
)
from components.project import project_root
from components.tracking import mlflow_env

log = logging.getLogger(__name__)


class Tracker:
    """What a stage may record. Wraps the active MLflow run of the stage."""

    def __init__(self, stage: str, params: StageParams, run_id: str, params_text: str = ""):
        self.stage = stage
        self.params = params
        self.run_id = run_id
        # The whole params file as the stage read it, recorded with every model it registers.
        self.params_text = params_text

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        if numeric:
            mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        mlflow.log_dict(dict(data), name)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        mlflow.set_tags(dict(tags))

    def write_metrics(self, path: str | Path, metrics: Mapping[str, Any]) -> None:
        """The one metrics interface: the DVC metrics file and MLflow get the same keys."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(metrics), indent=2, sort_keys=True) + "\n")
        self.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
        mlflow.log_artifact(str(path), artifact_path="metrics")


@contextmanager
def stage_run(
    stage: str, params: StageParams, profile: str = "", params_file: Path | None = None
) -> Iterator[Tracker]:
    """Open the stage's MLflow run, nested under the pipeline's run when the flow started one.

    `params` is the stage's declared view; exactly those values are logged as run params.
    `params_file` (default: the project's params.yaml) is read now, when the stage starts, so
    the text recorded with its models is the one it ran with even if the file changes later.
    """
    params_text = (params_file or project_root() / "params.yaml").read_text()
    mlflow_env.configure()
    parent = os.environ.get(ENV_PARENT_RUN_ID)
    tags = {RUN_TAG_STAGE: stage, "profile": profile}
    if parent:
        tags[RUN_TAG_PIPELINE] = parent
    if os.environ.get(ENV_EXPERIMENT):
        tags[TAG_EXPERIMENT] = os.environ[ENV_EXPERIMENT]
    with mlflow.start_run(run_name=stage, parent_run_id=parent or None, tags=tags) as run:
        logged = {"profile": profile, **flatten(params.model_dump(mode="json"))}
        mlflow.log_params({k: str(v)[:500] for k, v in logged.items()})
        log.info("stage %s: MLflow run %s", stage, run.info.run_id)
        yield Tracker(stage, params, run.info.run_id, params_text)
