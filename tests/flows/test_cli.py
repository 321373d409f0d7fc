"""`llmops`: stage exit codes, and the project root for every path whatever the working dir."""

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

import components.stage
from components.constants import ENV_PROJECT_DIR, ENV_STAGE_REPORT, EXIT_TRANSIENT
from components.stage import StageResult, stage_module
from flows.cli import main
from tests.helpers import ROOT


@pytest.fixture
def report(tmp_path, monkeypatch):
    """The stage report file the flow would ask for; main's environment changes undone after."""
    path = tmp_path / "report.json"
    monkeypatch.setenv(ENV_STAGE_REPORT, str(path))
    monkeypatch.setenv(ENV_PROJECT_DIR, str(ROOT))
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    return path


def stage_raising(monkeypatch, err: Exception) -> None:
    def run_stage(name, params, paths, params_file=None):
        raise err

    monkeypatch.setattr(components.stage, "run_stage", run_stage)


def test_transient_failure_exits_75_and_reports_it(report, monkeypatch):
    stage_raising(monkeypatch, MlflowException("overloaded", error_code=TEMPORARILY_UNAVAILABLE))
    with pytest.raises(SystemExit) as caught:
        main(["stage", "ingest"])
    assert caught.value.code == EXIT_TRANSIENT == 75
    assert json.loads(report.read_text())["exit_code"] == EXIT_TRANSIENT


def test_other_failure_propagates_and_reports_1(report, monkeypatch):
    stage_raising(monkeypatch, ValueError("1 expectation(s) failed"))
    with pytest.raises(ValueError, match="expectation"):
        main(["stage", "ingest"])
    assert json.loads(report.read_text()) == {
        "stage": "ingest",
        "exit_code": 1,
        "error": "ValueError: 1 expectation(s) failed",
    }


def test_success_reports_0(report, monkeypatch):
    monkeypatch.setattr(components.stage, "run_stage", lambda *a: StageResult(metrics={"n": 1}))
    main(["stage", "ingest"])
    assert json.loads(report.read_text())["exit_code"] == 0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LLMOPS_"))}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {**env, **extra}


def test_a_real_stage_exits_75_when_the_tracking_server_is_down(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the socket is
    paths_cls = stage_module("ingest").Paths
    paths = [f"{f.name}={tmp_path / f.name}" for f in dataclasses.fields(paths_cls)]
    env = clean_env(
        MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        **{ENV_STAGE_REPORT: str(tmp_path / "report.json")},
    )
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "stage", "ingest", *paths],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == EXIT_TRANSIENT, proc.stderr[-3000:]
    assert json.loads((tmp_path / "report.json").read_text())["exit_code"] == EXIT_TRANSIENT


# What `llmops` leaves behind for prefect, read after it ran from another directory.
PROBE = """
import sys
from flows.cli import main
assert "prefect" not in sys.modules, "prefect imported before llmops set PREFECT_HOME"
main(["params", "set", "seed=7"])
import prefect.settings
print(prefect.settings.get_current_settings().home)
"""


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "sub" / "dir").mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    return root


def probe(cwd, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=clean_env(**env), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_prefect_home_and_params_under_the_root_from_a_subdirectory(project):
    assert probe(project / "sub" / "dir") == str(project.resolve() / ".prefect")
    assert "seed: 7" in (project / "params.yaml").read_text()


def test_prefect_home_and_params_under_the_env_root_from_elsewhere(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    home = probe(elsewhere, **{ENV_PROJECT_DIR: str(project)})
    assert home == str(project.resolve() / ".prefect")
    assert "seed: 7" in (project / "params.yaml").read_text()
    assert not (elsewhere / "params.yaml").exists()


def test_a_prefect_home_set_by_the_user_is_kept(project, tmp_path):
    home = probe(project, PREFECT_HOME=str(tmp_path / "mine"))
    assert home == str(tmp_path / "mine")


def test_outside_a_project_llmops_says_what_to_do(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "params", "set", "seed=7"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert f"set {ENV_PROJECT_DIR}" in proc.stderr


def test_importing_the_cli_leaves_the_environment_alone():
    """Only `main()` sets the project's environment (Prefect home, analytics off, budgets)."""
    code = (
        "import os; os.environ.pop('PREFECT_SERVER_ANALYTICS_ENABLED', None); "
        "before = dict(os.environ); import flows.cli; "
        "print(sorted(set(os.environ.items()) ^ set(before.items())))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_rollback_is_its_own_command_and_promote_is_not_one():
    """Promotions are the promote stage's; the CLI only rolls back."""
    from flows.cli import build_parser, cmd_rollback

    args = build_parser().parse_args(["rollback", "--to", "3", "--reason", "regression"])
    assert (args.func, args.to, args.reason) == (cmd_rollback, "3", "regression")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["promote", "--rollback"])
