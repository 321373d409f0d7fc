"""Local Prefect and MLflow UI servers for people who want to look (`llmops ui`)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from components.tracking import mlflow_env

log = logging.getLogger(__name__)

STOP_GRACE_S = 20.0  # a server gets this long to shut down after SIGTERM, then SIGKILL


def run_ui_servers(prefect_port: int = 4200, mlflow_port: int = 5000) -> None:
    """Start both servers in the foreground; Ctrl-C or SIGTERM stops both.

    Point the pipeline at them with PREFECT_API_URL=http://127.0.0.1:4200/api (flows then show
    up in the Prefect UI); MLflow's UI reads the same embedded SQLite store the stages write.
    """
    bin_dir = Path(sys.executable).parent
    uri = mlflow_env.tracking_uri()
    mlflow_env.configure()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    servers = {
        "prefect": [
            str(bin_dir / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(prefect_port),
        ],
        "mlflow": [
            str(bin_dir / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--backend-store-uri",
            uri,
            "--default-artifact-root",
            mlflow_env.artifact_root(uri) or "",
        ],
    }
    print(
        f"Prefect UI: http://127.0.0.1:{prefect_port}   MLflow UI: http://127.0.0.1:{mlflow_port}"
    )
    print(f"Run flows against it: PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api llmops run")
    supervise(servers, env)


class Stopped(Exception):
    """This process was asked to stop (SIGTERM, as a process manager or `kill` stops it)."""


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def supervise(commands: dict[str, list[str]], env: dict[str, str]) -> dict[str, int]:
    """Run the named commands side by side until one exits, Ctrl-C or SIGTERM; then stop every
    one, with its own children (a server's workers), and return their exit codes.

    Each runs in its own process group, so stopping it reaches its workers too: a server left
    running after `llmops ui` is gone would keep its port."""
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, cmd in commands.items():
            procs[name] = subprocess.Popen(cmd, env=env, start_new_session=True)
        while not any(p.poll() is not None for p in procs.values()):
            time.sleep(0.2)
        exited = {n: p.returncode for n, p in procs.items() if p.returncode is not None}
        log.warning("%s exited (%s); stopping the others", ", ".join(exited), exited)
    except (KeyboardInterrupt, Stopped) as why:
        log.info("stopping %s (%s)", ", ".join(procs), type(why).__name__)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for proc in procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %g s: killed", proc.args[0], STOP_GRACE_S)
            _signal_group(proc, signal.SIGKILL)  # what is left of its group, workers included
            proc.wait()
    return {name: proc.returncode for name, proc in procs.items()}


def _signal_group(proc: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(proc.pid, sig)
