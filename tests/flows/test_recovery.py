"""Recovery after kill -9: the dead run's DVC locks are released, a live process's are kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from flows.recovery import release_dead_dvc_locks


@pytest.fixture
def zombie_pid():
    """A process killed after its parent died: nobody reaps it where init does not (as in
    many containers), so its pid still exists, as a zombie. Where init reaps it, the pid is
    simply gone: both must count as dead."""
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; sleep 60"],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    pid = int(shell.stdout.readline())
    os.killpg(shell.pid, signal.SIGKILL)
    shell.wait()
    shell.stdout.close()
    time.sleep(0.2)
    return pid


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_locks_of_dead_and_zombie_processes_are_released_live_ones_kept(tmp_path, zombie_pid):
    tmp = tmp_path / ".dvc" / "tmp"
    tmp.mkdir(parents=True)
    live = {"pid": os.getpid(), "cmd": "dvc repro live"}
    zombie = {"pid": zombie_pid, "cmd": "dvc repro --single-item make"}
    dead = {"pid": _dead_pid(), "cmd": "dvc repro dead"}
    (tmp / "rwlock").write_text(
        json.dumps(
            {
                "write": {"out.txt": zombie, "other.txt": live},
                "read": {"in.txt": [zombie, live], "stage.py": [dead]},
            }
        )
    )

    done = release_dead_dvc_locks(tmp_path)

    lock = json.loads((tmp / "rwlock").read_text())
    assert lock["write"] == {"other.txt": live}
    assert lock["read"] == {"in.txt": [live]}
    assert len(done) == 3 and all("released DVC" in line for line in done)
    assert any(f"pid {zombie_pid}" in line and "out.txt" in line for line in done)


def test_no_rwlock_file_is_nothing_to_release(tmp_path):
    assert release_dead_dvc_locks(tmp_path) == []
