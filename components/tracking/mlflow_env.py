"""Where MLflow lives: the embedded default (SQLite + local artifacts) or MLFLOW_TRACKING_URI."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import sqlalchemy
from mlflow.utils.file_utils import local_file_uri_to_path

from components.constants import EXPERIMENT
from components.project import project_root

log = logging.getLogger(__name__)

# The embedded store's directory under the project root.
LOCAL_DIR = ".mlflow"

# A bounded, stated budget for a tracking server that is down or failing. MLflow's defaults (7
# retries, backoff factor 2, 120 s per request) kept a stage retrying a refused connection for
# ~250 s, silently. With these, one request gives up after ~6 s of backoff (0 + 2 + 4 s, plus
# up to 0.5 s jitter each) when the connection is refused, and after at most 4 x 10 s when the
# server accepts but never answers. `llmops` sets them unless the environment already does;
# the Prefect task then retries a transient stage twice, 15 s apart (flows/pipeline.py).
HTTP_RETRY_BUDGET: dict[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def apply_retry_budget() -> None:
    """Export HTTP_RETRY_BUDGET (values already in the environment win); stage subprocesses
    inherit it."""
    for key, value in HTTP_RETRY_BUDGET.items():
        os.environ.setdefault(key, value)


def retry_budget() -> str:
    """The budget in force, in words, for error messages."""
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    factor = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2"))
    timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    # urllib3 2: no sleep before the first retry, then factor * 2**(n-1).
    backoff = sum(factor * 2 ** (n - 1) for n in range(2, int(retries) + 1))
    return (
        f"{retries} retries, ~{backoff:.0f} s of backoff, {timeout} s per request "
        "(MLFLOW_HTTP_REQUEST_MAX_RETRIES, _BACKOFF_FACTOR, _TIMEOUT)"
    )


def local_store(root: Path) -> Path:
    """The embedded SQLite database of the project at `root`."""
    return root / LOCAL_DIR / "mlflow.db"


def tracking_uri(root: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else the embedded store under the project root (`root`, or
    the one `project_root()` finds), whatever the working directory."""
    # Note: mlflow.set_tracking_uri() also exports MLFLOW_TRACKING_URI, so stage subprocesses
    # started after configure() inherit the same store.
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{local_store(root or project_root())}"


def artifact_root(uri: str) -> str | None:
    """Artifacts of a local SQLite store live beside its database; a server decides its own."""
    db = sqlite_path(uri)
    return None if db is None else (db.parent / "artifacts").resolve().as_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///relative` or `sqlite:////absolute` URI."""
    parsed = urlparse(uri)
    return Path(parsed.path[1:]) if parsed.scheme == "sqlite" else None


def configure(root: Path | None = None) -> str:
    """Point mlflow at the store and make sure the project's experiment exists; returns its id."""
    uri = tracking_uri(root)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    if os.environ.get("MLFLOW_REGISTRY_URI"):
        mlflow.set_registry_uri(os.environ["MLFLOW_REGISTRY_URI"])
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    if exp is not None and db is not None:
        relocate(uri, exp.artifact_location)
    if exp is None:
        exp_id = mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root(uri))
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


# Where MLflow keeps absolute artifact paths in a SQLite store (MLflow 3): resolve_uri_if_local()
# makes every location absolute when it is recorded, and runs, logged models and model versions
# copy their experiment's location. MLflow has no project-relative artifact root without a server.
def _path_columns() -> list[tuple[Any, Any]]:
    """(column, extra row condition) of every column that holds an artifact location."""
    from mlflow.store.model_registry.dbmodels.models import SqlModelVersion
    from mlflow.store.tracking.dbmodels.models import (
        SqlExperiment,
        SqlLoggedModel,
        SqlRun,
        SqlTraceTag,
    )
    from mlflow.utils.mlflow_tags import MLFLOW_ARTIFACT_LOCATION

    anywhere = sqlalchemy.true()
    tag = SqlTraceTag.__table__.c
    return [
        (SqlExperiment.__table__.c.artifact_location, anywhere),
        (SqlRun.__table__.c.artifact_uri, anywhere),
        (SqlLoggedModel.__table__.c.artifact_location, anywhere),
        (SqlModelVersion.__table__.c.source, anywhere),
        (SqlModelVersion.__table__.c.storage_location, anywhere),
        (tag.value, tag.key == MLFLOW_ARTIFACT_LOCATION),
    ]


def moved_from(uri: str, recorded: str) -> tuple[Path, Path] | None:
    """(old, new) folder holding the store's directory, when the experiment's recorded artifact
    root has this store's layout (`<folder>/<store dir>/artifacts`) under another folder: the
    project was moved or copied. None when it is where it belongs, or was chosen on purpose."""
    expected = artifact_root(uri)
    if expected is None or recorded == expected or not recorded.startswith("file:"):
        return None
    old, new = Path(local_file_uri_to_path(recorded)), Path(local_file_uri_to_path(expected))
    if old.parts[-2:] != new.parts[-2:]:
        return None
    return old.parent.parent, new.parent.parent


def relocate(uri: str, recorded: str) -> int:
    """Point every artifact location recorded under the project's old folder at the project's
    folder now; returns how many were rewritten. A moved or copied project then logs into and
    loads from its own `.mlflow/artifacts`, not from the old folder (which may be gone)."""
    moved = moved_from(uri, recorded)
    if moved is None:
        return 0
    old, new = moved
    prefixes = [(old.as_uri() + "/", new.as_uri() + "/"), (f"{old}/", f"{new}/")]
    count = 0
    engine = sqlalchemy.create_engine(uri)
    try:
        # One transaction: a half-relocated store would split a run's artifacts between folders.
        with engine.begin() as conn:
            for column, condition in _path_columns():
                for before, after in prefixes:
                    count += _replace_prefix(conn, column, condition, before, after)
    finally:
        engine.dispose()
    log.warning(
        "this project was moved or copied from %s: %d artifact locations in its MLflow store "
        "(%s) pointed there and now point into %s",
        old,
        count,
        sqlite_path(uri),
        new,
    )
    return count


def _replace_prefix(conn: Any, column: Any, condition: Any, before: str, after: str) -> int:
    # substr, not LIKE: SQLite's LIKE ignores case and treats _ and % as wildcards.
    stmt = (
        sqlalchemy.update(column.table)
        .where(sqlalchemy.func.substr(column, 1, len(before)) == before, condition)
        .values(
            {
                column.name: sqlalchemy.literal(after)
                + sqlalchemy.func.substr(column, len(before) + 1)
            }
        )
    )
    return conn.execute(stmt).rowcount
