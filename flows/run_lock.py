"""One run at a time per project: a run-level lock taken before params.yaml is touched.

Two runs of one project share params.yaml, dvc.lock, the outputs and the registry: a second run
that writes params.yaml while the first is training makes the first train with the second's
values. So every entry point that changes any of them holds this lock for its whole duration:
`llmops run` (and the flow when a Prefect worker runs a deployment), `llmops stage` (which is
what `dvc repro` runs), `llmops params apply|set`.

- The lock is `fcntl.flock` on `.llmops/run.lock` under the project root: the kernel drops it
  when the holder dies, however it dies (kill -9 included), so no stale lock ever blocks a run.
- Who holds it is in `.llmops/run.json` (pid, process group, host, command, Prefect flow run,
  MLflow parent run, start time), written atomically beside the lock file and never replacing
  it (a lock follows the inode: the lock file itself must stay put).
- Stages a locked run starts (`dvc repro` -> `llmops stage`) carry the run's token in
  $LLMOPS_RUN_TOKEN; a stage whose token is the holder's runs inside that lock, not against it.
- A user's own `dvc repro` (or `dvc exp run`) is one run too, not one per stage: its first
  `llmops stage` takes the lock on behalf of that `dvc` process and hands it to a small keeper
  process that holds it until `dvc` exits (hold_stage). The later stages of the same repro find
  their `dvc` ancestor named as the holder and run inside; a second run that tries to start
  between two stages is refused like any other.
- `finished: false` in run.json found by the next holder means the previous one died without
  releasing: its MLflow and Prefect runs are debris to mark failed (flows/recovery.py) and the
  params.yaml it changed is restored from the copy taken before the change.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from components.constants import ENV_RUN_TOKEN, EXIT_TRANSIENT

log = logging.getLogger(__name__)

STATE_DIR = ".llmops"
LOCK_NAME = "run.lock"
HOLDER_NAME = "run.json"
PARAMS_BACKUP = "params.yaml.before-run"
WAIT_POLL_S = 2.0
KEEPER_POLL_S = 0.5


@dataclass(frozen=True)
class Holder:
    """Who holds (or last held) the project's run lock."""

    token: str
    pid: int
    pgid: int
    host: str
    command: str
    started_at: str
    flow_run_id: str = ""
    mlflow_run_id: str = ""
    params_backup: str = ""  # params.yaml as it was before this run changed it, if it did
    finished: bool = False

    def describe(self) -> str:
        flow = f", Prefect flow run {self.flow_run_id}" if self.flow_run_id else ""
        return f"`{self.command}` (pid {self.pid} on {self.host}{flow}, started {self.started_at})"


class RunLocked(RuntimeError):
    """Another run of this project holds the lock."""

    exit_code = EXIT_TRANSIENT  # try again later (EX_TEMPFAIL)


class OrphanedStages(RuntimeError):
    """The previous run was killed but processes it started are still running."""

    exit_code = EXIT_TRANSIENT


def state_dir(root: Path) -> Path:
    return root / STATE_DIR


