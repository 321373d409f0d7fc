"""`llmops ui` stopped the way a process manager stops it (SIGTERM) stops its servers too, with
their workers: nothing is left running on their ports.

Stand-in servers here: a real `llmops ui` (Prefect and MLflow servers, MLflow's uvicorn workers
and huey consumers) passed the same check once by hand, but takes ~2 min to start on this
machine."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil

from tests.helpers import ROOT

# A stand-in server: one process with a worker of its own (as uvicorn and MLflow's job runner
# are), both recorded in a file.
SERVER = """\
import subprocess, sys, time
worker = subprocess.Popen(["sleep", "300"])
open(sys.argv[1], "w").write(f"{worker.pid}\\n")
time.sleep(300)
"""
SUPERVISOR = """\
import os, sys
from flows.servers import supervise
server = [sys.executable, "-c", {server!r}]
supervise({{"a": server + [sys.argv[1]], "b": server + [sys.argv[2]]}}, dict(os.environ))
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigterm_stops_every_server_and_its_workers(tmp_path):
    files = [tmp_path / "a.pid", tmp_path / "b.pid"]
    code = SUPERVISOR.format(server=SERVER)
    ui = subprocess.Popen([sys.executable, "-c", code, *map(str, files)], cwd=ROOT)
    deadline = time.monotonic() + 60
    while not all(f.exists() and f.read_text().endswith("\n") for f in files):
        assert ui.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    servers = psutil.Process(ui.pid).children()
    workers = [int(f.read_text()) for f in files]
    assert len(servers) == 2 and all(alive(pid) for pid in workers)

    ui.send_signal(signal.SIGTERM)
    assert ui.wait(timeout=60) == 0
    stopped = [p.pid for p in servers] + workers
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in stopped) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in stopped if alive(pid)]
