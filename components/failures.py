"""Which stage failures are transient: worth running the same stage again, unchanged.

Decided by exception type and structured error codes along the exception chain, never by an
error message: MLflow wraps the real cause (a refused connection, a busy SQLite database) in an
`MlflowException` whose text varies between versions, but whose chain keeps the cause.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    DEADLINE_EXCEEDED,
    REQUEST_LIMIT_EXCEEDED,
    RESOURCE_EXHAUSTED,
    TEMPORARILY_UNAVAILABLE,
    ErrorCode,
)

from components.constants import EXIT_TRANSIENT

# MLflow error codes of a server that is busy or briefly down (HTTP 503, 504, 429).
_TRANSIENT_MLFLOW_CODES = frozenset(
    ErrorCode.Name(code)
    for code in (
        TEMPORARILY_UNAVAILABLE,
        DEADLINE_EXCEEDED,
        REQUEST_LIMIT_EXCEEDED,
        RESOURCE_EXHAUSTED,
    )
)
# The tracking server did not answer, timed out, or kept answering 5xx/429 through MLflow's own
# HTTP retries (RetryError).
_TRANSIENT_HTTP_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
)
# Another process holds the SQLite database (the embedded MLflow store).
_SQLITE_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def causes(err: BaseException) -> Iterator[BaseException]:
    """`err`, then what it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _sqlite_busy(err: sqlite3.Error) -> bool:
    # Extended result codes (e.g. SQLITE_BUSY_SNAPSHOT) keep the primary code in the low byte.
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _SQLITE_BUSY


def is_transient(err: BaseException) -> bool:
    chain = list(causes(err))
    sqlite_errors = [e for e in chain if isinstance(e, sqlite3.Error)]
    if sqlite_errors:
        # The database's own code decides: MLflow reports every SQLAlchemy OperationalError as
        # TEMPORARILY_UNAVAILABLE, a missing table included.
        return _sqlite_busy(sqlite_errors[-1])
    return any(
        isinstance(e, _TRANSIENT_HTTP_ERRORS)
        or (isinstance(e, MlflowException) and e.error_code in _TRANSIENT_MLFLOW_CODES)
        for e in chain
    )


def exit_code(err: BaseException) -> int:
    """The exit code of a stage that raised `err`: EXIT_TRANSIENT or 1."""
    return EXIT_TRANSIENT if is_transient(err) else 1


class TrackingUnavailable(RuntimeError):
    """The tracking server (or the embedded store) cannot be used now; nothing was changed."""


def outage_message(uri: str, err: BaseException) -> str:
    """Name the outage behind a transient `err` and the retry budget that was spent on it."""
    from components.tracking.mlflow_env import retry_budget, sqlite_path

    cause = list(causes(err))[-1]
    db = sqlite_path(uri)
    if db is not None:
        return (
            f"the embedded MLflow store {db} is locked by another process "
            f"({type(cause).__name__}: {cause}); retry when it is free"
        )
    return (
        f"the MLflow tracking server at {uri} is unreachable or failing "
        f"({type(cause).__name__}: {str(cause)[:300]}) after MLflow's retry budget "
        f"({retry_budget()}). Start or repair the server, point MLFLOW_TRACKING_URI elsewhere, "
        "or raise the budget with those variables"
    )
