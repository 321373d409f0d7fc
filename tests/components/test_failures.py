"""Transient or not, from real exceptions: a busy SQLite store, a closed tracking port."""

import socket
import sqlite3

import pytest
import sqlalchemy
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from components.constants import EXIT_TRANSIENT
from components.failures import exit_code, is_transient


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_store_error(db, query: str) -> MlflowException:
    """What MLflow's SQLAlchemy store raises: its error wrapping SQLAlchemy's wrapping sqlite3."""
    engine = sqlalchemy.create_engine(f"sqlite:///{db}", connect_args={"timeout": 0})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(query)
    except sqlalchemy.exc.OperationalError as err:
        try:
            # As mlflow/store/db/utils.py does for every OperationalError.
            raise MlflowException(message=str(err), error_code=TEMPORARILY_UNAVAILABLE) from err
        except MlflowException as wrapped:
            return wrapped
    finally:
        engine.dispose()
    raise AssertionError(f"{query} did not fail")


def test_busy_sqlite_store_is_transient(tmp_path):
    db = tmp_path / "mlflow.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE runs (id)")
    holder.execute("BEGIN EXCLUSIVE")  # another stage is writing
    try:
        err = mlflow_store_error(db, "SELECT * FROM runs")
    finally:
        holder.rollback()
        holder.close()
    assert is_transient(err)
    assert exit_code(err) == EXIT_TRANSIENT


def test_broken_sqlite_store_is_not_transient_even_if_mlflow_says_unavailable(tmp_path):
    sqlite3.connect(tmp_path / "mlflow.db").close()
    err = mlflow_store_error(tmp_path / "mlflow.db", "SELECT * FROM no_such_table")
    assert err.error_code == "TEMPORARILY_UNAVAILABLE"
    assert not is_transient(err)
    assert exit_code(err) == 1


def test_unreachable_tracking_server_is_transient(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(MlflowException) as caught:
        client.get_registered_model("llmops-policy")
    assert is_transient(caught.value)


@pytest.mark.parametrize(
    ("err", "transient"),
    [
        (MlflowException("503", error_code=TEMPORARILY_UNAVAILABLE), True),
        (MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST), False),
        (MlflowException("bad name", error_code=INVALID_PARAMETER_VALUE), False),
        (MlflowException("internal error"), False),
        (ValueError("1 expectation(s) failed"), False),
        # The text of a transient error, without its type, is not enough.
        (RuntimeError("sqlite3.OperationalError: database is locked"), False),
    ],
)
def test_decided_by_type_and_code_not_text(err, transient):
    assert is_transient(err) is transient


def test_a_wrapped_transient_cause_stays_transient():
    try:
        try:
            raise MlflowException("down", error_code=TEMPORARILY_UNAVAILABLE)
        except MlflowException as cause:
            raise RuntimeError("promotion stopped") from cause
    except RuntimeError as err:
        assert is_transient(err)
