"""Rank 0's per-step metrics: the history file records every step at once, and a background
thread sends the points to the stage's MLflow run. A tracking server that is away never stops
or slows training.

The history file is the record; MLflow gets a copy. The thread sends waiting rows in order, so
what waits is always the history file's last lines. When a send fails for a transient reason
(refused, timed out, 5xx, a busy SQLite store) the rows keep waiting and the thread tries again
every RETRY_EVERY_S, each try bounded by MLflow's HTTP budget (MLFLOW_HTTP_REQUEST_*, which
`llmops` sets: components/tracking/mlflow_env.py). On close it makes a last try; what is still
unsent is named in UNSENT_FILE, and the stage process sends it (`backfill`) after the ranks exit.
Each point keeps the time it was measured, so a point sent twice is one point in MLflow's SQL
store (its key is key, step, timestamp and value).

Imports only the standard library at module level: the worker starts on a bare CUDA image.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TextIO

log = logging.getLogger("pretrain")

UNSENT_FILE = "mlflow_unsent.json"  # history lines MLflow has not taken yet, and for which run
TIME_KEY = "time_ms"  # when a row was measured: its points' MLflow timestamp
NOT_METRICS = ("step", TIME_KEY)
ROWS_PER_SEND = 8  # ~50 points: a step's values, sent every few steps
ROWS_PER_REQUEST = 100  # <= 1000 points, MLflow's limit for one log_batch
SEND_EVERY_S = 10.0  # slow steps still show up in the UI within this
RETRY_EVERY_S = 5.0  # after a failed send; each try is bounded by the HTTP budget

Send = Callable[[str, list[dict]], None]  # (run id, history rows) -> None, raises on failure


def points(rows: list[dict]) -> int:
    return sum(len(row) - len([k for k in NOT_METRICS if k in row]) for row in rows)


def mlflow_send(run_id: str, rows: list[dict]) -> None:
    """Log history rows to run `run_id`, each point with its row's step and time."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from components.tracking.mlflow_env import tracking_uri

    client = MlflowClient(tracking_uri())
    for i in range(0, len(rows), ROWS_PER_REQUEST):
        metrics = [
            Metric(key, float(value), row[TIME_KEY], row["step"])
            for row in rows[i : i + ROWS_PER_REQUEST]
            for key, value in row.items()
            if key not in NOT_METRICS
        ]
        client.log_batch(run_id, metrics=metrics)


def _is_transient(err: BaseException) -> bool:
    from components.failures import is_transient

    return is_transient(err)


