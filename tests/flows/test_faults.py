"""Fault injection: a stage that fails keeps its previous outputs; a tracking server that is down
fails fast, named, within the stated budget. Slow ones are marked `faults` (`make test-faults`).
The concurrency and kill -9 faults are in test_run_lock.py, the rerun ones in
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
def test_the_flow_holds_the_lock_and_a_rerun_runs_nothing(tmp_path, prefect_api, monkeypatch):
    from components.constants import ENV_PROJECT_DIR, ENV_RUN_TOKEN
    from flows import run_lock
    from flows.pipeline import llm_pipeline
    from tests.flows.dvc_project import make_project

    root = make_project(tmp_path / "p")
    monkeypatch.setenv(ENV_PROJECT_DIR, str(root))
    monkeypatch.delenv(ENV_RUN_TOKEN, raising=False)
    assert llm_pipeline(project_dir=str(root)) == ["make"]
    holder = run_lock.read_holder(root)
    assert holder.finished and holder.flow_run_id and holder.mlflow_run_id
    assert llm_pipeline(project_dir=str(root)) == []  # back to back: nothing runs
    # While another run holds the lock, the flow (as a worker would run it) is refused.
    with run_lock.hold(root, "llmops run (first)"):
        monkeypatch.delenv(ENV_RUN_TOKEN)  # a deployment run does not carry the holder's token
        with pytest.raises(run_lock.RunLocked, match="llmops run \\(first\\)"):
            llm_pipeline(project_dir=str(root))


# A stage that hangs while the file `hang` exists, so the run can be killed inside it.
HANGING_STAGE = """\
import time
from pathlib import Path

from flows import stage_report
from flows.stage_report import StageReport

Path("started").touch()
while Path("hang").exists():
    time.sleep(0.1)
Path("out.txt").write_text(Path("in.txt").read_text().upper())
stage_report.write(StageReport("make", 0))
"""

RUN_FLOW = (
    "import sys; from flows.pipeline import llm_pipeline; llm_pipeline(project_dir=sys.argv[1])"
)


def _read_flow_run(flow_run_id: str):
    from uuid import UUID

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        run_id = UUID(flow_run_id)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
        return client.read_flow_run(run_id), tasks


@pytest.mark.faults
def test_a_killed_flow_run_is_marked_crashed_by_the_next_run(tmp_path, prefect_api, monkeypatch):
    """kill -9 of the whole process group of a flow run, inside a stage: Prefect's server keeps
    the flow run and its task run Running (nothing reports the death); the next run marks them
    Crashed and the killed run's MLflow run FAILED, then runs the stage again."""
    import os
    import signal
    import sys

    from prefect.settings import PREFECT_API_URL

    from components.constants import ENV_PROJECT_DIR, ENV_RUN_TOKEN
    from flows import run_lock
    from flows.pipeline import llm_pipeline
    from tests.flows.dvc_project import make_project
    from tests.helpers import ROOT

    root = make_project(tmp_path / "p")
    (root / "stage.py").write_text(HANGING_STAGE)
    (root / "hang").touch()
    monkeypatch.setenv(ENV_PROJECT_DIR, str(root))
    monkeypatch.delenv(ENV_RUN_TOKEN, raising=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}
    killed = subprocess.Popen(
        [sys.executable, "-c", RUN_FLOW, str(root)], env=env, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not (root / "started").exists():
        assert killed.poll() is None and time.monotonic() < deadline, "the stage never started"
        time.sleep(0.1)
    dead = run_lock.read_holder(root)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    before, tasks = _read_flow_run(dead.flow_run_id)
    assert before.state.is_running() and [t.state.is_running() for t in tasks] == [True]

    (root / "hang").unlink()
    assert llm_pipeline(project_dir=str(root)) == ["make"]  # recovers, then runs the stage
    after, tasks = _read_flow_run(dead.flow_run_id)
    assert after.state.is_crashed() and "died without finishing" in after.state.message
    assert [t.state.is_crashed() for t in tasks] == [True]
    parent = mlflow.get_run(dead.mlflow_run_id)
    assert parent.info.status == "FAILED"
    assert f"pid {killed.pid}" in parent.data.tags["llmops.ended_by"]
