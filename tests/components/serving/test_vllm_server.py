"""vLLM serving: the command line, the load summary, and the real server on a tiny model."""

from __future__ import annotations

import importlib.util
import os
import random
import socket
import sys
import time
from pathlib import Path

import pytest

from components.config import ModelParams
from components.constants import ALIAS_CHAMPION, ENV_SERVE_PYTHON, MODEL_POLICY
from components.serving import access, client, deploy, vllm_server
from components.tracking.model_download import hf_model_dir
from components.tracking.registry import register_model_dir
from tests.helpers import project_params, stage_view

DEPLOY = project_params(deploy={"port": 8123, "dtype": "float32", "max_model_len": 128}).deploy


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


# --- server_command ------------------------------------------------------------------------


def test_server_command_serves_model_dir_on_localhost_port():
    cmd = vllm_server.server_command(
        "/models/policy", DEPLOY, "llmops-policy", python="/env/bin/python", cpu=True
    )
    assert cmd[:3] == ["/env/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(cmd, "--model") == "/models/policy"
    assert _flag(cmd, "--served-model-name") == "llmops-policy"
    assert _flag(cmd, "--host") == "127.0.0.1"
    assert _flag(cmd, "--port") == "8123"
    assert _flag(cmd, "--dtype") == "float32"
    assert _flag(cmd, "--max-model-len") == "128"


def test_cpu_gets_eager_mode_and_an_explicit_kv_cache():
    cmd = vllm_server.server_command("/m", DEPLOY, "x", python="p", cpu=True)
    assert "--enforce-eager" in cmd
    assert int(_flag(cmd, "--kv-cache-memory-bytes")) == DEPLOY.cpu_kv_cache_mib * 2**20


def test_gpu_keeps_vllm_defaults():
    cmd = vllm_server.server_command("/m", DEPLOY, "x", python="p", cpu=False)
    assert "--enforce-eager" not in cmd and "--kv-cache-memory-bytes" not in cmd


def test_gpu_command_is_bf16_with_tensor_parallelism_from_params():
    cfg = DEPLOY.model_copy(
        update={"dtype": "auto", "tensor_parallel_size": 4, "gpu_memory_utilization": 0.8}
    )
    cmd = vllm_server.server_command("/m", cfg, "x", python="p", cpu=False)
    assert _flag(cmd, "--dtype") == "bfloat16"
    assert _flag(cmd, "--tensor-parallel-size") == "4"
    assert _flag(cmd, "--gpu-memory-utilization") == "0.8"
    cuda = cfg.model_copy(update={"device": "cuda"})  # explicit device, whatever this machine has
    assert _flag(vllm_server.server_command("/m", cuda, "x", python="p"), "--dtype") == "bfloat16"


def test_cpu_command_is_fp32_on_auto_and_refuses_tensor_parallelism():
    cfg = DEPLOY.model_copy(update={"dtype": "auto"})
    cmd = vllm_server.server_command("/m", cfg, "x", python="p", cpu=True)
    assert _flag(cmd, "--dtype") == "float32" and "--tensor-parallel-size" not in cmd
    wide = cfg.model_copy(update={"tensor_parallel_size": 2})
    with pytest.raises(ValueError, match="tensor_parallel_size is 2 but vLLM runs on CPU"):
        vllm_server.server_command("/m", wide, "x", python="p", cpu=True)


def test_dtype_comes_from_params():
    cfg = DEPLOY.model_copy(update={"dtype": "bfloat16"})
    assert _flag(vllm_server.server_command("/m", cfg, "x", python="p"), "--dtype") == "bfloat16"


def test_serve_python_prefers_the_environment_variable(monkeypatch):
    monkeypatch.setenv(ENV_SERVE_PYTHON, "/opt/serve/bin/python")
    assert vllm_server.serve_python() == Path("/opt/serve/bin/python")
    monkeypatch.delenv(ENV_SERVE_PYTHON)
    assert vllm_server.serve_python().exists()


def test_a_separate_serving_env_does_not_inherit_our_pythonpath():
    env = vllm_server.server_env("/other/python", {"PYTHONPATH": "/x", "HOME": "/h"})
    assert "PYTHONPATH" not in env and env["HOME"] == "/h"
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"


def test_a_server_that_dies_raises_with_its_log(tmp_path):
    # This interpreter has no vllm: the server exits at once, and the error quotes why.
    with (
        pytest.raises(vllm_server.ServerError, match="No module named 'vllm'"),
        vllm_server.running_server(
            tmp_path,
            DEPLOY.model_copy(update={"port": _free_port()}),
            "x",
            tmp_path / "server.log",
            python=sys.executable,
        ),
    ):
        pass


# --- load summary and deploy helpers ---------------------------------------------------------


def test_percentile_interpolates():
    assert client.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert client.percentile([5.0], 95) == 5.0


def test_summary_counts_failures_and_tokens_of_successes_only():
    results = [
        client.RequestResult("chat", "p", True, 0.5, 10, "hi"),
        client.RequestResult("chat", "p", True, 1.5, 30, "ho"),
        client.RequestResult("chat", "p", False, 9.0, error="boom"),
    ]
    s = client.summarize(results)
    assert (s["n"], s["n_ok"], s["completion_tokens"]) == (3, 2, 40)
    assert s["tokens_per_s"] == 20.0 and s["latency_p50_s"] == 1.0
    assert s["sample_reply"] == "hi" and s["first_error"] == "boom"


def test_hf_dir_is_found_through_the_mlmodel_file(tmp_path):
    (tmp_path / "artifacts" / "policy").mkdir(parents=True)
    (tmp_path / "artifacts" / "policy" / "config.json").write_text("{}")
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  python_function:\n    artifacts:\n      hf_model:\n"
        "        path: artifacts/policy\n"
    )
    assert hf_model_dir(tmp_path) == tmp_path / "artifacts" / "policy"