class StepMetrics:
    """Use as a context manager around the step loop: leaving it (normally or by an exception)
    makes the last try, writes UNSENT_FILE beside the history if rows are left, and closes the
    history file. Without a run id it only writes the history."""

    def __init__(
        self,
        history: Path,
        run_id: str = "",
        send: Send = mlflow_send,
        send_every_s: float = SEND_EVERY_S,
        retry_every_s: float = RETRY_EVERY_S,
    ):
        self.run_id, self._send = run_id, send
        self.unsent_file = history.with_name(UNSENT_FILE)
        self._every, self._retry_every = send_every_s, retry_every_s
        self.history = history
        # Opened at the first step: the worker clears a stale history before training.
        self._file: TextIO | None = None
        self._lines = 0  # lines in the history file, ours included
        self._waiting: list[dict] = []
        self._cond = threading.Condition()
        self._closing = False
        self._retry_at = 0.0  # monotonic time of the next try after a failure; 0: none failed
        self._given_up = ""  # why sending stopped for good (a non-transient error)
        self._thread = threading.Thread(target=self._run, name="mlflow-step-metrics", daemon=True)
        if run_id:
            self._thread.start()

    def __enter__(self) -> StepMetrics:
        return self

    def __exit__(
        self, kind: type | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def log(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **values, TIME_KEY: int(time.time() * 1000)}
        if self._file is None:
            exists = self.history.exists()
            self._lines = len(self.history.read_text().splitlines()) if exists else 0
            self._file = self.history.open("a")
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        self._lines += 1
        if not self.run_id:
            return
        with self._cond:
            self._waiting.append(row)
            if len(self._waiting) >= ROWS_PER_SEND:
                self._cond.notify()

    def close(self) -> int:
        """Last try, then the history file is closed; returns how many points are unsent."""
        with self._cond:
            if self._closing:  # closed already
                return points(self._waiting)
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
        if self._file is not None:
            self._file.close()
        left = points(self._waiting)
        if left:
            self._write_unsent()
        return left

    def _write_unsent(self) -> None:
        first = self._lines - len(self._waiting)
        self.unsent_file.write_text(
            json.dumps(
                {
                    "run_id": self.run_id,
                    "history": str(self.history),
                    "first_line": first,
                    "rows": len(self._waiting),
                    "points": points(self._waiting),
                }
            )
        )
        log.warning(
            "MLflow did not take %d points (steps %d-%d, history lines %d-%d of %s); they are "
            "in %s and the stage sends them to run %s after the ranks exit",
            points(self._waiting),
            self._waiting[0]["step"],
            self._waiting[-1]["step"],
            first + 1,
            self._lines,
            self.history,
            self.unsent_file,
            self.run_id,
        )

    # --- the sending thread ----------------------------------------------------------------

    def _due(self) -> bool:
        if self._closing:
            return True
        ready = not self._given_up and time.monotonic() >= self._retry_at
        return ready and len(self._waiting) >= ROWS_PER_SEND

    def _pause(self) -> float | None:
        """How long to wait for a full batch: until the next try after a failure, else
        SEND_EVERY_S; None (until close) once sending stopped for good."""
        if self._given_up:
            return None
        return max(0.0, self._retry_at - time.monotonic()) if self._retry_at else self._every

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._due, timeout=self._pause())
                closing = self._closing
                waiting_on_retry = not closing and time.monotonic() < self._retry_at
                if self._given_up or not self._waiting or waiting_on_retry:
                    if closing:
                        return
                    continue
                rows = self._waiting[:ROWS_PER_REQUEST]
            if not self._try(rows) and closing:
                return  # the last try failed: close() names what is left

    def _try(self, rows: list[dict]) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._send(self.run_id, rows)
        except MlflowException as err:
            self._failed(err)
            return False
        with self._cond:
            del self._waiting[: len(rows)]
            if self._retry_at:
                log.info(
                    "MLflow answers again: sent %d waiting points; %d still wait",
                    points(rows),
                    points(self._waiting),
                )
            self._retry_at = 0.0
        return True

    def _failed(self, err: BaseException) -> None:
        with self._cond:
            waiting = points(self._waiting)
            if not _is_transient(err):
                self._given_up = f"{type(err).__name__}: {err}"
                log.error(
                    "MLflow refused the step metrics of run %s (%s); the ranks stop sending: "
                    "%d points wait in %s for the stage to send",
                    self.run_id,
                    self._given_up[:500],
                    waiting,
                    self.history,
                )
                return
            self._retry_at = time.monotonic() + self._retry_every
        log.warning(
            "MLflow did not take the step metrics (%s: %s); %d points wait (all in %s), next "
            "try in %g s; training goes on",
            type(err).__name__,
            str(err)[:300],
            waiting,
            self.history,
            self._retry_every,
        )


class UnsentMetrics(RuntimeError):
    """Step metrics the ranks could not send are still not in MLflow."""


def backfill(history: Path, send: Send = mlflow_send) -> int:
    """Send what the ranks left unsent (UNSENT_FILE beside `history`); returns how many points.
    Raises what MLflow raised, naming the points still waiting; the file stays for a retry."""
    unsent_file = history.with_name(UNSENT_FILE)
    if not unsent_file.exists():
        return 0
    unsent = json.loads(unsent_file.read_text())
    lines = history.read_text().splitlines()
    rows = [json.loads(line) for line in lines[unsent["first_line"] :] if line.strip()]
    from mlflow.exceptions import MlflowException

    try:
        send(unsent["run_id"], rows)
    except MlflowException as err:
        # Chained: components/failures.py still sees the cause (a transient outage: exit 75).
        raise UnsentMetrics(
            f"{points(rows)} step metrics of MLflow run {unsent['run_id']} are still unsent "
            f"(lines {unsent['first_line'] + 1}-{len(lines)} of {history}; {err}); re-running "
            f"the stage sends them, or delete {unsent_file} to give them up"
        ) from err
    unsent_file.unlink()
    log.info("sent %d step metrics the ranks left to MLflow run %s", points(rows), unsent["run_id"])
    return points(rows)
