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
