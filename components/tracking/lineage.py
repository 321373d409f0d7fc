"""Lineage facts stamped on every registered model: code, data, params, parent."""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from pathlib import Path

from components.constants import REGISTRY_RECORD, TAG_MODEL_HASH
from components.project import project_root

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


class _Without:
    """dvc_data's `Ignore`: walks a directory leaving out files with these names."""

    def __init__(self, names: frozenset[str]):
        self.names = names

    def walk(self, fs, path, **kwargs):
        for root, dirs, files in fs.walk(path, **kwargs):
            yield root, dirs, [f for f in files if f not in self.names]


def dvc_hash(path: Path, exclude: frozenset[str] = frozenset()) -> str:
    """The hash DVC gives `path` (a file's md5; a directory's `.dir` md5), computed by DVC's
    own data layer, without adding anything to a cache."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:  # dry_run stages in memory; never written
        _, _, obj = build(
            HashFileDB(fs, scratch),
            str(path),
            fs,
            "md5",
            dry_run=True,
            ignore=_Without(exclude) if exclude else None,
        )
    return obj.hash_info.value


def tracked_hash(path: str | Path, root: Path) -> str | None:
    """The hash DVC recorded for `path` (an output in dvc.lock or a `.dvc` file of the project
    at `root`), read through DVC's API; None when DVC does not track it."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    target = (root / path).resolve()
    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        return None
    with repo:
        for out in repo.index.outs:
            if Path(out.fs_path).resolve() == target:
                return out.hash_info.value or None
    return None


def data_hash(path: str | Path, root: Path) -> str:
    """DVC hash of the data at `path` (absolute, or relative to the project `root`).

    Data DVC tracks (a stage output, a `.dvc` file): the hash DVC recorded. Data tracked by
    git: hashed the way DVC would hash it.
    """
    p = root / path  # an absolute `path` stays as it is
    recorded = tracked_hash(p, root)
    if recorded:
        return recorded
    if not p.exists():
        raise FileNotFoundError(f"cannot hash training data {p}: it does not exist")
    log.info("%s is not tracked by DVC; hashing it directly", p)
    return dvc_hash(p)


def model_hash(model_dir: str | Path) -> str:
    """Content hash of a model directory, its registry record excluded (as .dvcignore does):
    the `.dir` hash DVC records for it. Computed once, when the version is registered."""
    return dvc_hash(Path(model_dir), exclude=frozenset({REGISTRY_RECORD}))


def parent_model(model_dir: str | Path) -> str:
    """`name/version` of the registered model in `model_dir` (see `parent_lineage`)."""
    return parent_lineage(model_dir)[0]


def parent_lineage(model_dir: str | Path) -> tuple[str, dict[str, str]]:
    """(`name/version`, lineage tags) of the registered model in `model_dir`, from what was
    recorded; the weights are never read.

    From its registry record, unless DVC's recorded hash of the directory says the record
    describes other weights (DVC checked out a cached version and kept an old, dvcignored
    record) or there is no record (DVC restored the directory without it): then from the
    registry, by the hash DVC recorded.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"{model_dir} is missing: its stage has not run; run it with `dvc repro`"
        )
    root = project_root()
    recorded = tracked_hash(model_dir, root)
    record = model_dir / REGISTRY_RECORD
    if record.exists():
        info = json.loads(record.read_text())
        tags = dict(info.get("tags", {}))
        if recorded is None or tags.get(TAG_MODEL_HASH, recorded) == recorded:
            return f"{info['name']}/{info['version']}", tags
    if recorded is None:
        raise FileNotFoundError(
            f"{model_dir} has no {REGISTRY_RECORD} and DVC does not track it, so which "
            "registered version it holds is unknown: re-run the stage that produced it with "
            "`dvc repro --force STAGE`"
        )
    found = versions_with_hash(recorded)
    if not found:
        raise FileNotFoundError(
            f"{model_dir} (DVC hash {recorded}) is not a registered model version: re-run "
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
