"""Fault injection: a stage that fails keeps its previous outputs; a tracking server that is down
fails fast, named, within the stated budget. Slow ones are marked `faults` (`make test-faults`).
The isolated-run faults are here too (flows/workspace.py); the kill -9 one of DVC's locks is in
test_recovery.py, the rerun ones in
tests/components/tracking/test_registry.py and tests/components/data/test_validate_report.py."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import yaml

from components.failures import TrackingUnavailable, is_transient, outage_message
from components.tracking import mlflow_env
from flows.dvc_stage import StageFailed, dvc_executable, run_dvc_stage

STAGE = """\
import sys
from pathlib import Path
if Path("fail").exists():
    sys.exit("planted failure")
Path("out.txt").write_text(Path("in.txt").read_text().upper())
"""


def _project(root: Path) -> Path:
    root.mkdir()
    (root / "stage.py").write_text(STAGE)
    (root / "in.txt").write_text("first\n")
    stage = {"cmd": "python stage.py", "deps": ["stage.py", "in.txt"], "outs": ["out.txt"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": stage}}))
    subprocess.run([dvc_executable(), "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


def test_a_failed_stage_gets_its_previous_outputs_back(tmp_path):
    root = _project(tmp_path / "p")
    run_dvc_stage(root, "make", lambda line: None)  # no stage report: counted as restored
    assert (root / "out.txt").read_text() == "FIRST\n"
    (root / "in.txt").write_text("second\n")
    (root / "fail").touch()
    with pytest.raises(StageFailed, match=r"restored from DVC's cache \(`dvc checkout make`\)"):
        run_dvc_stage(root, "make", lambda line: None)
    # DVC deleted out.txt before running the command; the previous one is back, still stale.
    assert (root / "out.txt").read_text() == "FIRST\n"


@pytest.mark.faults
def test_an_unreachable_tracking_server_fails_within_the_stated_budget(monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    for key in mlflow_env.HTTP_RETRY_BUDGET:
        monkeypatch.delenv(key, raising=False)
    mlflow_env.apply_retry_budget()
    mlflow.set_tracking_uri(uri)
    start = time.monotonic()
    with pytest.raises(Exception) as err:
        mlflow.MlflowClient().search_experiments(max_results=1)
    elapsed = time.monotonic() - start
    assert elapsed < 15, f"retried {elapsed:.0f} s (MLflow's defaults: ~250 s)"
    assert is_transient(err.value)
    message = outage_message(uri, err.value)
    assert uri in message and "3 retries" in message
    assert issubclass(TrackingUnavailable, RuntimeError)


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.faults
def test_a_plain_run_works_in_place_and_a_rerun_runs_nothing(tmp_path, prefect_api, monkeypatch):
    from components.constants import ENV_PROJECT_DIR
    from flows.pipeline import llm_pipeline
    from tests.flows.dvc_project import make_project

    root = make_project(tmp_path / "p")  # no git: a plain run needs none
    monkeypatch.setenv(ENV_PROJECT_DIR, str(root))
    assert llm_pipeline(project_dir=str(root)) == ["make"]
    assert (root / "out.txt").read_text() == "A\n"
    assert llm_pipeline(project_dir=str(root)) == []  # back to back: nothing runs


RUN_FLOW = (
    "import sys; from flows.pipeline import llm_pipeline; "
    "llm_pipeline(project_dir=sys.argv[1], overrides={'seed': sys.argv[2]})"
)


@pytest.mark.faults
def test_runs_with_overrides_leave_params_alone_and_do_not_clobber_each_other(
    tmp_path, prefect_api, monkeypatch
):
    """Two isolated runs at once, each with its own seed: two DVC experiments with their own
    params and outputs; the user's params.yaml stays byte for byte what it was."""
    import os
    import sys

    from prefect.settings import PREFECT_API_URL

    from components.constants import ENV_PROJECT_DIR, TAG_EXPERIMENT
    from tests.flows.dvc_project import experiments, git_project
    from tests.helpers import ROOT

    root = git_project(tmp_path / "p")
    monkeypatch.setenv(ENV_PROJECT_DIR, str(root))
    before = (root / "params.yaml").read_bytes()
    # The store exists before two runs open it at once: MLflow creates a new SQLite store's
    # tables on first open, and two first opens at once collide.
    mlflow_env.configure(root)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}
    runs = [
        subprocess.Popen([sys.executable, "-c", RUN_FLOW, str(root), seed], env=env)
        for seed in ("2", "3")
    ]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    assert (root / "params.yaml").read_bytes() == before
    assert not (root / "out.txt").exists()  # nothing ran in the user's workspace
    seeds = sorted(params["seed"] for params in experiments(root).values())
    assert seeds == [2, 3]
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    # Both pipeline runs tracked in the user's store, each tagged with its experiment.
    tagged = sorted(r.data.tags.get(TAG_EXPERIMENT, "") for r in runs)
    assert tagged == sorted(experiments(root))
    assert not any((root / ".dvc" / "tmp" / "workspaces").iterdir())
