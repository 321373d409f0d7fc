"""Local Prefect and MLflow UI servers for people who want to look (`llmops ui`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from components.tracking import mlflow_env


def run_ui_servers(prefect_port: int = 4200, mlflow_port: int = 5000) -> None:
    """Start both servers in the foreground; Ctrl-C stops both.

    Point the pipeline at them with PREFECT_API_URL=http://127.0.0.1:4200/api (flows then show
    up in the Prefect UI); MLflow's UI reads the same embedded SQLite store the stages write.
    """
    bin_dir = Path(sys.executable).parent
    uri = mlflow_env.tracking_uri()
    mlflow_env.configure()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    procs = [
        subprocess.Popen(
            [
                str(bin_dir / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(prefect_port),
            ],
            env=env,
        ),
        subprocess.Popen(
            [
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
            env=env,
        ),
    ]
    print(
        f"Prefect UI: http://127.0.0.1:{prefect_port}   MLflow UI: http://127.0.0.1:{mlflow_port}"
    )
    print(f"Run flows against it: PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api llmops run")
    try:
        for p in procs:
            p.wait()
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait(timeout=30)