def read_holder(root: Path) -> Holder | None:
    path = state_dir(root) / HOLDER_NAME
    try:
        return Holder(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as err:
        log.warning("ignoring unreadable %s (%s)", path, err)
        return None


def write_holder(root: Path, holder: Holder) -> None:
    """Atomically (rename), so a reader never sees half a file."""
    path = state_dir(root) / HOLDER_NAME
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(holder), indent=2) + "\n")
    os.replace(tmp, path)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _lock_is_held(root: Path) -> bool:
    path = state_dir(root) / LOCK_NAME
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        if _try_lock(fd):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`. Not `killpg(pgid, 0)`: in a
    container whose init does not reap, a dead child stays a zombie and would count."""
    import psutil

    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, PermissionError):
            continue
    return members


def _check_no_orphans(previous: Holder | None) -> None:
    """A killed `llmops run` can leave its `dvc repro`/stage children running (kill -9 reaches
    one process, not its group). They no longer hold the lock but still write outputs.

    Checked only when the previous holder led its own process group (a shell-started command):
    then everything else in that group is what it started. A worker-started flow shares the
    worker's group, which outlives it by design.
    """
    if previous is None or previous.finished or previous.host != socket.gethostname():
        return
    if previous.pgid != previous.pid or previous.pgid == os.getpgrp():
        return
    alive = _group_members(previous.pgid)
    if alive:
        raise OrphanedStages(
            f"the previous run {previous.describe()} was killed, but processes it started "
            f"(process group {previous.pgid}: pids {alive[:10]}) are still running and may "
            "still write outputs. "
            f"Wait for them to end, or stop them: kill -- -{previous.pgid}"
        )


@contextmanager
def _locked_fd(root: Path, command: str, wait: bool) -> Iterator[int]:
    directory = state_dir(root)
    directory.mkdir(exist_ok=True)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited
    try:
        if not _try_lock(fd):
            holder = read_holder(root)
            running = holder.describe() if holder else "(holder unknown)"
            if not wait:
                raise RunLocked(
                    f"another run of this project is in progress: {running}. "
                    f"`{command}` changed nothing. Wait for it (`--wait`), or stop it."
                )
            log.info("waiting for the run in progress to finish: %s", running)
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the holder releases or dies
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def hold(
    root: Path, command: str, *, wait: bool = False, flow_run_id: str = ""
) -> Iterator[tuple[Holder, Holder | None]]:
    """Hold the project's run lock for the block; yields (this holder, the previous holder if it
    died without releasing). Inside a run that already holds it (same token), holds nothing and
    yields the current holder with no previous one.

    Raises RunLocked when another run holds it and `wait` is false.
    """
    current = read_holder(root)
    token = os.environ.get(ENV_RUN_TOKEN)
    nested = token and current and current.token == token and not current.finished
    if nested and _lock_is_held(root):
        if flow_run_id and not current.flow_run_id:
            current = replace(current, flow_run_id=flow_run_id)
            write_holder(root, current)
        yield current, None
        return
    with _locked_fd(root, command, wait):
        previous = _take_over(root)
        holder = _new_holder(os.getpid(), os.getpgrp(), command, flow_run_id)
        write_holder(root, holder)
        saved = os.environ.get(ENV_RUN_TOKEN)
        os.environ[ENV_RUN_TOKEN] = holder.token  # the stages this run starts inherit it
        try:
            yield holder, previous
        finally:
            _release(root, holder.token, saved)


def _take_over(root: Path) -> Holder | None:
    """With the lock taken: the previous holder if it died without finishing, else None."""
    previous = read_holder(root)
    _check_no_orphans(previous)
    return previous if previous and not previous.finished else None


def _new_holder(pid: int, pgid: int, command: str, flow_run_id: str = "") -> Holder:
    return Holder(
        token=uuid.uuid4().hex,
        pid=pid,
        pgid=pgid,
        host=socket.gethostname(),
        command=command,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        flow_run_id=flow_run_id,
    )


@contextmanager
def hold_stage(root: Path, command: str) -> Iterator[tuple[Holder, Holder | None]]:
    """The lock for `llmops stage`: inside the run that started it (its token), else inside the
    `dvc repro` that started it (taken for the whole repro by its first stage), else its own.
    Yields like hold(). Raises RunLocked when another run holds it."""
    current = read_holder(root)
    token = os.environ.get(ENV_RUN_TOKEN)
    repro = None if token and current and current.token == token else repro_ancestor()
    if repro is None:
        with hold(root, command) as held:
            yield held
        return
    pid, argv = repro
    if _held_for(root, current, pid):
        os.environ[ENV_RUN_TOKEN] = current.token  # its MLflow runs carry the repro's token
        yield current, None
        return
    with _locked_fd(root, _command(argv), wait=False) as fd:
        previous = _take_over(root)
        holder = _new_holder(pid, os.getpgid(pid), _command(argv))
        write_holder(root, holder)
        _start_keeper(root, holder.token, pid, fd)
        os.environ[ENV_RUN_TOKEN] = holder.token
        yield holder, previous


def _held_for(root: Path, current: Holder | None, pid: int) -> bool:
    if current is None or current.finished or current.host != socket.gethostname():
        return False
    return current.pid == pid and _lock_is_held(root)


def _command(argv: list[str]) -> str:
    return " ".join(["dvc", *argv[_dvc_index(argv) + 1 :]])[:300]


def _dvc_index(argv: list[str]) -> int:
    for i, arg in enumerate(argv):
        if Path(arg).name == "dvc":
            return i
    return -1


def is_dvc_repro(argv: list[str]) -> bool:
    """`dvc repro ...` or `dvc exp run ...` (global options such as -v may come first)."""
    i = _dvc_index(argv)
    words = [a for a in argv[i + 1 :] if not a.startswith("-")] if i >= 0 else []
    return words[:1] == ["repro"] or words[:2] == ["exp", "run"]


def repro_ancestor(levels: int = 3) -> tuple[int, list[str]] | None:
    """(pid, argv) of the `dvc repro` that started this process: its parent, or the shell's
    parent (DVC runs a stage's cmd through $SHELL -c, which may or may not exec it)."""
    import psutil

    proc = psutil.Process().parent()
    for _ in range(levels):
        if proc is None:
            return None
        try:
            argv = proc.cmdline()
        except psutil.Error:
            return None
        if is_dvc_repro(argv):
            return proc.pid, argv
        proc = proc.parent()
    return None


def _start_keeper(root: Path, token: str, pid: int, fd: int) -> None:
    """A process that shares the locked file description (so the lock stays held after this
    stage exits) until `dvc` (pid) exits; it is in dvc's process group, so killing the group
    kills it too and leaves the record unfinished for the next run to recover."""
    package_dir = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_dir, os.environ.get("PYTHONPATH")])),
    }
    subprocess.Popen(
        [sys.executable, "-m", "flows.run_lock", str(root), token, str(pid), str(fd)],
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def keep(root: Path, token: str, pid: int, fd: int) -> None:
    """The keeper's body: wait for `dvc` to exit, mark the run finished, release the lock."""
    import psutil

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops dvc, which then ends this
    try:
        proc = psutil.Process(pid)
        while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
            time.sleep(KEEPER_POLL_S)
    except psutil.NoSuchProcess:
        pass
    latest = read_holder(root)
    if latest and latest.token == token:
        write_holder(root, replace(latest, finished=True))
    os.close(fd)


def _release(root: Path, token: str, saved_env: str | None) -> None:
    latest = read_holder(root)
    if latest and latest.token == token:
        write_holder(root, replace(latest, finished=True))
    if saved_env is None:
        os.environ.pop(ENV_RUN_TOKEN, None)
    else:
        os.environ[ENV_RUN_TOKEN] = saved_env


def update(root: Path, **changes: str) -> Holder | None:
    """Record facts learnt during the run (flow run id, MLflow parent run id, params backup)."""
    holder = read_holder(root)
    if holder is None or holder.token != os.environ.get(ENV_RUN_TOKEN):
        return holder
    holder = replace(holder, **changes)
    write_holder(root, holder)
    return holder


def backup_params(root: Path, params_file: Path) -> Path:
    """Copy params.yaml before a run changes it; the path is recorded in the holder so a
    killed run's changes are undone by the next run (restore_params)."""
    backup = state_dir(root) / PARAMS_BACKUP
    backup.write_bytes(params_file.read_bytes())
    update(root, params_backup=str(backup.relative_to(root)))
    return backup


def restore_params(root: Path, params_file: Path, backup: str | Path, why: str) -> bool:
    source = root / backup
    if not source.exists():
        return False
    params_file.write_bytes(source.read_bytes())
    source.unlink()
    log.warning("params.yaml restored to its state before %s", why)
    return True


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]


if __name__ == "__main__":  # the keeper of a `dvc repro`'s lock (_start_keeper)
    keep(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