def test_no_champion_fails_with_what_to_do(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow_client = MlflowClient()
    mlflow_client.create_registered_model(MODEL_POLICY)
    with pytest.raises(
        access.NoChampionError,
        match=f"no model holds the {ALIAS_CHAMPION} alias.*run the promote stage",
    ):
        access.champion_version(mlflow_client)


# --- the real server -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_gone(pgid: int, wait_s: float = 10.0) -> bool:
    """True once no process of the group is left (killed children linger briefly as zombies)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def _serving_python() -> Path:
    python = vllm_server.serve_python()
    here = python == Path(sys.executable)
    if not python.exists() or (here and importlib.util.find_spec("vllm") is None):
        pytest.skip("no serving environment with vLLM (`make setup` builds .venv-serve)")
    return python


def tiny_llama(out: Path, max_position_embeddings: int = 256) -> Path:
    """A random 1-layer Llama (head size 32, as the demo model) with the project's tokenizer."""
    from components.modeling.llama import build_model
    from components.tokenizer.train import train_tokenizer

    rng = random.Random(0)
    words = "the king speaks to his lords while python code opens a file under a license"
    words = words.split(" ")
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(400)]
    tokenizer = train_tokenizer([texts], vocab_size=400, min_frequency=1)
    model = build_model(
        ModelParams(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            rope_theta=10000,
            max_position_embeddings=max_position_embeddings,
        ),
        tokenizer,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.mark.timeout(600)
def test_vllm_serves_a_chat_reply_through_the_openai_client(tiny_model_dir, tmp_path):
    python = _serving_python()
    cfg = DEPLOY.model_copy(update={"port": _free_port(), "max_tokens": 8, "n_requests": 2})
    start = time.monotonic()
    with vllm_server.running_server(
        tiny_model_dir, cfg, "tiny", tmp_path / "server.log", python=python
    ) as server:
        print(f"vLLM ready after {server.startup_s:.1f} s")
        load = client.run_load(server.base_url, server.served_name, cfg.n_requests, cfg.max_tokens)
        pid = server.pid
    print(
        f"start + requests + stop: {time.monotonic() - start:.1f} s; "
        f"chat p50 {load['chat']['latency_p50_s']} s"
    )
    assert load["chat"]["n_ok"] == 2, load["chat"]["first_error"]
    assert load["chat"]["completion_tokens"] > 0
    assert load["completion"]["n_ok"] == 2 and load["completion"]["completion_tokens"] > 0
    assert _group_gone(pid), "vLLM engine/worker processes outlived the server"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_deploy_stage_serves_the_registry_champion(
    tiny_model_dir, tmp_path, monkeypatch, tasks_dir
):
    """The stage end to end: register, alias champion, deploy.run downloads, serves, reports."""
    import json
    import shutil

    from mlflow import MlflowClient

    from components.tracking.stage_run import stage_run

    _serving_python()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "policy")
    (tmp_path / "data.txt").write_text("training data")
    params = project_params(
        deploy={"port": _free_port(), "n_requests": 2, "max_tokens": 8, "eval_limit": 2}
    )
    with stage_run("align", stage_view("align", params)) as tracker:
        mv = register_model_dir(tracker, model_dir, MODEL_POLICY, data_path=tmp_path / "data.txt")
    MlflowClient().set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, mv.version)
    (tmp_path / "promote.json").write_text(json.dumps({"champion_version": int(mv.version)}))

    paths = deploy.Paths(
        promotion=tmp_path / "promote.json",
        eval_set=tasks_dir / "eval.jsonl",
        canary_prompts=tmp_path / "unused.jsonl",  # no canary: promote.json has no such verdict
        out=tmp_path / "deploy.json",
        metrics=tmp_path / "metrics.json",
    )
    with stage_run("deploy", stage_view("deploy", params)) as tracker:
        result = deploy.run(tracker.params, paths, tracker)
    print(result.metrics)
    assert result.metrics["chat_ok"] == 2 and result.metrics["model_version"] == int(mv.version)
    report = json.loads(paths.out.read_text())
    assert report["chat"]["completion_tokens"] > 0
    assert report["model"]["uri"] == f"models:/{MODEL_POLICY}/{mv.version}"
    # Evaluated as served: every bundled family scored through the endpoint.
    assert report["lm_eval"] and "lm_eval.llmops_add.acc" in result.metrics
    assert report["server"]["api_key"] == "one-time" and report["server"]["check_reply"]


# A stand-in for vLLM's server: listens on the port; its argv names the server module, as a
# real one's does (that is how a recorded pid is told apart from a reused one).
FAKE_SERVER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('up', flush=True)\n"
    "time.sleep(120)\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_left_by_a_killed_llmops_is_stopped_by_the_next(tmp_path):
    import json
    import subprocess

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", FAKE_SERVER, str(port), vllm_server.SERVER_MODULE],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert server.stdout.readline().strip() == "up"
    dead_owner = subprocess.Popen(["true"])
    dead_owner.wait()
    record = vllm_server.pid_file(port)
    try:
        # Its owner alive: not ours to stop; the port error names who holds it.
        record.write_text(json.dumps({"server_pid": server.pid, "owner_pid": server.pid}))
        assert not vllm_server.reap_stale_server(port)
        # Its owner gone (kill -9 of `llmops serve`): stopped, port freed, record removed.
        record.write_text(json.dumps({"server_pid": server.pid, "owner_pid": dead_owner.pid}))
        assert vllm_server.reap_stale_server(port, grace_s=5)
        assert server.wait(timeout=10) is not None
        assert not record.exists()
    finally:
        record.unlink(missing_ok=True)
        if server.poll() is None:
            server.kill()
