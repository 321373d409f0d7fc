"""The `llm-pipeline` Prefect flow: DVC stages in DAG order as tasks, one MLflow parent run.

DVC decides what is stale (`dvc status`: up-to-date stages finish as `Skipped`, stages DVC
restores from its run cache as `Restored`); Prefect adds retries, logs, state and the UI; MLflow
gets one parent run per flow run with a nested run per stage that ran.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import flow_run
from prefect.states import Completed, State

from components.constants import (
    ENV_PARENT_RUN_ID,
    ENV_RUN_TOKEN,
    EXIT_TRANSIENT,
    RUN_TAG_STAGE,
    RUN_TAG_TOKEN,
)
from components.failures import TrackingUnavailable, is_transient, outage_message
from components.project import project_root
from components.tracking import mlflow_env
from flows import run_lock
from flows.dvc_stage import (
    Outcome,
    StageFailed,
    dvc_executable,
    run_dvc_stage,
    stage_order,
    upstream_closure,
)
from flows.params_overlay import apply_profile, set_params
from flows.recovery import recover
from flows.run_lock import restore_params


def retry_if_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry a stage only when it exited with EXIT_TRANSIENT; every other failure is final."""
    if not state.is_failed():
        return False
    err = state.result(raise_on_failure=False)
    return isinstance(err, StageFailed) and err.exit_code == EXIT_TRANSIENT


def mlflow_ui_base(root: Path) -> str:
    uri = mlflow_env.tracking_uri(root)
    return (
        uri.rstrip("/")
        if uri.startswith("http")
        else os.environ.get("LLMOPS_MLFLOW_UI", "http://127.0.0.1:5000")
    )


# How each outcome shows in Prefect (all are Completed states; the name tells them apart).
_STATES = {
    Outcome.RAN: ("Completed", "{stage} ran"),
    Outcome.RESTORED: ("Restored", "{stage} restored from DVC's run cache (no command ran)"),
    Outcome.SKIPPED: ("Skipped", "{stage} is up to date (dvc status)"),
}


def link_mlflow_run(stage: str, root: Path, parent_run_id: str) -> None:
    """A Prefect link artifact to the stage's MLflow run under this flow run's parent run."""
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
            link=f"{mlflow_ui_base(root)}/#/experiments/{run.info.experiment_id}/runs/"
            f"{run.info.run_id}",
            link_text=f"MLflow run of {stage}",
            description=f"Stage `{stage}`: params, metrics and artifacts in MLflow.",
        )


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=2,
    retry_delay_seconds=15,
    retry_condition_fn=retry_if_transient,
)
def dvc_stage(stage: str, root: str, parent_run_id: str, force: bool = False) -> State:
    """One DVC stage; its state's result is the Outcome. Fails with StageFailed."""
    logger = get_run_logger()
    outcome = run_dvc_stage(
        Path(root), stage, logger.info, force=force, env={ENV_PARENT_RUN_ID: parent_run_id}
    )
    if outcome is Outcome.RAN:
        # A restored stage ran no command, so it has no MLflow run of its own to link.
        link_mlflow_run(stage, Path(root), parent_run_id)
    name, message = _STATES[outcome]
    return Completed(data=outcome, name=name, message=message.format(stage=stage))


# `dvc exp save` commits the workspace's small files (params, dvc.lock, metrics) to a git ref:
# seconds; minutes means git or DVC is stuck, and the pipeline's result does not depend on it.
EXP_SAVE_TIMEOUT_S = 300


