import pytest

from components.constants import ENV_PROJECT_DIR
from components.project import ProjectNotFound, project_root


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_PROJECT_DIR, raising=False)
    root = tmp_path / "project"
    (root / "data" / "raw").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("seed: 1\n")
    return root


def test_found_from_a_subdirectory(project, monkeypatch):
    monkeypatch.chdir(project / "data" / "raw")
    assert project_root() == project.resolve()


def test_env_var_wins_over_the_working_directory(project, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv(ENV_PROJECT_DIR, str(project))
    assert project_root() == project.resolve()


def test_explicit_directory_wins_over_the_env_var(project, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_PROJECT_DIR, str(tmp_path))
    assert project_root(project) == project.resolve()


def test_env_var_naming_a_non_project_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_PROJECT_DIR, str(tmp_path))
    with pytest.raises(
        ProjectNotFound, match=f"{ENV_PROJECT_DIR}=.* must hold dvc.yaml and params"
    ):
        project_root()


def test_outside_any_project_the_error_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_PROJECT_DIR, raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # half a project is not a project
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ProjectNotFound, match=f"run from inside the project or set {ENV_PROJECT_DIR}"
    ):
        project_root()
