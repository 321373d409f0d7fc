import json
import os
import shlex
import sys
from pathlib import Path

import pytest
from deepspeed.launcher.runner import fetch_hostfile
from deepspeed.launcher.runner import parse_args as parse_launcher_args

from components.config import ClusterParams
from components.training import launch
from components.training.ds_config import deepspeed_config
from flows.params_overlay import preview_params
from tests.helpers import ROOT

HOSTS = ("gpu-node-0", "gpu-node-1")


@pytest.fixture
def cluster_params():
    """The `cluster` profile (2 nodes × 8 GPUs) with its hosts filled in, as Terraform would."""
    return preview_params(
        ROOT / "params.yaml", "cluster", {"cluster.hosts": json.dumps(list(HOSTS))}
    )


def worker(tmp_path: Path) -> list[str]:
    return launch.worker_args(
        params_file=Path("params.yaml"),
        data=Path("data/packed"),
        tokenizer=Path("models/tokenizer"),
        ds_config=tmp_path / "ds.json",
        checkpoints=Path("checkpoints/pretrain"),
        out=Path("models/base"),
        history=Path("checkpoints/pretrain/history.jsonl"),
    )


def test_render_2x8_hostfile_command_and_batch_arithmetic(cluster_params, tmp_path):
    cluster, pre = cluster_params.cluster, cluster_params.pretrain
    assert (cluster.nodes, cluster.ranks_per_node, cluster.world_size) == (2, 8, 16)
    ds = deepspeed_config(pre, cluster.world_size, "cuda", zero_stage=3)
    files = launch.render(cluster, json.dumps(ds), worker(tmp_path), tmp_path / "out")

    # DeepSpeed's own parser reads our hostfile as 8 slots on each of the two nodes.
    resources = fetch_hostfile(str(files["hostfile"]))
    assert dict(resources) == {"gpu-node-0": 8, "gpu-node-1": 8}

    script = files["launch"].read_text().splitlines()
    cmd = shlex.split(script[-1].removeprefix("exec "))
    assert cmd[1:3] == ["-m", "deepspeed.launcher.runner"]
    parsed = parse_launcher_args(cmd[3:])
    assert parsed.hostfile == str(files["hostfile"])
    assert (parsed.num_nodes, parsed.num_gpus) == (2, 8)
    assert parsed.master_addr == "gpu-node-0" and parsed.master_port == 29500
    assert parsed.module and parsed.user_script == launch.WORKER_MODULE
    assert any("DS_ENV_FILE" in line for line in script)

    rendered = json.loads(files["ds_config"].read_text())
    assert (
        rendered["train_batch_size"]
        == (pre.micro_batch_size * pre.grad_accum_steps * cluster.world_size)
        == 4 * 8 * 16
    )
    assert rendered["bf16"]["enabled"] is True
    assert rendered["zero_optimization"]["stage"] == 3

    env = dict(line.split("=", 1) for line in files["env"].read_text().splitlines())
    assert env["NCCL_IB_DISABLE"] == "0" and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


def test_multi_node_without_hosts_is_a_clear_error(tmp_path):
    cluster = preview_params(ROOT / "params.yaml", "cluster").cluster
    with pytest.raises(launch.LaunchError, match="cluster.hosts"):
        launch.render(cluster, "{}", worker(tmp_path), tmp_path)


def test_hosts_must_match_nodes():
    with pytest.raises(ValueError, match="lists 1 hosts but cluster.nodes is 2"):
        ClusterParams(
            nodes=2,
            ranks_per_node=8,
            hosts=("a",),
            accelerator_memory_gb=80,
            cpu_memory_gb=100,
            peak_tflops=1,
            assumed_mfu=0.4,
        )


def test_single_node_uses_local_ranks_and_cpu_env(tmp_path):
    cluster = preview_params(ROOT / "params.yaml").cluster
    cmd = launch.launch_command(cluster, worker(tmp_path), master_port=1234)
    parsed = parse_launcher_args(cmd[3:])
    assert parsed.num_gpus == 2 and parsed.master_port == 1234  # --num_accelerators alias
    assert parsed.num_nodes == -1  # no hostfile: local ranks only
    env = launch.rank_env(cluster.ranks_per_node, on_gpu=False)
    assert env["DS_ACCELERATOR"] == "cpu" and "NCCL_IB_DISABLE" not in env


def test_offload_sections_only_on_gpus():
    params = preview_params(
        ROOT / "params.yaml", overrides={"pretrain.offload": "optimizer_and_params"}
    )
    gpu = deepspeed_config(params.pretrain, 8, "cuda", zero_stage=3)["zero_optimization"]
    cpu = deepspeed_config(params.pretrain, 2, "cpu", zero_stage=3)["zero_optimization"]
    assert gpu["offload_optimizer"]["device"] == "cpu" and gpu["offload_param"]["device"] == "cpu"
    assert "offload_optimizer" not in cpu and "offload_param" not in cpu


def test_param_offload_needs_zero3():
    from components.config import ParamsError

    with pytest.raises(ParamsError, match="needs pretrain.zero_stage 3"):
        preview_params(
            ROOT / "params.yaml",
            overrides={"pretrain.offload": "optimizer_and_params", "pretrain.zero_stage": "2"},
        )


def test_run_ranks_frees_the_cpu_allreduce_segments_of_its_launch_even_when_it_fails(
    tmp_path, monkeypatch
):
    """DeepSpeed's CPU accelerator never unlinks its per-rank shared-memory segments; the
    launch removes those of its own port and no other's (another run may still use them)."""
    monkeypatch.setattr(launch, "SHM_DIR", tmp_path)
    uid = os.getuid()
    ours = [tmp_path / f"deepspeed_allreduce_buffer_{uid}_127.0.0.1_4242_{r}" for r in (0, 1)]
    other = tmp_path / f"deepspeed_allreduce_buffer_{uid}_127.0.0.1_4243_0"
    for path in [*ours, other]:
        path.write_bytes(b"x")
    cmd = [sys.executable, "-c", "import sys; sys.exit(3)", "--master_port", "4242"]
    assert launch.master_port_of(cmd) == 4242
    assert launch.run_ranks(cmd, dict(os.environ)).returncode == 3
    assert not any(p.exists() for p in ours)
    assert other.exists()


def test_a_reserved_port_is_nobody_elses_until_released_but_rank_0_can_serve_on_it():
    import errno
    import socket
    from datetime import timedelta

    import torch.distributed as dist

    with launch.ReservedPort() as port:
        with socket.socket() as other, pytest.raises(OSError) as refused:
            other.bind(("127.0.0.1", port))  # another process picking the same port
        assert refused.value.errno == errno.EADDRINUSE
        # What rank 0 does with MASTER_PORT: a TCPStore listening on it, which others reach.
        store = dist.TCPStore("127.0.0.1", port, 1, True, timeout=timedelta(seconds=10))
        store.set("rendezvous", "ok")
        client = dist.TCPStore("127.0.0.1", port, 1, False, timeout=timedelta(seconds=10))
        assert client.get("rendezvous") == b"ok"
        del client, store
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))  # released
