"""Rank 0's step metrics: a tracking server that is away never stops or slows training, and
every point reaches MLflow once it answers (tests/components/training/test_pretrain_outage.py
stops a real server during a real run)."""

from __future__ import annotations

import json
import logging
import threading
import time

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from components.failures import is_transient
from components.training.step_metrics import (
    UNSENT_FILE,
    StepMetrics,
    UnsentMetrics,
    backfill,
    mlflow_send,
)

FAST = {"send_every_s": 0.02, "retry_every_s": 0.05}


class Server:
    """Stands in for the tracking server behind `send`: down (slow, then a transient error,
    as MLflow raises it after its HTTP retries) until `up`, then it keeps what it is sent."""

    def __init__(self, error_code=TEMPORARILY_UNAVAILABLE, stall_s: float = 0.3):
        self.up = threading.Event()
        self.received: list[tuple[str, int, str]] = []  # (run id, step, key)
        self.tries = 0
        self.error_code, self.stall_s = error_code, stall_s

    def send(self, run_id: str, rows: list[dict]) -> None:
        self.tries += 1
        if not self.up.is_set():
            time.sleep(self.stall_s)
            raise MlflowException("the tracking server is away", error_code=self.error_code)
        self.received += [
            (run_id, r["step"], k) for r in rows for k in r if k not in ("step", "time_ms")
        ]


def rows_of(history) -> list[dict]:
    return [json.loads(line) for line in history.read_text().splitlines()]


def test_an_outage_neither_blocks_the_steps_nor_loses_a_point(tmp_path, caplog):
    server = Server()
    history = tmp_path / "history.jsonl"
    caplog.set_level(logging.INFO, logger="pretrain")
    with StepMetrics(history, "run1", send=server.send, **FAST) as metrics:
        slowest = 0.0
        for step in range(1, 41):
            t0 = time.perf_counter()
            metrics.log(step, {"train_loss": 1.0 / step, "lr": 0.1})
            slowest = max(slowest, time.perf_counter() - t0)
            time.sleep(0.01)
        assert server.tries >= 2  # it kept trying while the steps went on
        server.up.set()
        deadline = time.monotonic() + 10
        while len(server.received) < 80 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert slowest < server.stall_s / 3  # a step never waited for a send
    assert sorted(server.received) == sorted(
        ("run1", s, k) for s in range(1, 41) for k in ("train_loss", "lr")
    )
    assert [r["step"] for r in rows_of(history)] == list(range(1, 41))
    assert metrics._file.closed and not (tmp_path / UNSENT_FILE).exists()
    assert "points wait (all in" in caplog.text and "training goes on" in caplog.text
    assert "MLflow answers again" in caplog.text


def test_points_left_at_the_end_are_named_then_backfilled_into_mlflow(tmp_path, caplog):
    history = tmp_path / "history.jsonl"
    history.write_text('{"step": 1, "train_loss": 9.0, "time_ms": 1}\n')  # an earlier launch
    run_id = MlflowClient().create_run(mlflow.set_experiment("t").experiment_id).info.run_id
    server = Server(stall_s=0.0)  # never comes back during the run
    with StepMetrics(history, run_id, send=server.send, **FAST) as metrics:
        for step in range(2, 12):
            metrics.log(step, {"train_loss": float(step), "val_loss": 2.0})
    assert metrics.close() == 20  # closing again only answers how many are left
    unsent = json.loads((tmp_path / UNSENT_FILE).read_text())
    assert unsent == {
        "run_id": run_id,
        "history": str(history),
        "first_line": 1,
        "rows": 10,
        "points": 20,
    }
    assert caplog.text.count("MLflow did not take 20 points (steps 2-11, history lines 2-11") == 1
    assert "the stage sends them" in caplog.text

    assert backfill(history, send=mlflow_send) == 20  # what the stage does after the ranks
    client = MlflowClient()
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == list(range(2, 12))
    assert len(client.get_metric_history(run_id, "val_loss")) == 10
    assert not (tmp_path / UNSENT_FILE).exists()
    assert backfill(history) == 0  # nothing left: no-op


def test_a_backfill_that_still_fails_keeps_the_points_for_the_next_attempt(tmp_path):
    history = tmp_path / "history.jsonl"
    with StepMetrics(history, "run1", send=Server(stall_s=0.0).send, **FAST) as metrics:
        metrics.log(1, {"train_loss": 1.0})
    with pytest.raises(UnsentMetrics, match=r"1 step metrics of MLflow run run1 are still unsent"):
        backfill(history, send=Server(stall_s=0.0).send)
    assert (tmp_path / UNSENT_FILE).exists()
    try:
        backfill(history, send=Server(stall_s=0.0).send)
    except UnsentMetrics as err:
        assert is_transient(err)  # the stage exits 75: worth a retry


def test_a_refusal_that_retrying_cannot_fix_stops_the_tries_not_the_training(tmp_path, caplog):
    server = Server(error_code=INVALID_PARAMETER_VALUE, stall_s=0.0)
    with StepMetrics(tmp_path / "history.jsonl", "run1", send=server.send, **FAST) as metrics:
        for step in range(1, 30):
            metrics.log(step, {"train_loss": 1.0})
            time.sleep(0.005)
    assert server.tries == 1
    assert "the ranks stop sending" in caplog.text
    assert json.loads((tmp_path / UNSENT_FILE).read_text())["points"] == 29


def test_without_a_run_only_the_history_is_written(tmp_path):
    with StepMetrics(tmp_path / "history.jsonl") as metrics:
        metrics.log(1, {"train_loss": 1.0})
    assert rows_of(tmp_path / "history.jsonl")[0]["train_loss"] == 1.0
    assert not (tmp_path / UNSENT_FILE).exists()
