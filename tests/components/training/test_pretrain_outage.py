"""A real `mlflow server` stops answering during a real 2-rank pretraining run, for longer than
MLflow's HTTP retry budget, then answers again: the run finishes and every step's metrics are in
MLflow. Before step_metrics, rank 0's `log_batch` raised out of the step loop and both ranks
exited 1.

SIGSTOP, not a kill: a stopped server accepts connections and never answers, the harder case
(each try waits for its timeouts), and SIGCONT brings back the same server on the same port and
store without paying its start-up again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from components.training.step_metrics import UNSENT_FILE, backfill
from tests.components.training.test_pretrain_ranks import Run, data  # noqa: F401 - fixture

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

STEPS = 700  # ~25 s of steps here: the outage (~15 s) and the recovery fit inside the run
# A small HTTP budget (one try: <= 2 x 2 s), so the outage below outlasts it several times.
BUDGET = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
}
OUTAGE_AFTER_NOTICE_S = 8  # the server stays stopped this long after rank 0 noticed


@pytest.fixture
def server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "mlflow-server.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--default-artifact-root",
            (tmp_path / "artifacts").as_uri(),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its uvicorn and job runner stop and die with it
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-2000:]
            try:
                if requests.get(f"{uri}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        yield uri, proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def wait_for(what: str, ready, proc: subprocess.Popen, run: Run, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"the run ended before {what}:\n{run.output()[-3000:]}"
        assert time.monotonic() < deadline, f"no {what} in {timeout_s} s"
        time.sleep(0.1)


def steps_logged(run: Run) -> int:
    return len(run.history.read_text().splitlines()) if run.history.exists() else 0


def test_a_tracking_outage_during_pretraining_loses_no_step(
    data,  # noqa: F811 - the fixture imported above
    server,
    tmp_path,
    monkeypatch,
):
    uri, server_proc = server
    for key, value in {"MLFLOW_TRACKING_URI": uri, **BUDGET}.items():
        monkeypatch.setenv(key, value)  # the ranks inherit them, as from the stage
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("outage")).info.run_id
    run = Run(data, tmp_path / "run", world=2, accum=1, steps=STEPS, mlflow_run_id=run_id)
    proc = run.start()
    try:
        wait_for("first steps", lambda: steps_logged(run) >= 20, proc, run)
        os.killpg(server_proc.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_for("warning", lambda: "points wait" in run.output(), proc, run)
        time.sleep(OUTAGE_AFTER_NOTICE_S)
        os.killpg(server_proc.pid, signal.SIGCONT)
        outage = time.monotonic() - stopped_at
        steps_during_outage = steps_logged(run)
        assert proc.wait(timeout=400) == 0, run.output()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.killpg(server_proc.pid, signal.SIGCONT)
        run.finished()

    output = run.output()
    assert outage > 2 * 2 * 2  # longer than one try's whole budget, twice over
    assert steps_during_outage < STEPS  # training went on while the server was away...
    assert "MLflow answers again" in output  # ...and the waiting points went when it was back
    assert not (run.ckpt / UNSENT_FILE).exists()
    assert backfill(run.history) == 0  # what the stage does next: nothing left to send
    rows = [json.loads(line) for line in run.history.read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for key in ("train_loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "mfu"):
        logged = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in logged) == list(range(1, STEPS + 1)), key
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [STEPS]
