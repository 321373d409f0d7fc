from pathlib import Path

import mlflow

from components.tracking import mlflow_env


def test_artifacts_live_beside_a_sqlite_store():
    assert mlflow_env.artifact_root("sqlite:////tmp/a/mlflow.db") == "file:///tmp/a/artifacts"
    assert mlflow_env.sqlite_path("sqlite:///rel/mlflow.db") == Path("rel/mlflow.db")
    assert mlflow_env.artifact_root("http://mlflow:5000") is None


def test_embedded_default_is_sqlite_under_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mlflow_env.configure()
    exp = mlflow.get_experiment_by_name("llmops")
    assert (tmp_path / ".mlflow" / "mlflow.db").exists()
    assert exp.artifact_location == (tmp_path / ".mlflow" / "artifacts").as_uri()
