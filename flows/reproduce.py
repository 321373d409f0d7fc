"""`llmops reproduce models:/NAME/VERSION` (or `models:/NAME@ALIAS`): rebuild a registered model
from what its registration recorded and compare the result with it.

The rebuild runs in an isolated workspace (flows/workspace.py) at the recorded commit (tag
`git_commit`) with the recorded params (the producing run's artifact `lineage/params.yaml`):
`dvc repro --force --no-run-cache` of the model's stage (tag `stage`), so that stage and every
stage upstream of it compute again, inputs DVC tracks coming from the shared cache or, with
`--pull`, from the remote. Its stages track into a scratch MLflow store inside the workspace, so
they register versions and move aliases there, never in the user's registry; the workspace, the
scratch store with it, goes when the reproduction ends, however it ends (a kill -9 leaves it in
.dvc/tmp/workspaces, where the next isolated run's prune removes it).

The comparison: the weights' hash computed by the rebuild's own registration (the registering
code of that commit, so the same function that computed `model_hash`) against the tag, and every
metric of the producing run against the rebuilt run's, within `reproduce.rtol`/`atol`.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from components.config import ReproduceParams
from components.constants import (
    ENV_EXPERIMENT,
    ENV_PARENT_RUN_ID,
    ENV_PROJECT_DIR,
    REGISTRY_RECORD,
    TAG_GIT_COMMIT,
    TAG_MODEL_HASH,
    TAG_REPRODUCTION_OF,
    TAG_STAGE,
)
from components.project import dvc_paths
from components.tracking import lineage_record
from flows import workspace
from flows.dvc_stage import dvc_executable

# The complete params file the producing stage ran with, logged to its MLflow run at
# registration (components/tracking/registry.py).
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


class ReproduceError(RuntimeError):
    """The model cannot be rebuilt: the message names what is missing and how to get it."""


@dataclass(frozen=True)
class Row:
    """One line of the side-by-side table: a recorded value and the rebuilt one."""

    name: str
    recorded: float | str | None
    rebuilt: float | str | None
    ok: bool


@dataclass
class Reproduction:
    uri: str
    name: str
    version: str
    commit: str
    stage: str
    rtol: float
    atol: float
    seconds: float = 0.0
    rows: list[Row] = field(default_factory=list)
    registered: str = ""  # `name/version` of the rebuild, when registered (--register)

    @property
    def ok(self) -> bool:
        return bool(self.rows) and all(row.ok for row in self.rows)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def markdown(self) -> str:
        lines = [
            f"# Reproduction of {self.uri} ({self.name} version {self.version})",
            "",
            f"commit {self.commit}, stage `{self.stage}`, rebuilt in {self.seconds:.0f} s, "
            f"tolerance rtol={self.rtol:g} atol={self.atol:g}: "
            f"**{'reproduced' if self.ok else 'MISMATCH'}**",
            "",
            "| | recorded | rebuilt | match |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r.name} | {_cell(r.recorded)} | {_cell(r.rebuilt)} | {'yes' if r.ok else 'NO'} |"
            for r in self.rows
        ]
        if self.registered:
            lines += ["", f"Registered as {self.registered} (tag {TAG_REPRODUCTION_OF})."]
        return "\n".join(lines) + "\n"


def _cell(value: float | str | None) -> str:
    return "(missing)" if value is None else f"{value:.6g}" if isinstance(value, float) else value


def resolve(client: MlflowClient, uri: str) -> ModelVersion:
    match = _URI.match(uri)
    if not match:
        raise ReproduceError(
            f"{uri!r} is not a model version URI: models:/NAME/VERSION or models:/NAME@ALIAS"
        )
    name, version, alias = match["name"], match["version"], match["alias"]
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except MlflowException as err:
        raise ReproduceError(
            f"{uri} does not exist in the registry at {client.tracking_uri}: "
            f"{err.message.splitlines()[0]} (list versions with "
            f"`mlflow models` or the MLflow UI)"
        ) from err


def recorded_params(client: MlflowClient, mv: ModelVersion) -> str:
    try:
        return lineage_record.recorded_params_text(client, mv)
    except lineage_record.LineageNotRecorded as err:
        raise ReproduceError(f"{err}; without them it cannot be rebuilt") from err


def recorded_lineage(mv: ModelVersion) -> tuple[str, str, str]:
    """(commit, stage, model hash) of the version; a version registered by hand has none."""
    missing = [t for t in (TAG_GIT_COMMIT, TAG_STAGE, TAG_MODEL_HASH) if not mv.tags.get(t)]
    if missing:
        raise ReproduceError(
            f"{mv.name} version {mv.version} has no lineage tags {missing} (registered by hand, "
            "not by a pipeline stage): there is no recorded commit and stage to rebuild it from"
        )
    commit = mv.tags[TAG_GIT_COMMIT]
    if commit == "unknown":
        raise ReproduceError(
            f"{mv.name} version {mv.version} was registered outside a git checkout "
            "(git_commit=unknown): there is no commit to rebuild it from"
        )
    return commit, mv.tags[TAG_STAGE], mv.tags[TAG_MODEL_HASH]


def _rebuild(path: Path, stage: str, pull: bool) -> str:
    """`dvc repro --force --no-run-cache STAGE` in the workspace; returns the scratch store's
    tracking URI. Raises ReproduceError with DVC's last lines when it fails."""
    store = f"sqlite:///{path / '.mlflow' / 'mlflow.db'}"
    drop = {ENV_PARENT_RUN_ID, ENV_EXPERIMENT, "MLFLOW_REGISTRY_URI", "MLFLOW_RUN_ID"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {"MLFLOW_TRACKING_URI": store, ENV_PROJECT_DIR: str(path)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [dvc_executable(), "repro", "--force", "--no-run-cache", *(["--pull"] if pull else [])]
    tail: deque[str] = deque(maxlen=30)
    with subprocess.Popen(
        [*cmd, stage], cwd=path, env=env, text=True, errors="replace",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:  # a rebuild takes minutes: say which stage it is at
            tail.append(line.rstrip("\n"))
            if line.startswith("Running stage"):
                print(f"  {line.strip()}", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        said = "\n".join(tail)
        raise ReproduceError(
            f"rebuilding stage {stage} failed (`{' '.join(cmd)} {stage}` exited "
            f"{proc.returncode}). If an input is missing from the DVC cache, push it from a "
            f"machine that has it (`dvc push`) and rerun with --pull. DVC said:\n{said}"
        )
    return store


def _rebuilt_version(store: str, name: str, stage: str) -> ModelVersion:
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    found = [
        mv
        for mv in client.search_model_versions(f"name = '{name}'")
        if mv.tags.get(TAG_STAGE) == stage
    ]
    if not found:
        raise ReproduceError(f"the rebuilt stage {stage} registered no {name}")
    return max(found, key=lambda mv: int(mv.version))


def compare(
    recorded_hash: str,
    rebuilt_hash: str,
    recorded: dict[str, float],
    rebuilt: dict[str, float],
    cfg: ReproduceParams,
) -> list[Row]:
    rows = [Row("model_hash", recorded_hash, rebuilt_hash, recorded_hash == rebuilt_hash)]
    for key in sorted(recorded):
        if any(fnmatch(key, pattern) for pattern in cfg.ignore_metrics):
            continue
        new = rebuilt.get(key)
        ok = new is not None and math.isclose(
            new, recorded[key], rel_tol=cfg.rtol, abs_tol=cfg.atol
        )
        rows.append(Row(key, recorded[key], new, ok))
    return rows


def _rebuilt_dir(path: Path, name: str) -> Path:
    """The model directory in the workspace that the rebuild registered as `name`."""
    for record in path.rglob(REGISTRY_RECORD):
        if json.loads(record.read_text()).get("name") == name:
            return record.parent
    raise ReproduceError(f"the rebuild wrote no model directory registered as {name}")


def _register(result: Reproduction, model_dir: Path, tags: dict[str, str]) -> str:
    """The rebuilt weights as a new version in the user's registry, tagged with what it
    reproduces; no alias moves."""
    import mlflow

    from components.tracking.registry import log_and_register

    original = f"{result.name}/{result.version}"
    with mlflow.start_run(run_name=f"reproduce {original}"):
        mlflow.log_text(result.markdown(), "reproduction.md")
        mv = log_and_register(result.name, model_dir, {**tags, TAG_REPRODUCTION_OF: original})
    return f"{mv.name}/{mv.version}"


def reproduce(
    root: Path,
    uri: str,
    cfg: ReproduceParams,
    pull: bool = False,
    register: bool = False,
    log=print,
) -> Reproduction:
    """Rebuild `uri` and compare. The user's workspace and params are not written, nor is the
    registry unless `register` is set and the rebuild matches: then the rebuilt weights become a
    new version tagged `reproduction_of`."""
    client = MlflowClient()
    mv = resolve(client, uri)
    commit, stage, model_hash = recorded_lineage(mv)
    if commit.endswith("-dirty"):
        log(
            f"warning: {mv.name} version {mv.version} was registered from uncommitted changes "
            f"on {commit}; rebuilding from the commit alone"
        )
        commit = commit.removesuffix("-dirty")
    params = recorded_params(client, mv)
    recorded = dict(client.get_run(mv.run_id).data.metrics)
    result = Reproduction(uri, mv.name, str(mv.version), commit, stage, cfg.rtol, cfg.atol)
    name = f"reproduce-{mv.name}-{mv.version}-{os.getpid()}"
    start = time.monotonic()
    with workspace.isolated(root, name, commit=commit) as path:
        (path / "params.yaml").write_text(params)
        log(f"rebuilding {mv.name} version {mv.version}: stage {stage} at {commit[:12]} in {path}")
        store = _rebuild(path, stage, pull)
        rebuilt = _rebuilt_version(store, mv.name, stage)
        scratch = MlflowClient(tracking_uri=store, registry_uri=store)
        metrics = dict(scratch.get_run(rebuilt.run_id).data.metrics)
        result.rows = compare(
            model_hash, rebuilt.tags.get(TAG_MODEL_HASH, ""), recorded, metrics, cfg
        )
        if register and result.ok:
            result.registered = _register(result, _rebuilt_dir(path, mv.name), dict(rebuilt.tags))
        elif register:
            log("the rebuild does not match: not registered")
    result.seconds = time.monotonic() - start
    return result


def write_report(root: Path, result: Reproduction) -> tuple[Path, Path]:
    """JSON and markdown under the project's reports folder; returns both paths."""
    folder = root / dvc_paths(root)["reports"] / "reproduce"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = folder / f"{result.name}-v{result.version}-{stamp}"
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    md_path.write_text(result.markdown())
    return json_path, md_path
