"""How training ranks are started: locally (one node) or across a cluster (hostfile).

The pretrain stage, the post-training stages with `posttrain.ranks` > 1 and `llmops launch
render` all use these functions, so the command a GPU work pool runs is the one tested here.
Multi-node runs use DeepSpeed's own launcher (pdsh to every host in the hostfile;
`.deepspeed_env` carries environment variables to all of them).
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from components.config import ClusterParams

WORKER_MODULE = "components.training.pretrain_worker"
POSTTRAIN_WORKER_MODULE = "components.training.posttrain_worker"
HOSTFILE = "hostfile"
DEEPSPEED_ENV = ".deepspeed_env"  # DeepSpeed's launcher exports these lines on every node

# NCCL defaults for InfiniBand/RoCE GPU nodes; each can be overridden in the node environment.
NCCL_ENV: dict[str, str] = {
    "NCCL_DEBUG": "WARN",  # INFO when debugging hangs
    "NCCL_IB_DISABLE": "0",  # use InfiniBand / RoCE when present
    "NCCL_SOCKET_IFNAME": "^lo,docker",  # bootstrap over any NIC but loopback/docker
    "NCCL_NVLS_ENABLE": "1",  # NVLink SHARP on H100 NVSwitch systems
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # a failed collective kills the job (no hang)
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",  # overlap of communication and compute
}


# DeepSpeed's CPU accelerator all-reduces through one POSIX shared-memory segment per rank,
# "deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>" (~66 MB; deepspeed/ops/csrc/cpu/comm/
# shm.cpp), and never unlinks it (its `shared_close` is never called): every CPU launch would
# leave ranks × 66 MB of RAM in /dev/shm until reboot. A day of test runs here left 18 GB, the
# machine's RAM ran out and the end-to-end test timed out (sglang's CI met the same orphaned
# buffers: sgl-project/sglang#38638). `run_ranks` removes them.
SHM_DIR = Path("/dev/shm")
SHM_BUFFER_PREFIX = "deepspeed_allreduce_buffer"


class LaunchError(ValueError):
    """The cluster description cannot be launched as given."""


class ReservedPort:
    """A free local port for a one-node launch's rendezvous, held until the ranks are done:
    `with ReservedPort() as port:` around building and running the launch.

    Picking a free port and releasing it before rank 0 binds it leaves a window in which another
    process (a parallel launch, a test server) can take it, and rank 0's TCPStore then fails with
    EADDRINUSE. So the port stays bound here, with SO_REUSEADDR and never listening: the kernel
    hands it to no other bind to port 0 and refuses a plain bind to it, while the TCPStore, which
    sets SO_REUSEADDR too, can still bind and listen (Linux allows it while only one listens).
    Retrying a launch on EADDRINUSE would need to read that from the ranks' output; torch's own
    rendezvous on port 0 exists only under torchrun, not DeepSpeed's launcher."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]

    def release(self) -> None:
        self._socket.close()

    def __enter__(self) -> int:
        return self.port

    def __exit__(self, *exc: object) -> None:
        self.release()


def hostfile_text(cluster: ClusterParams) -> str:
    """DeepSpeed hostfile: one `host slots=N` line per node."""
    if len(cluster.hosts) != cluster.nodes:
        raise LaunchError(
            f"cluster.nodes is {cluster.nodes} but cluster.hosts lists {len(cluster.hosts)} "
            "hosts: set cluster.hosts to the node names (the Terraform output `node_hostnames`)"
        )
    return "".join(f"{host} slots={cluster.ranks_per_node}\n" for host in cluster.hosts)


def deepspeed_env_text(extra: dict[str, str] | None = None) -> str:
    return "".join(f"{k}={v}\n" for k, v in {**NCCL_ENV, **(extra or {})}.items())


def worker_args(
    params_file: Path,
    data: Path,
    tokenizer: Path,
    ds_config: Path,
    checkpoints: Path,
    out: Path,
    history: Path,
    mlflow_run_id: str = "",
    init: Path | None = None,
) -> list[str]:
    """Arguments of components/training/pretrain_worker.py (see its --help); `init`: the
    checkpoint stage's directory (models/init), absent or scratch: built from `model:`."""
    return [
        "--params",
        str(params_file),
        "--data",
        str(data),
        "--tokenizer",
        str(tokenizer),
        "--ds-config",
        str(ds_config),
        "--checkpoints",
        str(checkpoints),
        "--out",
        str(out),
        "--history",
        str(history),
        "--mlflow-run-id",
        mlflow_run_id,
        *(["--init", str(init)] if init else []),
    ]


