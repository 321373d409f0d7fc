"""`llmops launch render --from-terraform`: a recorded-format Terraform output to a launch that
DeepSpeed's own hostfile parser, argument parser and pdsh runner accept."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from deepspeed.launcher.multinode_runner import PDSHRunner
from deepspeed.launcher.runner import (
    encode_world_info,
    fetch_hostfile,
    parse_inclusion_exclusion,
)
from deepspeed.launcher.runner import parse_args as parse_launcher_args

from components.training.terraform_output import TerraformOutputError
from flows import cluster_launch
from flows.cli import main
from flows.params_overlay import preview_params
from tests.helpers import ROOT

SAMPLE = ROOT / "tests" / "fixtures" / "terraform" / "output-2x8.json"
HOSTS = ["ip-10-42-0-12.ec2.internal", "ip-10-42-0-85.ec2.internal"]


def render(tmp_path: Path, monkeypatch, *extra: str, source: Path = SAMPLE) -> Path:
    monkeypatch.chdir(ROOT)  # the CLI reads params.yaml and dvc.yaml from the project root
    out = tmp_path / "launch"
    main(["launch", "render", "--from-terraform", str(source), "--out", str(out), *extra])
    return out


def test_render_from_terraform_feeds_deepspeeds_parsers(tmp_path, monkeypatch):
    out = render(tmp_path, monkeypatch, "--skip-service-check")

    resources = fetch_hostfile(str(out / "hostfile"))
    assert dict(resources) == dict.fromkeys(HOSTS, 8)

    script = (out / "launch.sh").read_text().splitlines()
    args = parse_launcher_args(shlex.split(script[-1].removeprefix("exec "))[3:])
    assert (args.num_nodes, args.num_gpus, args.master_addr) == (2, 8, HOSTS[0])

    # DeepSpeed's pdsh runner, fed as runner.main feeds it: hosts and every env line exported.
    active = parse_inclusion_exclusion(resources, "", "")
    runner = PDSHRunner(args, encode_world_info(active))
    for line in (out / ".deepspeed_env").read_text().splitlines():
        key, value = line.split("=", maxsplit=1)
        runner.add_export(key, value)
    cmd, _, _ = runner.get_cmd({}, active)
    assert cmd[cmd.index("-w") + 1] == ",".join(HOSTS)
    exports = cmd[cmd.index("-w") + 2]
    for setting in ["FI_PROVIDER=efa", "FI_EFA_USE_DEVICE_RDMA=1", "NCCL_IB_DISABLE=0"]:
        assert f"export {setting};" in exports

    ds = json.loads((out / "ds_config.json").read_text())
    assert ds["train_batch_size"] == 4 * 8 * 16 and ds["gradient_accumulation_steps"] == 8


def test_render_writes_overlay_prefect_params_services_and_dvc_remote(tmp_path, monkeypatch):
    out = render(tmp_path, monkeypatch, "--skip-service-check")

    overlay = yaml.safe_load((out / "cluster-params.yaml").read_text())
    assert overlay["cluster"] == {"nodes": 2, "ranks_per_node": 8, "hosts": HOSTS}
    ranks_params = yaml.safe_load((out / "params.yaml").read_text())
    assert ranks_params["cluster"]["hosts"] == HOSTS  # what the ranks read agrees

    # prefect-params.json is the flow's `overrides`; the cluster profile accepts it.
    overrides = json.loads((out / "prefect-params.json").read_text())["overrides"]
    fitted = preview_params(ROOT / "params.yaml", "cluster", overrides)
    assert fitted.cluster.hosts == tuple(HOSTS) and fitted.cluster.nodes == 2

    env = (out / "cluster.env").read_text()
    assert "export MLFLOW_TRACKING_URI=http://10.42.0.37:5000\n" in env
    assert "export PREFECT_API_URL=http://10.42.0.37:4200/api\n" in env


def test_dvc_remote_script_configures_dvc(tmp_path, monkeypatch):
    out = render(tmp_path, monkeypatch, "--skip-service-check")
    project = tmp_path / "project"
    project.mkdir()
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "--no-scm", "-q"], cwd=project, check=True)
    env = {"PATH": f"{Path(dvc).parent}:/usr/bin:/bin"}
    subprocess.run(["bash", str(out / "dvc-remote.sh")], cwd=project, check=True, env=env)
    listed = subprocess.run(
        [dvc, "remote", "list"], cwd=project, check=True, capture_output=True, text=True
    ).stdout
    assert listed.split()[:3] == ["cluster", "s3://llmops-dvc-123456789012/dvc", "(default)"]
    assert "remote = cluster" in (project / ".dvc" / "config.local").read_text()


def _with_services(tmp_path: Path, mlflow: str, prefect: str) -> Path:
    doc = json.loads(SAMPLE.read_text())
    doc["mlflow_tracking_uri"]["value"] = mlflow
    doc["prefect_api_url"]["value"] = prefect
    path = tmp_path / "out.json"
    path.write_text(json.dumps(doc))
    return path


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        ok = self.path in ("/health", "/api/health")
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"OK" if ok else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def loopback_services():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_answering_services_pass_the_check(tmp_path, monkeypatch, loopback_services):
    source = _with_services(tmp_path, loopback_services, f"{loopback_services}/api")
    out = render(tmp_path, monkeypatch, source=source)
    assert f"MLFLOW_TRACKING_URI={loopback_services}\n" in (out / "cluster.env").read_text()


def test_unreachable_tracking_uri_is_a_clear_error(tmp_path, monkeypatch, loopback_services):
    closed = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    source = _with_services(tmp_path, closed, f"{loopback_services}/api")
    with pytest.raises(SystemExit, match="MLflow tracking URI does not answer .*127.0.0.1:9"):
        render(tmp_path, monkeypatch, source=source)
    with pytest.raises(TerraformOutputError, match="--skip-service-check"):
        cluster_launch.check_services(cluster_launch.read_outputs(source), timeout_s=2)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist: write it with `terraform"),
        ("not json", "is not JSON"),
        ("[]", "holds a list"),
        ('{"node_count": {"value": 2}}', "lacks node_hostnames"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, monkeypatch, content, message):
    source = tmp_path / "out.json"
    if content is not None:
        source.write_text(content)
    with pytest.raises(SystemExit, match=message):
        render(tmp_path, monkeypatch, "--skip-service-check", source=source)
