"""Audit records of champion moves: who decided what, when, from which code and numbers.

Every promotion decision and every rollback is an MLflow run (the promote stage's own run, or a
`promote-rollback` run) plus `promotion.*` tags on the model version it concerns, so the
registry page of a version says why it holds (or does not hold) `champion`.
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient

from components.project import ProjectNotFound, project_root
from components.tracking import lineage

TAG_PREFIX = "promotion."
# On the version that takes `champion`: the version that held it before (rollback goes there).
TAG_PREVIOUS_CHAMPION = TAG_PREFIX + "previous_champion"
# On a version that was rolled back: the pipeline does not make it champion again by itself.
TAG_ROLLED_BACK = TAG_PREFIX + "rolled_back"
# On every version the promote stage saw: runs:/ URI of its per-item results (the champion's
# side of the next challenger's paired test).
TAG_ITEMS = TAG_PREFIX + "items"
# MLflow keeps tag values up to 5000 characters (8000 on newer servers); stay below both.
MAX_TAG_CHARS = 4000


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "unknown"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def code_commit() -> str:
    try:
        return lineage.git_commit(project_root())
    except ProjectNotFound:
        return "unknown"


def stamp(run_id: str) -> dict[str, str]:
    """The who/when/which-code part of every audit record."""
    return {"by": who(), "at": now(), "git_commit": code_commit(), "run_id": run_id}


def as_tags(record: dict[str, Any]) -> dict[str, str]:
    """`promotion.<key>` tags; structured values as compact JSON, cut to the tag size limit."""
    tags = {}
    for key, value in record.items():
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        tags[TAG_PREFIX + key] = text[:MAX_TAG_CHARS]
    return tags


def tag_version(client: MlflowClient, name: str, version: str, record: dict[str, Any]) -> None:
    for key, value in as_tags(record).items():
        client.set_model_version_tag(name, version, key, value)
