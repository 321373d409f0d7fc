"""Where MLflow lives: the embedded default (SQLite + local artifacts) or MLFLOW_TRACKING_URI."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import mlflow

from components.constants import EXPERIMENT
from components.project import project_root

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
    if exp is None:
        exp_id = mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root(uri))
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id
