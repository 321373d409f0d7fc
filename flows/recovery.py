"""Clean up after an in-place run killed with -9: DVC's locks held by its dead processes.

A killed `dvc repro` leaves its entries in `.dvc/tmp/rwlock`, and DVC refuses every later run
that touches those paths until they go. An isolated run needs none of this: its workspace,
locks included, is thrown away (flows/workspace.py).
"""

from __future__ import annotations

from pathlib import Path


def _is_gone(pid: int) -> bool:
    """No such process, or a zombie: in a container whose init does not reap, a killed
    `dvc repro` stays a zombie, and DVC (which asks only whether the pid exists) keeps
    honouring its locks."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def release_dead_dvc_locks(root: Path) -> list[str]:
    """Drop the entries of DVC's rwlock (`.dvc/tmp/rwlock`) whose process is gone.

    Edited under DVC's own guard lock with DVC's own reader and writer, so a `dvc` command
    running beside us sees either the old file or the new one. Live holders are left alone:
    DVC then refuses with its own message naming them."""
    from dvc.fs import localfs
    from dvc.rwlock import _edit_rwlock

    tmp_dir = root / ".dvc" / "tmp"
    if not (tmp_dir / "rwlock").is_file():
        return []
    done: list[str] = []
    with _edit_rwlock(str(tmp_dir), localfs, hardlink=False) as lock:
        for path, info in list(lock["write"].items()):
            if _is_gone(info["pid"]):
                del lock["write"][path]
                done.append(f"DVC write lock on {path} of dead pid {info['pid']} ({info['cmd']})")
        for path, infos in list(lock["read"].items()):
            alive = [i for i in infos if not _is_gone(i["pid"])]
            done += [
                f"DVC read lock on {path} of dead pid {i['pid']} ({i['cmd']})"
                for i in infos
                if i not in alive
            ]
            if alive:
                lock["read"][path] = alive
            else:
                del lock["read"][path]
    return [f"released {line}" for line in done]
