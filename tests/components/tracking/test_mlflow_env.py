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