def launch_command(
    cluster: ClusterParams,
    worker_args: list[str],
    master_port: int | None = None,
    hostfile: Path | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The launcher invocation: local ranks on one node, or every host in the hostfile."""
    port = master_port or cluster.master_port
    if cluster.nodes == 1:
        return local_launch_command(
            cluster.ranks_per_node, WORKER_MODULE, worker_args, port, python
        )
    if hostfile is None:
        raise LaunchError("a multi-node launch needs a hostfile (see hostfile_text)")
    return [
        python,
        "-m",
        "deepspeed.launcher.runner",
        "--hostfile",
        str(hostfile),
        "--num_nodes",
        str(cluster.nodes),
        "--num_gpus",
        str(cluster.ranks_per_node),
        "--master_addr",
        cluster.hosts[0],
        "--master_port",
        str(port),
        "--module",
        WORKER_MODULE,
        *worker_args,
    ]


def local_launch_command(
    ranks: int, module: str, args: list[str], master_port: int, python: str = sys.executable
) -> list[str]:
    """DeepSpeed's launcher starting `ranks` processes of `module` on this node."""
    return [
        python,
        "-m",
        "deepspeed.launcher.runner",
        "--num_accelerators",
        str(ranks),
        "--master_port",
        str(master_port),
        "--module",
        module,
        *args,
    ]


def master_port_of(cmd: list[str]) -> int:
    """The rendezvous port of a command built by `launch_command` / `local_launch_command`."""
    return int(cmd[cmd.index("--master_port") + 1])


def allreduce_buffers(master_port: int) -> list[Path]:
    """This user's CPU all-reduce segments of the launch at `master_port` (any address)."""
    return sorted(SHM_DIR.glob(f"{SHM_BUFFER_PREFIX}_{os.getuid()}_*_{master_port}_*"))


def remove_allreduce_buffers(master_port: int) -> int:
    """Unlink what DeepSpeed's CPU accelerator left in /dev/shm for that launch; how many.
    Call it once the ranks are gone (a live rank keeps its mapping; the name goes at once)."""
    found = allreduce_buffers(master_port)
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)


def run_ranks(cmd: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a launcher command to its end (subprocess.run's keywords), then free the shared
    memory its CPU ranks leave behind, whether they succeeded or not."""
    try:
        return subprocess.run(cmd, env=env, **kwargs)
    finally:
        remove_allreduce_buffers(master_port_of(cmd))


def rank_env(ranks_per_node: int, on_gpu: bool) -> dict[str, str]:
    """The launcher's environment: NCCL defaults on GPUs; on CPU, DeepSpeed's CPU accelerator
    (gloo) and the cores split between the ranks."""
    env = dict(os.environ)
    if on_gpu:
        for key, value in NCCL_ENV.items():
            env.setdefault(key, value)
    else:
        env["DS_ACCELERATOR"] = "cpu"
        # One intra-op thread pool per rank, sized so ranks don't oversubscribe the cores.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // ranks_per_node)))
    return env


def render(
    cluster: ClusterParams,
    ds_config_json: str,
    worker_args: list[str],
    out: Path,
    python: str = "python",
    extra_env: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write what a multi-node run needs: hostfile, .deepspeed_env, ds_config.json, launch.sh.

    extra_env: more `.deepspeed_env` lines (e.g. EFA's libfabric settings for the cluster).
    """
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "ds_config": out / "ds_config.json",
        "launch": out / "launch.sh",
        "env": out / DEEPSPEED_ENV,
    }
    files["ds_config"].write_text(ds_config_json)
    files["env"].write_text(deepspeed_env_text(extra_env))
    hostfile = None
    if cluster.nodes > 1:
        hostfile = files["hostfile"] = out / HOSTFILE
        hostfile.write_text(hostfile_text(cluster))
    cmd = launch_command(cluster, worker_args, hostfile=hostfile, python=python)
    files["launch"].write_text(
        "#!/usr/bin/env bash\n"
        "# Rendered by `llmops launch render`; run from the project root on the first host.\n"
        "set -euo pipefail\n"
        "# DeepSpeed's launcher exports the variables in this file on every node.\n"
        f'export DS_ENV_FILE="$(cd "$(dirname "$0")" && pwd)/{DEEPSPEED_ENV}"\n'
        f"exec {shlex.join(cmd)}\n"
    )
    files["launch"].chmod(0o755)
    return files
