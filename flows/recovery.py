"""Clean up after a run that died holding the run lock (kill -9, OOM, a lost node).

Its MLflow runs stay RUNNING and its Prefect flow run stays Running forever, and the params.yaml
it changed stays changed, unless someone says otherwise. The next run to take the lock is that
someone: it knows exactly which runs were the dead one's (their run token and flow run id are
in the lock's holder record, flows/run_lock.py), so nothing belonging to another project or
user of a shared server is touched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from uuid import UUID

from components.constants import RUN_TAG_TOKEN
from flows.run_lock import Holder, restore_params

log = logging.getLogger(__name__)


def recover(root: Path, previous: Holder | None, params_file: Path | None = None) -> list[str]:
    """Undo what `previous` (a holder that died) left behind; returns what was done."""
    if previous is None:
        return []
    why = f"the run {previous.describe()}, which died without finishing"
    done: list[str] = []
    if previous.params_backup and restore_params(
        root, params_file or root / "params.yaml", previous.params_backup, why
    ):
        done.append("params.yaml restored")
    done += release_dead_dvc_locks(root)
    done += mark_mlflow_runs_failed(root, previous.token, why)
    if previous.flow_run_id:
        done += mark_flow_run_crashed(previous.flow_run_id, why)
    for line in done:
        log.warning("recovered: %s", line)
    return done


def _is_gone(pid: int) -> bool:
    """No such process, or a zombie: in a container whose init does not reap, a killed
    `dvc repro` stays a zombie, and DVC (which asks only whether the pid exists) keeps
    honouring its locks."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def release_dead_dvc_locks(root: Path) -> list[str]:
    """Drop the entries of DVC's rwlock (`.dvc/tmp/rwlock`) whose process is gone.

    Edited under DVC's own guard lock with DVC's own reader and writer, so a `dvc` command
    running beside us sees either the old file or the new one. Live holders are left alone:
    DVC then refuses with its own message naming them."""
    from dvc.fs import localfs
    from dvc.rwlock import _edit_rwlock

    tmp_dir = root / ".dvc" / "tmp"
    if not (tmp_dir / "rwlock").is_file():
        return []
    done: list[str] = []
    with _edit_rwlock(str(tmp_dir), localfs, hardlink=False) as lock:
        for path, info in list(lock["write"].items()):
            if _is_gone(info["pid"]):
                del lock["write"][path]
                done.append(f"DVC write lock on {path} of dead pid {info['pid']} ({info['cmd']})")
        for path, infos in list(lock["read"].items()):
            alive = [i for i in infos if not _is_gone(i["pid"])]
            done += [
                f"DVC read lock on {path} of dead pid {i['pid']} ({i['cmd']})"
                for i in infos
                if i not in alive
            ]
            if alive:
                lock["read"][path] = alive
            else:
                del lock["read"][path]
    return [f"released {line}" for line in done]


def mark_mlflow_runs_failed(root: Path, token: str, why: str) -> list[str]:
    import mlflow
    from mlflow import MlflowClient

    from components.tracking import mlflow_env

    exp_id = mlflow_env.configure(root)
    runs = mlflow.search_runs(
        experiment_ids=[exp_id],
        filter_string=f"tags.`{RUN_TAG_TOKEN}` = '{token}' and attributes.status = 'RUNNING'",
        output_format="list",
    )
    client = MlflowClient()
    for run in runs:
        client.set_tag(run.info.run_id, "llmops.ended_by", f"marked FAILED at next start: {why}")
        client.set_terminated(run.info.run_id, status="FAILED")
    return [f"MLflow run {r.info.run_id} ({r.info.run_name}) RUNNING -> FAILED" for r in runs]


def mark_flow_run_crashed(flow_run_id: str, why: str) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Crashed

    done = []
    with get_client(sync_client=True) as client:
        run_id = UUID(flow_run_id)
        flow_run = client.read_flow_run(run_id)
        if flow_run.state is None or not flow_run.state.is_final():
            client.set_flow_run_state(run_id, Crashed(message=why), force=True)
            done.append(f"Prefect flow run {flow_run.name} ({flow_run_id}) -> Crashed")
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
        for task in tasks:
            if task.state is not None and not task.state.is_final():
                client.set_task_run_state(task.id, Crashed(message=why), force=True)
                done.append(f"Prefect task run {task.name} -> Crashed")
    return done
