"""What a provisioned cluster looks like, read from `terraform output -json` (infra/terraform/aws).

Pure: a dict in, a checked, typed `ClusterOutputs` out, and the params overrides a launch on it
needs. Lives beside launch.py because its results feed the hostfile, `.deepspeed_env` and the
`cluster:` params; the file reading, service checks and file writing are the CLI's
(flows/cluster_launch.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.config import Params
from components.training.launch import LaunchError

# Root outputs of infra/terraform/aws/outputs.tf that a launch needs (a test checks they exist).
REQUIRED_OUTPUTS: tuple[str, ...] = (
    "node_count",
    "node_hostnames",
    "node_private_ips",
    "gpus_per_node",
    "efa_interfaces_per_node",
    "dvc_bucket",
    "mlflow_tracking_uri",
    "prefect_api_url",
)

DVC_REMOTE_PREFIX = "dvc"  # s3://<dvc_bucket>/dvc, so the bucket can hold other prefixes later

# Libfabric settings for NCCL over EFA (AWS's aws-ofi-nccl plugin is in the training image).
EFA_ENV: dict[str, str] = {
    "FI_PROVIDER": "efa",  # never fall back to TCP sockets silently
    "FI_EFA_USE_DEVICE_RDMA": "1",  # GPUDirect RDMA on p4d/p5
    "RDMAV_FORK_SAFE": "1",  # data loader workers fork after EFA memory is registered
}


class TerraformOutputError(LaunchError):
    """The Terraform output cannot describe a launchable cluster."""


@dataclass(frozen=True)
class ClusterOutputs:
    hostnames: tuple[str, ...]  # node 0 first: the DeepSpeed master and the Prefect worker
    private_ips: tuple[str, ...]
    gpus_per_node: int
    efa_interfaces: int
    dvc_remote_url: str
    mlflow_tracking_uri: str
    prefect_api_url: str

    @property
    def nodes(self) -> int:
        return len(self.hostnames)


def _values(doc: Mapping[str, Any]) -> dict[str, Any]:
    """`terraform output -json` wraps each output as {"value", "type", "sensitive"}."""
    missing = [key for key in REQUIRED_OUTPUTS if key not in doc]
    if missing:
        raise TerraformOutputError(
            f"the Terraform output lacks {', '.join(missing)}: write it with "
            "`terraform -chdir=infra/terraform/aws output -json > out.json` after `terraform "
            "apply` of that root module (an older state or another module lacks these outputs)"
        )
    values = {}
    for key in REQUIRED_OUTPUTS:
        entry = doc[key]
        if not isinstance(entry, Mapping) or "value" not in entry:
            raise TerraformOutputError(
                f"output {key!r} is {entry!r}, not {{'value': ...}}: pass the JSON of "
                "`terraform output -json` (all outputs), not of `terraform output -json NAME`"
            )
        values[key] = entry["value"]
    return values


def _count(values: dict[str, Any], key: str, minimum: int) -> int:
    value = values[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TerraformOutputError(
            f"output {key} is {value!r}; expected a whole number >= {minimum}"
        )
    return value


def _names(values: dict[str, Any], key: str) -> tuple[str, ...]:
    value = values[key]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise TerraformOutputError(f"output {key} is {value!r}; expected a list of names")
    return tuple(value)


def _url(values: dict[str, Any], key: str) -> str:
    value = values[key]
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise TerraformOutputError(f"output {key} is {value!r}; expected an http(s) URL")
    return value.rstrip("/")


def parse(doc: Mapping[str, Any]) -> ClusterOutputs:
    """Check a `terraform output -json` document and keep what a launch needs."""
    values = _values(doc)
    node_count = _count(values, "node_count", 1)
    hostnames = _names(values, "node_hostnames")
    private_ips = _names(values, "node_private_ips")
    if not node_count == len(hostnames) == len(private_ips):
        raise TerraformOutputError(
            f"node_count is {node_count} but Terraform lists {len(hostnames)} hostnames and "
            f"{len(private_ips)} private IPs: the hostfile would not match the cluster. Re-run "
            "`terraform apply` until every node exists, then export the outputs again"
        )
    if len(set(hostnames)) != len(hostnames):
        raise TerraformOutputError(f"node_hostnames repeats a host: {list(hostnames)}")
    bucket = values["dvc_bucket"]
    if not isinstance(bucket, str) or not bucket:
        raise TerraformOutputError(f"output dvc_bucket is {bucket!r}; expected a bucket name")
    return ClusterOutputs(
        hostnames=hostnames,
        private_ips=private_ips,
        gpus_per_node=_count(values, "gpus_per_node", 1),
        efa_interfaces=_count(values, "efa_interfaces_per_node", 0),
        dvc_remote_url=f"s3://{bucket}/{DVC_REMOTE_PREFIX}",
        mlflow_tracking_uri=_url(values, "mlflow_tracking_uri"),
        prefect_api_url=_url(values, "prefect_api_url"),
    )


def efa_env(outputs: ClusterOutputs) -> dict[str, str]:
    """Extra `.deepspeed_env` lines for this cluster (on top of launch.NCCL_ENV)."""
    return dict(EFA_ENV) if outputs.efa_interfaces > 0 else {}


def params_overrides(outputs: ClusterOutputs, profile_params: Params) -> dict[str, str]:
    """`key=value` overrides (YAML scalars) that fit the profile's run to this cluster.

    The profile's global batch (micro × accumulation × ranks) is what its learning rate and
    schedule were tuned for, so it is kept: gradient accumulation absorbs a different rank
    count, and a rank count that cannot divide the batch is an error, not a silent change.
    """
    pre, cluster = profile_params.pretrain, profile_params.cluster
    global_batch = pre.micro_batch_size * pre.grad_accum_steps * cluster.world_size
    ranks = outputs.nodes * outputs.gpus_per_node
    per_step = pre.micro_batch_size * ranks
    if global_batch % per_step:
        raise TerraformOutputError(
            f"{outputs.nodes} nodes × {outputs.gpus_per_node} GPUs = {ranks} ranks × micro "
            f"batch {pre.micro_batch_size} = {per_step} sequences per micro-step, which does "
            f"not divide the profile's global batch of {global_batch} (micro "
            f"{pre.micro_batch_size} × accumulation {pre.grad_accum_steps} × "
            f"{cluster.world_size} ranks). Change node_count in Terraform, or set "
            "pretrain.micro_batch_size / pretrain.grad_accum_steps with --set"
        )
    return {
        "cluster.nodes": str(outputs.nodes),
        "cluster.ranks_per_node": str(outputs.gpus_per_node),
        "cluster.hosts": json.dumps(list(outputs.hostnames)),  # JSON is a YAML flow list
        "pretrain.grad_accum_steps": str(global_batch // per_step),
        # Post-training runs on one node: as many ranks as it has GPUs.
        "posttrain.ranks": str(outputs.gpus_per_node),
    }
