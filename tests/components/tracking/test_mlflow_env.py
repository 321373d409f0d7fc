from pathlib import Path

import mlflow
import pytest

from components.constants import ENV_PROJECT_DIR
from components.tracking import mlflow_env


def test_artifacts_live_beside_a_sqlite_store():
    assert mlflow_env.artifact_root("sqlite:////tmp/a/mlflow.db") == "file:///tmp/a/artifacts"
    assert mlflow_env.sqlite_path("sqlite:///rel/mlflow.db") == Path("rel/mlflow.db")
    assert mlflow_env.artifact_root("http://mlflow:5000") is None


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project root, and a working directory outside it; no tracking URI from outside."""
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml"):
        (root / name).write_text("{}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv(ENV_PROJECT_DIR, raising=False)
    return root, elsewhere


def assert_store_under(root: Path) -> None:
    exp = mlflow.get_experiment_by_name("llmops")
    assert (root / ".mlflow" / "mlflow.db").exists()
    assert exp.artifact_location == (root / ".mlflow" / "artifacts").as_uri()


def test_embedded_store_is_under_the_root_found_from_a_subdirectory(project, monkeypatch):
    root, _ = project
    monkeypatch.chdir(root / "src")
    mlflow_env.configure()
    assert_store_under(root)
    assert not (root / "src" / ".mlflow").exists()


def test_embedded_store_is_under_the_env_root_when_the_cwd_is_elsewhere(project, monkeypatch):
    root, elsewhere = project
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv(ENV_PROJECT_DIR, str(root))
    mlflow_env.configure()
    assert_store_under(root)
    assert not (elsewhere / ".mlflow").exists()


def test_an_explicit_root_needs_no_lookup(project, monkeypatch):
    root, elsewhere = project
    monkeypatch.chdir(elsewhere)  # no project here and no LLMOPS_PROJECT_DIR
    assert mlflow_env.tracking_uri(root) == f"sqlite:///{root / '.mlflow' / 'mlflow.db'}"


MODEL_CODE = """\
import mlflow


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input


mlflow.models.set_model(Echo())
"""


def _open(root: Path, monkeypatch) -> str:
    """Open the project at `root` as a new process would: no tracking URI inherited."""
    mlflow.set_tracking_uri(None)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return mlflow_env.configure(root)


def _locations(root: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(root / ".mlflow" / "mlflow.db") as db:
        rows = db.execute(
            "select artifact_location from experiments union all select artifact_uri from runs "
            "union all select artifact_location from logged_models "
            "union all select storage_location from model_versions"
        )
        return [value for (value,) in rows]


def test_a_copied_project_logs_into_and_loads_from_the_copy(project, tmp_path, monkeypatch):
    import shutil

    original, elsewhere = project
    monkeypatch.chdir(elsewhere)
    _open(original, monkeypatch)
    (tmp_path / "echo.py").write_text(MODEL_CODE)
    with mlflow.start_run() as first:
        mlflow.log_dict({"step": 1}, "first.json")
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(tmp_path / "echo.py"), pip_requirements=[]
        )
    version = mlflow.register_model(info.model_uri, "echo").version

    copy = tmp_path / "moved" / "project"
    shutil.copytree(original, copy)
    shutil.rmtree(original)  # the old folder is gone: nothing may be read from or written there

    _open(copy, monkeypatch)
    locations = _locations(copy)
    assert locations and all(str(original) not in loc for loc in locations), locations
    with mlflow.start_run() as second:
        mlflow.log_dict({"step": 2}, "second.json")
    assert (
        copy / ".mlflow" / "artifacts" / second.info.run_id / "artifacts" / "second.json"
    ).exists()
    assert mlflow.artifacts.load_dict(f"runs:/{first.info.run_id}/first.json") == {"step": 1}
    model = mlflow.pyfunc.load_model(f"models:/echo/{version}")
    assert list(model.predict(["ok"])) == ["ok"]
    assert not original.exists()
    recorded = mlflow.get_experiment_by_name("llmops").artifact_location
    assert recorded == (copy / ".mlflow" / "artifacts").as_uri()
    assert mlflow_env.relocate(mlflow_env.tracking_uri(copy), recorded) == 0  # nothing left


def test_an_artifact_root_chosen_on_purpose_is_not_relocated():
    uri = "sqlite:////new/project/.mlflow/mlflow.db"
    assert mlflow_env.moved_from(uri, "file:///old/project/.mlflow/artifacts") == (
        Path("/old/project"),
        Path("/new/project"),
    )
    assert mlflow_env.moved_from(uri, "file:///new/project/.mlflow/artifacts") is None
    assert mlflow_env.moved_from(uri, "file:///mnt/shared/artifacts") is None
    assert mlflow_env.moved_from(uri, "s3://bucket/artifacts") is None
