"""Register a model directory in MLflow with the project's lineage tags."""

from __future__ import annotations

import json
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion

import components
from components.config import params_hash
from components.constants import (
    ENV_EXPERIMENT,
    INIT_TAGS,
    REGISTRY_RECORD,
    REUSE_KEYS,
    TAG_DATA_HASH,
    TAG_EXPERIMENT,
    TAG_GIT_COMMIT,
    TAG_MODEL_HASH,
    TAG_PARAMS_HASH,
    TAG_PARENT_MODEL,
    TAG_STAGE,
)
from components.project import project_root
from components.tracking import lineage, lineage_record
from components.tracking.hf_pyfunc import HF_ARTIFACT
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)

_PYFUNC_CODE = Path(__file__).with_name("hf_pyfunc.py")
# Explicit requirements: inferring them costs ~12 s per model.
_REQUIREMENTS = ("torch", "transformers", "safetensors", "tokenizers", "compressed-tensors")


def _requirements(packages: tuple[str, ...] = _REQUIREMENTS) -> list[str]:
    """Pinned to the installed versions; an optional package that is not installed, unpinned."""
    reqs = []
    for pkg in packages:
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def register_model_dir(
    tracker: Tracker,
    model_dir: str | Path,
    name: str,
    *,
    data_path: str | Path,
    parent_dir: str | Path | None = None,
    init: dict[str, str] | None = None,
) -> ModelVersion:
    """Log `model_dir` as a pyfunc model in the active run and register it under `name`.

    Lineage tags: git commit, DVC hash of the training data, hash of the params the stage
    declared (`tracker.params`), parent model (`name/version` read from the parent's registry
    record) and the producing stage, plus the content hash of the weights (`model_hash`).
    The checkpoint it was trained from (`init_origin`, `init_hash`) comes from `init` (the
    stage that starts from `model.init`: its INIT_TAGS) or else is the parent's.
    A version with the same weights and lineage (REUSE_KEYS) is reused, not duplicated: a
    rerun then changes neither the registry nor any alias.
    The run also records the whole params file and the training corpus's sources
    (components/tracking/lineage_record.py), and the version names the DVC experiment it was
    trained in (`experiment`, from ENV_EXPERIMENT; "" in the user's workspace).
    A `registered_model.json` record is written into `model_dir` for downstream stages
    (ignored by DVC, see REGISTRY_RECORD).
    """
    model_dir = Path(model_dir)
    root = project_root()  # dvc.lock and the git checkout, whatever the working directory
    record = model_dir / REGISTRY_RECORD
    record.unlink(missing_ok=True)  # a stale record must not be logged inside the model
    parent, parent_tags = lineage.parent_lineage(parent_dir) if parent_dir else ("", {})
    tags = {
        TAG_GIT_COMMIT: lineage.git_commit(root),
        TAG_DATA_HASH: lineage.data_hash(data_path, root),
        TAG_PARAMS_HASH: params_hash(tracker.params),
        TAG_PARENT_MODEL: parent,
        TAG_STAGE: tracker.stage,
        TAG_MODEL_HASH: lineage.model_hash(model_dir),
    }
    tags |= {key: (init or parent_tags).get(key, "") for key in INIT_TAGS}
    tags[TAG_EXPERIMENT] = os.environ.get(ENV_EXPERIMENT, "")
    lineage_record.record(tracker.params_text, root / data_path)
    mv = _same_version(name, tags)
    if mv is not None:
        log.info(
            "%s version %s already holds these weights with this lineage (registered by run %s "
            "at commit %s); reusing it instead of registering a duplicate",
            name,
            mv.version,
            mv.run_id,
            mv.tags.get(TAG_GIT_COMMIT),
        )
        tracker.set_tags({"registered_model.reused": f"{name}/{mv.version}"})
    else:
        mv = log_and_register(name, model_dir, tags)
        log.info("registered %s version %s (%s)", name, mv.version, tags)
    tracker.set_tags({"registered_model": f"{name}/{mv.version}"})
    record.write_text(
        json.dumps(
            {"name": name, "version": mv.version, "run_id": mv.run_id, "tags": tags}, indent=2
        )
        + "\n"
    )
    return mv


def _same_version(name: str, tags: dict[str, str]) -> ModelVersion | None:
    for mv in lineage.versions_with_hash(tags[TAG_MODEL_HASH], name):
        if all(mv.tags.get(key, "") == tags[key] for key in REUSE_KEYS):
            return mv
    return None


def log_and_register(name: str, model_dir: Path, tags: dict[str, str]) -> ModelVersion:
    """Log `model_dir` as a pyfunc model in the active run and register it, as it is: a new
    version with `tags` (no reuse check, no registry record)."""
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(_PYFUNC_CODE),
        artifacts={HF_ARTIFACT: str(model_dir)},
        code_paths=[str(Path(components.__file__).parent)],
        pip_requirements=_requirements(),
        tags=tags,
    )
    return mlflow.register_model(info.model_uri, name, tags=tags)
