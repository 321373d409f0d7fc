"""Lineage facts stamped on every registered model: code, data, params, parent."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path

import yaml

from components.constants import REGISTRY_RECORD, TAG_MODEL_HASH

log = logging.getLogger(__name__)


# `git rev-parse` answers at once; `git status` reads the tracked files' metadata: seconds even
# for a large checkout. A minute means a stuck index lock or network file system.
GIT_TIMEOUT_S = 60


def git_commit(root: Path, timeout_s: float = GIT_TIMEOUT_S) -> str:
    """The commit of the project at `root`, with a `-dirty` suffix when it has local changes;
    "unknown" outside a git checkout or when git does not answer in time (logged)."""
    try:
        sha = _git(["rev-parse", "HEAD"], root, timeout_s)
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], root, timeout_s)
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    except subprocess.TimeoutExpired as err:
        log.warning(
            "`%s` in %s did not finish in %g s and was stopped; the lineage tag says "
            "git_commit=unknown (is a .git/index.lock left behind?)",
            " ".join(err.cmd),
            root,
            timeout_s,
        )
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def _git(args: list[str], root: Path, timeout_s: float) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=timeout_s
    ).stdout.strip()


def _file_md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_md5(path: Path, exclude: frozenset[str] = frozenset()) -> str:
    # Same construction as DVC 3's `.dir` hash: md5 of the sorted JSON listing of file md5s.
    entries = [
        {"md5": _file_md5(p), "relpath": p.relative_to(path).as_posix()}
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in exclude
    ]
    blob = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(blob).hexdigest() + ".dir"


def _locked_hashes(lock_path: Path) -> dict[str, str]:
    if not lock_path.exists():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    hashes: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if "md5" in out:
                hashes[out["path"]] = out["md5"]
    return hashes


def data_hash(path: str | Path, root: Path) -> str:
    """DVC hash of the data at `path` (absolute, or relative to the project `root`).

    Data produced by an upstream stage is read from the project's dvc.lock (exactly what DVC
    recorded); data tracked by git is hashed the way DVC would hash it.
    """
    p = root / path  # an absolute `path` stays as it is
    # dvc.lock keys outputs by their path relative to the root, as dvc.yaml spells them.
    key = p.relative_to(root).as_posix() if p.is_relative_to(root) else p.as_posix()
    locked = _locked_hashes(root / "dvc.lock")
    if key in locked:
        return locked[key]
    if not p.exists():
        raise FileNotFoundError(f"cannot hash training data {p}: it does not exist")
    log.info("%s is not a DVC stage output; hashing it directly", key)
    return dir_md5(p) if p.is_dir() else _file_md5(p)


def model_hash(model_dir: str | Path) -> str:
    """Content hash of a model directory, its registry record excluded (as .dvcignore does)."""
    return dir_md5(Path(model_dir), exclude=frozenset({REGISTRY_RECORD}))


def parent_model(model_dir: str | Path) -> str:
    """`name/version` of the registered model in `model_dir` (see `parent_lineage`)."""
    return parent_lineage(model_dir)[0]


def parent_lineage(model_dir: str | Path) -> tuple[str, dict[str, str]]:
    """(`name/version`, lineage tags) of the registered model in `model_dir`.

    From its registry record when the record describes these weights; else (DVC restored the
    directory from its cache without the record, which it does not track) from the registry,
    by the directory's content hash.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"{model_dir} is missing: its stage has not run; run it with `dvc repro`"
        )
    digest = model_hash(model_dir)
    record = model_dir / REGISTRY_RECORD
    if record.exists():
        info = json.loads(record.read_text())
        if info.get("tags", {}).get(TAG_MODEL_HASH, digest) == digest:
            return f"{info['name']}/{info['version']}", dict(info.get("tags", {}))
    found = versions_with_hash(digest)
    if not found:
        raise FileNotFoundError(
            f"{model_dir} (content hash {digest}) is not a registered model version: re-run "
            "the stage that produced it with `dvc repro --force STAGE`"
        )
    mv = found[0]
    return f"{mv.name}/{mv.version}", dict(mv.tags)


def versions_with_hash(digest: str, name: str | None = None) -> list:
    """Registered versions whose weights hash to `digest`, newest first."""
    from mlflow import MlflowClient

    query = f"tags.{TAG_MODEL_HASH} = '{digest}'"
    if name:
        query = f"name = '{name}' and {query}"
    found = MlflowClient().search_model_versions(query)
    return sorted(found, key=lambda mv: int(mv.version), reverse=True)
