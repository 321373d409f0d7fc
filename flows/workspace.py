"""An isolated workspace for a run: a git worktree of a commit, sharing the user's DVC cache.

A run with overrides (a profile, `--set`, a reproduction) never touches the user's files: it
runs in a worktree under `.dvc/tmp/workspaces/` (ignored by git and by DVC's own walk), whose
DVC cache is the user's (so outputs already built are checked out, not rebuilt, and what the
run builds stays after the worktree goes), and whose local DVC remotes point where the user's
do. Its result is saved as a DVC experiment (`dvc exp save`): experiment refs live in the git
repository all worktrees share, so the user sees it in `dvc exp show` and takes it with
`dvc exp apply` or `dvc exp branch`.

Why a worktree and not `dvc exp run --temp`: the flow runs each stage as its own Prefect task
(retries on a transient exit, a state and an MLflow link per stage, flows/dvc_stage.py); a temp
experiment runs the whole `dvc repro` as one process the flow could only watch from outside.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from flows.dvc_stage import dvc_executable

log = logging.getLogger(__name__)

# Under .dvc/tmp: git ignores it (.dvc/.gitignore) and DVC never collects a dvc.yaml below .dvc.
WORKSPACES_DIR = Path(".dvc") / "tmp" / "workspaces"

# `dvc exp save` commits the workspace's small files (params, dvc.lock, metrics) to a git ref:
# seconds; minutes means git or DVC is stuck.
EXP_SAVE_TIMEOUT_S = 300
PRUNE_AFTER_S = 600


class WorkspaceError(RuntimeError):
    """The isolated workspace could not be built (no git commit, an unknown commit, ...)."""


def _git(cwd: Path, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=False)


def head_commit(root: Path) -> str:
    proc = _git(root, "rev-parse", "--verify", "HEAD^{commit}")
    if proc.returncode != 0:
        raise WorkspaceError(
            f"{root} is not a git repository with a commit: an isolated run starts from a commit "
            "(`git init && git add -A && git commit -m init`)"
        )
    return proc.stdout.decode().strip()


def resolve_commit(root: Path, commit: str) -> str:
    proc = _git(root, "rev-parse", "--verify", f"{commit}^{{commit}}")
    if proc.returncode != 0:
        raise WorkspaceError(
            f"commit {commit} is not in the git repository at {root}: fetch it "
            f"(`git fetch --all`, or from the remote that has it) and try again"
        )
    return proc.stdout.decode().strip()


def _share_dvc(root: Path, path: Path) -> None:
    """Point the worktree's DVC at the user's cache and (absolute) remote locations, as DVC's
    own temp experiments do for the cache (dvc/repo/experiments/executor/local.py)."""
    from dvc.repo import Repo

    repo = Repo(str(root))
    try:
        settings = {"cache.dir": repo.cache.local_cache_dir}
        for name, remote in repo.config["remote"].items():
            url = str(remote.get("url", ""))
            if url and "://" not in url:  # a local remote: DVC resolved it against root/.dvc
                settings[f"remote.{name}.url"] = url
    finally:
        repo.close()
    for key, value in settings.items():
        subprocess.run(
            [dvc_executable(), "config", "--local", key, value],
            cwd=path,
            check=True,
            capture_output=True,
        )


def _carry_changes(root: Path, path: Path) -> None:
    """Uncommitted changes of tracked files go along, as `dvc exp run` carries them."""
    diff = _git(root, "diff", "--binary", "HEAD").stdout
    if diff:
        proc = _git(path, "apply", "--binary", "--whitespace=nowarn", input=diff)
        if proc.returncode != 0:
            raise WorkspaceError(f"could not carry uncommitted changes: {proc.stderr.decode()}")


def create(root: Path, name: str, commit: str | None = None) -> Path:
    """A worktree at `commit` (default: HEAD plus the uncommitted changes of tracked files),
    its DVC outputs checked out of the shared cache where it has them."""
    rev = resolve_commit(root, commit) if commit else head_commit(root)
    path = root / WORKSPACES_DIR / name
    if path.exists():
        raise WorkspaceError(f"a workspace named {name} already exists at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = _git(root, "worktree", "add", "--detach", str(path), rev)
    if proc.returncode != 0:
        raise WorkspaceError(f"git worktree add failed: {proc.stderr.decode().strip()}")
    try:
        if commit is None:
            _carry_changes(root, path)
        _share_dvc(root, path)
        # Outputs missing from the cache are left missing: their stages run.
        subprocess.run([dvc_executable(), "checkout", "-q"], cwd=path, capture_output=True)
    except BaseException:
        remove(root, path)
        raise
    log.info("isolated workspace %s at commit %s", path, rev[:12])
    return path


def remove(root: Path, path: Path) -> None:
    _git(root, "worktree", "remove", "--force", str(path))
    shutil.rmtree(path, ignore_errors=True)  # what git left (ignored outputs)
    _git(root, "worktree", "prune")


@contextmanager
def isolated(root: Path, name: str, commit: str | None = None) -> Iterator[Path]:
    """A workspace for the block, removed after it whatever happens; a kill -9 leaves it under
    .dvc/tmp/workspaces, where the next `prune()` (every isolated run) removes it."""
    prune(root)
    path = create(root, name, commit)
    try:
        yield path
    finally:
        remove(root, path)


def prune(root: Path) -> None:
    """Drop workspaces whose run is gone: git forgets worktrees whose folder is missing; a
    folder git no longer knows as a worktree (its run was killed while being removed) goes."""
    _git(root, "worktree", "prune")
    base = root / WORKSPACES_DIR
    if not base.is_dir():
        return
    listed = _git(root, "worktree", "list", "--porcelain").stdout.decode()
    known = {line.split(" ", 1)[1] for line in listed.splitlines() if line.startswith("worktree ")}
    for child in base.iterdir():
        # The age spares a workspace another run is creating right now.
        if str(child) not in known and time.time() - child.stat().st_mtime > PRUNE_AFTER_S:
            shutil.rmtree(child, ignore_errors=True)


def uncached_outs(path: Path) -> list[str]:
    """Outputs DVC does not cache (stage metrics, reports: `cache: false`), relative to `path`.
    `dvc exp save` commits only top-level metrics and params by itself; these live in git-ignored
    folders, so they are named to it or `dvc exp apply` would bring back a run without them."""
    from dvc.repo import Repo

    repo = Repo(str(path))
    try:
        outs = [Path(out.fs_path) for out in repo.index.outs if not out.use_cache]
    finally:
        repo.close()
    return sorted(str(out.relative_to(path)) for out in outs if out.exists())


def save_experiment(path: Path, name: str, timeout_s: float = EXP_SAVE_TIMEOUT_S) -> None:
    """Save the workspace (params, dvc.lock, metrics and reports; cached outputs into the shared
    cache) as DVC experiment `name`, based on the workspace's commit."""
    include = [arg for out in uncached_outs(path) for arg in ("--include-untracked", out)]
    # Workspaces share one git repository: two `dvc exp save` at once race on its refs (DVC
    # failed with "'NoneType' object is not subscriptable"), so they take turns.
    try:
        with FileLock(path.parent.parent / "exp-save.lock", timeout=timeout_s):  # .dvc/tmp
            proc = subprocess.run(
                [dvc_executable(), "exp", "save", "--force", "-n", name, *include],
                cwd=path,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
    except (subprocess.TimeoutExpired, Timeout) as err:
        raise WorkspaceError(
            f"`dvc exp save -n {name}` did not finish in {timeout_s:g} s and was stopped"
        ) from err
    if proc.returncode != 0:
        raise WorkspaceError(f"`dvc exp save -n {name}` failed: {proc.stderr.strip()[-500:]}")
