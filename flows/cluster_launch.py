"""`llmops launch render --from-terraform out.json`: from `terraform apply` to a launch.

Reads the Terraform outputs (components/training/terraform_output.py checks them), makes sure
MLflow and Prefect answer, and writes what the cluster run needs besides the hostfile and
`.deepspeed_env` (those come from components/training/launch.render): the `cluster:` params
overlay, the Prefect run parameters, the service URIs and the DVC remote.
"""

from __future__ import annotations

import json
import shlex
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from components.training import terraform_output as tf
from flows.params_overlay import preview_params

DVC_REMOTE_NAME = "cluster"
# Health endpoints: MLflow's tracking server and Prefect's API (PREFECT_API_URL ends in /api).
MLFLOW_HEALTH = "/health"
PREFECT_HEALTH = "/health"


@dataclass(frozen=True)
class ClusterLaunch:
    source: Path
    outputs: tf.ClusterOutputs
    overrides: dict[str, str]  # params `key=value` (YAML scalars), as the flow's `overrides`

    @property
    def env(self) -> dict[str, str]:
        return tf.efa_env(self.outputs)

    def write(self, out: Path) -> dict[str, Path]:
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "overlay": out / "cluster-params.yaml",
            "prefect": out / "prefect-params.json",
            "services": out / "cluster.env",
            "dvc": out / "dvc-remote.sh",
        }
        files["overlay"].write_text(self._overlay_text())
        files["prefect"].write_text(json.dumps({"overrides": self.overrides}, indent=2) + "\n")
        files["services"].write_text(
            f"# Rendered from {self.source}: source it before `prefect` or `llmops` commands.\n"
            f"export MLFLOW_TRACKING_URI={shlex.quote(self.outputs.mlflow_tracking_uri)}\n"
            f"export PREFECT_API_URL={shlex.quote(self.outputs.prefect_api_url)}\n"
        )
        files["dvc"].write_text(
            "#!/usr/bin/env bash\n"
            f"# Rendered from {self.source}: make the cluster's bucket this checkout's default\n"
            "# DVC remote (.dvc/config.local, not committed).\n"
            "set -euo pipefail\n"
            f"dvc remote add --local --default --force {DVC_REMOTE_NAME} "
            f"{shlex.quote(self.outputs.dvc_remote_url)}\n"
        )
        files["dvc"].chmod(0o755)
        return files

    def _overlay_text(self) -> str:
        nested: dict[str, dict[str, object]] = {}
        for key, value in self.overrides.items():
            section, _, leaf = key.partition(".")
            nested.setdefault(section, {})[leaf] = yaml.safe_load(value)
        header = (
            f"# Rendered from {self.source}: the `cluster` profile fitted to the provisioned\n"
            "# nodes. The pretrain-cluster run gets the same values (prefect-params.json).\n"
        )
        return header + yaml.safe_dump(nested, sort_keys=False)


def read_outputs(path: Path) -> tf.ClusterOutputs:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise tf.TerraformOutputError(
            f"{path} does not exist: write it with "
            f"`terraform -chdir=infra/terraform/aws output -json > {path}`"
        ) from None
    except json.JSONDecodeError as err:
        raise tf.TerraformOutputError(
            f"{path} is not JSON ({err}): write it with `terraform output -json`"
        ) from None
    if not isinstance(doc, dict):
        raise tf.TerraformOutputError(f"{path} holds a {type(doc).__name__}, not the outputs map")
    return tf.parse(doc)


def unreachable(url: str, timeout_s: float) -> str | None:
    """Why `url` does not answer 2xx, or None when it does."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http(s) only, checked by parse
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return str(getattr(err, "reason", err))


def check_services(outputs: tf.ClusterOutputs, timeout_s: float = 5.0) -> None:
    checks = {
        "MLflow tracking URI": outputs.mlflow_tracking_uri + MLFLOW_HEALTH,
        "Prefect API URL": outputs.prefect_api_url + PREFECT_HEALTH,
    }
    for name, url in checks.items():
        reason = unreachable(url, timeout_s)
        if reason:
            raise tf.TerraformOutputError(
                f"the {name} does not answer ({url}: {reason}). The services listen inside the "
                "VPC only: render on a cluster node or over the VPN, wait for the services host "
                "to finish booting (a few minutes after apply), or pass --skip-service-check "
                "to render anyway"
            )


def from_terraform(
    path: Path, params_file: Path, profile: str, *, check: bool = True
) -> ClusterLaunch:
    """The cluster's launch inputs; raises TerraformOutputError (a LaunchError) on bad input."""
    outputs = read_outputs(path)
    if check:
        check_services(outputs)
    overrides = tf.params_overrides(outputs, preview_params(params_file, profile))
    return ClusterLaunch(source=path, outputs=outputs, overrides=overrides)
