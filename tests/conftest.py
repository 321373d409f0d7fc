import os

import mlflow
import pytest

from components.constants import ENV_PROJECT_DIR
from tests.helpers import ROOT, write_task_files


@pytest.fixture(autouse=True)
def project_dir(monkeypatch):
    """The project is this checkout, also for a test that works in a temporary directory
    (lineage reads its git commit and dvc.lock). Tests of root resolution unset it."""
    monkeypatch.setenv(ENV_PROJECT_DIR, str(ROOT))


@pytest.fixture(autouse=True)
def isolated_mlflow(monkeypatch, tmp_path):
    """Each test gets its own SQLite tracking store; nothing leaks through mlflow's globals.

    mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, so reset it before setting ours.
    mlflow.set_experiment() caches the experiment's id and exports MLFLOW_EXPERIMENT_ID: an id
    of an earlier test's store, where a later `mlflow.start_run()` fails ("No Experiment with
    id=1 exists") depending on the order the tests ran in.
    """
    _forget_experiment()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    yield
    while mlflow.active_run():
        mlflow.end_run()
    _forget_experiment()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def _forget_experiment() -> None:
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    mlflow.tracking.fluent._active_experiment_id = None  # no public reset


@pytest.fixture(scope="session")
def tasks_dir(tmp_path_factory):
    """Generated task files (eval sets for decontamination and the like), once per session."""
    return write_task_files(tmp_path_factory.mktemp("tasks"))
