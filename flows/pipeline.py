"""The `llm-pipeline` Prefect flow: DVC stages in DAG order as tasks, one MLflow parent run.

DVC decides what is stale (`dvc status`: up-to-date stages finish as `Skipped`, stages DVC
restores from its run cache as `Restored`); Prefect adds retries, logs, state and the UI; MLflow
gets one parent run per flow run with a nested run per stage that ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from prefect import Task, flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import flow_run
from prefect.states import Completed, State

from components.constants import (
    ENV_EXPERIMENT,
    ENV_PARENT_RUN_ID,
    EXIT_TRANSIENT,
    RUN_TAG_STAGE,
    TAG_EXPERIMENT,
)
from components.failures import TrackingUnavailable, is_transient, outage_message
from components.project import project_root
from components.tracking import mlflow_env
from flows import workspace
from flows.dvc_stage import (
    Outcome,
    StageFailed,
    run_dvc_stage,
    stage_order,
    upstream_closure,
)
from flows.params_overlay import apply_profile, changes_anything, set_params
from flows.recovery import release_dead_dvc_locks


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
def dvc_stage(
    stage: str,
    root: str,
    parent_run_id: str,
    force: bool = False,
    env: dict[str, str] | None = None,
    store: str | None = None,
) -> State:
    """One DVC stage of the workspace at `root`, tracked in `store`'s MLflow (default: root's);
    its state's result is the Outcome. Fails with StageFailed."""
    logger = get_run_logger()
    outcome = run_dvc_stage(
        Path(root),
        stage,
        logger.info,
        force=force,
        env={**(env or {}), ENV_PARENT_RUN_ID: parent_run_id},
    )
    if outcome is Outcome.RAN:
        # A restored stage ran no command, so it has no MLflow run of its own to link.
        link_mlflow_run(stage, Path(store or root), parent_run_id)
    name, message = _STATES[outcome]
    return Completed(data=outcome, name=name, message=message.format(stage=stage))


@flow(name="llm-pipeline", log_prints=True)
def llm_pipeline(
    stages: list[str] | None = None,
    profile: str | None = None,
    overrides: dict[str, str] | None = None,
    force: bool = False,
    project_dir: str | None = None,
) -> list[str]:
    """Run the pipeline's DVC stages in DAG order.

    stages: only these stages and their upstream (default: all).
    profile, overrides: a scale profile (smoke | demo | cluster) and params to set, e.g.
        {"pretrain.max_steps": "100"}. When they change a value, the run happens in an
        isolated workspace (flows/workspace.py) saved as a DVC experiment named after the
        flow run; the user's params.yaml and outputs are never written.
    force: re-run stages even when DVC finds them up to date.
    project_dir: the project root (default: $LLMOPS_PROJECT_DIR, else found from the working
        directory); every path resolves from it, the working directory is left alone.
    Returns the stages whose command ran.

    Concurrency: isolated runs share nothing they could clobber (DVC's cache is content
    addressed). A plain run works in the user's workspace, where DVC's repository lock, taken by
    every `dvc status`/`dvc repro`, refuses a second one with DVC's own message. Deployments can
    be limited further with a Prefect concurrency limit (`concurrency_limit` in prefect.yaml).
    """
    logger = get_run_logger()
    root = project_root(project_dir)
    run_name = flow_run.get_name() or "llm-pipeline"
    if not changes_anything(root / "params.yaml", profile, overrides):
        for line in release_dead_dvc_locks(root):
            logger.warning("recovered: %s", line)
        return _run(root, root, stages, force, logger, run_name)
    with workspace.isolated(root, run_name) as path:
        params_file = path / "params.yaml"
        changed = apply_profile(profile, params_file) if profile else {}
        changed |= set_params(overrides, params_file) if overrides else {}
        for key, (old, new) in changed.items():
            logger.info("params: %s %r -> %r", key, old, new)
        ran = _run(path, root, stages, force, logger, run_name, profile, overrides)
        workspace.save_experiment(path, run_name)
    logger.info(
        "saved as DVC experiment %s: `dvc exp show` lists it, `dvc exp apply %s` brings it "
        "into this workspace, `dvc exp branch %s BRANCH` makes a branch of it",
        run_name,
        run_name,
        run_name,
    )
    return ran


def _start_parent_run(run_name: str, store: Path, tags: dict[str, str]):
    """The pipeline's MLflow parent run; an unreachable tracking server stops the run here,
    before any stage has had its outputs deleted by DVC."""
    try:
        return mlflow.start_run(run_name=run_name, tags=tags)
    except Exception as err:
        if is_transient(err):
            raise TrackingUnavailable(outage_message(mlflow_env.tracking_uri(store), err)) from err
        raise


def _run(
    workdir: Path,
    store: Path,
    stages: list[str] | None,
    force: bool,
    logger,
    run_name: str,
    profile: str | None = None,
    overrides: dict[str, str] | None = None,
) -> list[str]:
    """The stages of `workdir` (the user's workspace, or an isolated one named `run_name`),
    tracked in the MLflow store of the user's project at `store`."""
    order = stage_order(workdir)
    if stages:
        wanted = upstream_closure(workdir, stages)
        order = [s for s in order if s in wanted]
    mlflow_env.configure(store)
    experiment = "" if workdir == store else run_name
    env = {
        # configure() exported it too; said here so no stage in a workspace finds its own store.
        "MLFLOW_TRACKING_URI": mlflow_env.tracking_uri(store),
        ENV_EXPERIMENT: experiment,
    }
    outcomes: dict[str, Outcome] = {}
    tags = {"prefect.flow_run_id": str(flow_run.get_id()), TAG_EXPERIMENT: experiment}
    with _start_parent_run(run_name, store, tags) as parent:
        mlflow.log_params(
            {
                "profile": profile or "",
                "stages": ",".join(order),
                **{f"override.{k}": v for k, v in (overrides or {}).items()},
            }
        )
        for stage in order:
            state = dvc_stage(
                stage,
                str(workdir),
                parent.info.run_id,
                force=force,
                env=env,
                store=str(store),
                return_state=True,
            )
            # result() raises the task's failure, so a failed stage fails the flow.
            outcomes[stage] = Outcome(state.result())
        ran = [s for s, o in outcomes.items() if o == Outcome.RAN]
        mlflow.log_metric("stages_run", len(ran))
        mlflow.log_metric("stages_restored", list(outcomes.values()).count(Outcome.RESTORED))
    summary = "\n".join(f"| {s} | {o} |" for s, o in outcomes.items())
    create_markdown_artifact(
        key="pipeline-summary", markdown=f"| stage | status |\n|---|---|\n{summary}\n"
    )
    return ran


if __name__ == "__main__":
    llm_pipeline()
