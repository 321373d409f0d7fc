"""The `llm-pipeline` Prefect flow: DVC stages in DAG order as tasks, one MLflow parent run.

DVC decides what is stale (up-to-date stages finish as `Skipped`); Prefect adds retries, logs,
state and the UI; MLflow gets one parent run per flow run with a nested run per stage.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed

from components.constants import ENV_PARENT_RUN_ID, RUN_TAG_STAGE
from components.tracking import mlflow_env
from flows.dvc_stage import (
    StageFailed,
    dvc_executable,
    run_dvc_stage,
    stage_order,
    upstream_closure,
)
from flows.params_overlay import apply_profile, set_params


def _retry_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except StageFailed as err:
        return err.transient
    except Exception:  # noqa: BLE001 - any other failure is not worth retrying
        return False
    return False


def mlflow_ui_base() -> str:
    uri = mlflow_env.tracking_uri()
    return (
        uri.rstrip("/")
        if uri.startswith("http")
        else os.environ.get("LLMOPS_MLFLOW_UI", "http://127.0.0.1:5000")
    )


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=2,
    retry_delay_seconds=15,
    retry_condition_fn=_retry_transient,
)
def dvc_stage(stage: str, root: str, parent_run_id: str, force: bool = False):
    logger = get_run_logger()
    outcome = run_dvc_stage(
        Path(root), stage, logger.info, force=force, env={ENV_PARENT_RUN_ID: parent_run_id}
    )
    if not outcome.ran:
        return Completed(message=f"{stage} is up to date (DVC)", name="Skipped")
    runs = mlflow.search_runs(
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
        f"and tags.`{RUN_TAG_STAGE}` = '{stage}'",
        output_format="list",
        max_results=1,
    )
    if runs:
        run = runs[0]
        create_link_artifact(
            key=f"mlflow-{stage.replace('_', '-')}",
            link=f"{mlflow_ui_base()}/#/experiments/{run.info.experiment_id}/runs/"
            f"{run.info.run_id}",
            link_text=f"MLflow run of {stage}",
            description=f"Stage `{stage}`: params, metrics and artifacts in MLflow.",
        )
    return stage


def record_experiment(root: Path, name: str, logger) -> None:
    """Save the workspace (params overrides, dvc.lock, metrics) as a DVC experiment."""
    proc = subprocess.run(
        [dvc_executable(), "exp", "save", "--force", "-n", name],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if proc.returncode == 0:
        logger.info("recorded as DVC experiment %s (see `dvc exp show`)", name)
    else:
        logger.warning(
            "could not record a DVC experiment (needs a git repository with a commit): %s",
            proc.stderr.strip()[-500:],
        )


@flow(name="llm-pipeline", log_prints=True)
def llm_pipeline(
    stages: list[str] | None = None,
    profile: str | None = None,
    overrides: dict[str, str] | None = None,
    force: bool = False,
    project_dir: str = ".",
) -> list[str]:
    """Run the pipeline's DVC stages in DAG order.

    stages: only these stages and their upstream (default: all).
    profile: scale profile to apply to params.yaml first (smoke | demo | cluster).
    overrides: params to set first, e.g. {"pretrain.max_steps": "100"}; the run is then
        recorded as a DVC experiment so it can be reproduced.
    force: re-run stages even when DVC finds them up to date.
    """
    logger = get_run_logger()
    root = Path(project_dir).resolve()
    os.chdir(root)
    params_file = root / "params.yaml"
    changed = {}
    if profile:
        changed.update(apply_profile(profile, params_file))
    if overrides:
        changed.update(set_params(overrides, params_file))
    for key, (old, new) in changed.items():
        logger.info("params: %s %r -> %r", key, old, new)

    order = stage_order(root)
    if stages:
        wanted = upstream_closure(root, stages)
        order = [s for s in order if s in wanted]
    mlflow_env.configure()
    run_name = flow_run.get_name() or "llm-pipeline"
    ran: list[str] = []
    with mlflow.start_run(
        run_name=run_name, tags={"prefect.flow_run_id": str(flow_run.get_id())}
    ) as parent:
        mlflow.log_params(
            {
                "profile": profile or "",
                "stages": ",".join(order),
                **{f"override.{k}": v for k, v in (overrides or {}).items()},
            }
        )
        for stage in order:
            result = dvc_stage(stage, str(root), parent.info.run_id, force=force)
            if result == stage:
                ran.append(stage)
        mlflow.log_metric("stages_run", len(ran))
    summary = "\n".join(f"| {s} | {'ran' if s in ran else 'up to date'} |" for s in order)
    create_markdown_artifact(
        key="pipeline-summary", markdown=f"| stage | status |\n|---|---|\n{summary}\n"
    )
    if changed:
        record_experiment(root, run_name, logger)
    return ran


if __name__ == "__main__":
    llm_pipeline()
