"""Fault injection on a real project: the smoke pipeline (through `promote`, in place) is killed
with SIGKILL to its whole process group while pretraining, then run again.

The rerun must release the DVC locks the killed `dvc repro` left, resume pretraining from the
checkpoint the killed run left, and end where a clean run ends: every stage up to date, one
registry version per model, `champion` set. Marked `faults` (`make test-faults`); takes minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.constants import ALIAS_CHAMPION, ENV_PROJECT_DIR, MODEL_POLICY
from flows.dvc_stage import dvc_executable
from tests.test_pipeline_e2e import copy_project

pytestmark = [pytest.mark.faults, pytest.mark.timeout(2400)]

RUN = ["run", "--stages", "promote"]  # in place: the copy's params.yaml is smoke's
KILL_TIMEOUT_S = 1200


def _env(root: Path) -> dict[str, str]:
    """As a user's shell would have it in the copy: no test store, no Prefect test server."""
    drop = {"MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {
        **env,
        "PYTHONPATH": str(root),
        ENV_PROJECT_DIR: str(root),
        "PATH": path,
        "TQDM_DISABLE": "1",
        # Prefect's ephemeral API server may take longer than its default 20 s to start on
        # busy shared cores (the test harness allows 120 s too).
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }


def _llmops(root: Path, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *RUN],
            cwd=root,
            env=_env(root),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as from a shell
        )


def _kill_in_pretraining(root: Path, proc: subprocess.Popen, log: Path) -> None:
    """SIGKILL the whole group once pretraining has written its first checkpoint."""
    latest = root / "checkpoints" / "pretrain" / "latest"
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while not latest.exists():
        assert proc.poll() is None, f"the run ended before pretraining:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "pretraining never checkpointed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    root = copy_project(base / "project")
    subprocess.run(
        [sys.executable, "-m", "flows.cli", "params", "apply", "smoke"], cwd=root, env=_env(root)
    ).check_returncode()
    first = _llmops(root, base / "killed.log")
    _kill_in_pretraining(root, first, base / "killed.log")
    time.sleep(1)  # let the kernel reap; zombies still count for killpg(0)
    start = time.monotonic()
    rerun = _llmops(root, base / "rerun.log")
    assert rerun.wait(timeout=KILL_TIMEOUT_S) == 0, (base / "rerun.log").read_text()[-5000:]
    return {
        "root": root,
        "killed_pid": first.pid,
        "killed_log": (base / "killed.log").read_text(),
        "log": (base / "rerun.log").read_text(),
        "rerun_s": time.monotonic() - start,
    }


def _client(root: Path) -> MlflowClient:
    uri = f"sqlite:///{root / '.mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_the_rerun_resumed_pretraining(killed_then_rerun):
    log = killed_then_rerun["log"]
    assert "resumed from" in log and "step" in log.split("resumed from", 1)[1][:200]


def test_mlflow_shows_one_finished_pretrain_run_after_the_killed_one(killed_then_rerun):
    client = _client(killed_then_rerun["root"])
    runs = client.search_runs(
        [client.get_experiment_by_name("llmops").experiment_id], max_results=1000
    )
    # The killed run's MLflow runs stay RUNNING (nothing outlives a kill -9 to end them).
    pretrain = sorted(r.info.status for r in runs if r.info.run_name == "pretrain")
    assert pretrain == ["FINISHED", "RUNNING"]


def test_the_final_state_is_a_clean_runs(killed_then_rerun):
    root = killed_then_rerun["root"]
    status = subprocess.run(
        [dvc_executable(), "status", "--with-deps", "promote"],
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "up to date" in status.stdout, status.stdout  # nothing left to rerun
    client = _client(root)
    names = [m.name for m in client.search_registered_models()]
    assert MODEL_POLICY in names
    for name in names:
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == 1, f"{name}: {[v.version for v in versions]}"
    # int(): this client returned the version as an int from the SQLite registry.
    assert int(client.get_model_version_by_alias(MODEL_POLICY, ALIAS_CHAMPION).version) == 1