def record_experiment(root: Path, name: str, logger, timeout_s: float = EXP_SAVE_TIMEOUT_S) -> None:
    """Save the workspace (params overrides, dvc.lock, metrics) as a DVC experiment."""
    try:
        proc = subprocess.run(
            [dvc_executable(), "exp", "save", "--force", "-n", name],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        logger.warning(
            "could not record a DVC experiment: `dvc exp save -n %s` did not finish in %g s and "
            "was stopped; run it by hand from %s to record this run",
            name,
            timeout_s,
            root,
        )
        return
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
    project_dir: str | None = None,
    wait_for_lock: bool = False,
) -> list[str]:
    """Run the pipeline's DVC stages in DAG order.

    stages: only these stages and their upstream (default: all).
    profile: scale profile to apply to params.yaml first (smoke | demo | cluster).
    overrides: params to set first, e.g. {"pretrain.max_steps": "100"}; the run is then
        recorded as a DVC experiment so it can be reproduced.
    force: re-run stages even when DVC finds them up to date.
    project_dir: the project root (default: $LLMOPS_PROJECT_DIR, else found from the working
        directory); every path resolves from it, the working directory is left alone.
    wait_for_lock: when another run of the project holds the run lock, wait for it instead of
        failing at once (flows/run_lock.py). The lock is taken before params.yaml is touched;
        profile and overrides are undone if the run fails.
    Returns the stages whose command ran.
    """
    logger = get_run_logger()
    root = project_root(project_dir)
    with run_lock.hold(
        root,
        f"llm-pipeline flow run {flow_run.get_name()}",
        wait=wait_for_lock,
        flow_run_id=str(flow_run.get_id() or ""),
    ) as (_, previous):
        recover(root, previous)
        backup = _backup_params(root, bool(profile or overrides))
        try:
            ran = _run(root, stages, profile, overrides, force, logger)
        except BaseException:
            if backup:
                restore_params(root, root / "params.yaml", backup, "this failed run changed it")
            raise
        if backup:
            backup.unlink(missing_ok=True)
            run_lock.update(root, params_backup="")
        return ran


def _backup_params(root: Path, changes: bool) -> Path | None:
    return run_lock.backup_params(root, root / "params.yaml") if changes else None


def _start_parent_run(run_name: str, root: Path):
    """The pipeline's MLflow parent run; an unreachable tracking server stops the run here,
    before any stage has had its outputs deleted by DVC."""
    try:
        return mlflow.start_run(
            run_name=run_name,
            tags={"prefect.flow_run_id": str(flow_run.get_id()), RUN_TAG_TOKEN: _token()},
        )
    except Exception as err:
        if is_transient(err):
            raise TrackingUnavailable(outage_message(mlflow_env.tracking_uri(root), err)) from err
        raise


def _token() -> str:
    return os.environ.get(ENV_RUN_TOKEN, "")


def _run(
    root: Path,
    stages: list[str] | None,
    profile: str | None,
    overrides: dict[str, str] | None,
    force: bool,
    logger,
) -> list[str]:
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
    mlflow_env.configure(root)
    run_name = flow_run.get_name() or "llm-pipeline"
    outcomes: dict[str, Outcome] = {}
    with _start_parent_run(run_name, root) as parent:
        run_lock.update(root, mlflow_run_id=parent.info.run_id)
        mlflow.log_params(
            {
                "profile": profile or "",
                "stages": ",".join(order),
                **{f"override.{k}": v for k, v in (overrides or {}).items()},
            }
        )
        for stage in order:
            state = dvc_stage(stage, str(root), parent.info.run_id, force=force, return_state=True)
            # result() raises the task's failure, so a failed stage fails the flow.
            outcomes[stage] = Outcome(state.result())
        ran = [s for s, o in outcomes.items() if o == Outcome.RAN]
        mlflow.log_metric("stages_run", len(ran))
        mlflow.log_metric("stages_restored", list(outcomes.values()).count(Outcome.RESTORED))
    summary = "\n".join(f"| {s} | {o} |" for s, o in outcomes.items())
    create_markdown_artifact(
        key="pipeline-summary", markdown=f"| stage | status |\n|---|---|\n{summary}\n"
    )
    if changed:
        record_experiment(root, run_name, logger)
    return ran


if __name__ == "__main__":
    llm_pipeline()
