"""The production endpoint: variants from the registry, the API key, LoRA adapters, the answer
check and lm-eval on the live server. Fast tests build commands and resolve the registry; the
`slow` one runs a real vLLM (from the serving environment) with a key and two adapters."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.constants import (
    ALIAS_CHAMPION,
    MODEL_POLICY,
    MODEL_POLICY_INT4,
    MODEL_POLICY_INT8,
    TAG_PARENT_MODEL,
)
from components.serving import access, deploy, live_eval, vllm_server
from tests.components.serving.test_vllm_server import (
    _free_port,
    _group_gone,
    _serving_python,
    tiny_model_dir,  # noqa: F401 - the module fixture, shared
)
from tests.helpers import project_params

DEPLOY = project_params(deploy={"port": 8124, "dtype": "auto", "max_model_len": 128}).deploy


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


# --- dtype per device and variant -------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "cpu", "amx", "dtype"),
    [
        ("fp", True, False, "float32"),
        ("fp", True, True, "float32"),
        ("int8", True, False, "float32"),  # oneDNN W8A8 runs float32 activations
        ("int8", True, True, "bfloat16"),  # AMX: sgl-kernel W8A8 takes bfloat16 only
        ("int4", True, False, "bfloat16"),  # vLLM's CPU W4A16 kernel takes bfloat16 only
        ("fp", False, False, "bfloat16"),
        ("int8", False, True, "bfloat16"),
    ],
)
def test_dtype_per_device_variant_and_cpu(variant, cpu, amx, dtype):
    cfg = DEPLOY.model_copy(update={"variant": variant})
    assert vllm_server.server_dtype(cfg, cpu, amx=amx) == dtype


@pytest.mark.parametrize(("variant", "amx"), [("int4", False), ("int8", True)])
def test_a_bf16_only_cpu_kernel_refuses_an_explicit_float32(variant, amx):
    cfg = DEPLOY.model_copy(update={"variant": variant, "dtype": "float32"})
    with pytest.raises(ValueError, match=f"{variant}.*bfloat16 only"):
        vllm_server.server_dtype(cfg, cpu=True, amx=amx)


def test_the_int8_dtype_follows_this_cpu():
    import torch

    cfg = DEPLOY.model_copy(update={"variant": "int8"})
    amx = torch.cpu._is_amx_tile_supported()
    assert vllm_server.server_dtype(cfg, cpu=True) == ("bfloat16" if amx else "float32")


# --- API key -----------------------------------------------------------------------------------


def test_the_key_goes_to_the_environment_not_the_command_line():
    cmd = vllm_server.server_command("/m", DEPLOY, "x", python="p", cpu=True)
    assert "--api-key" not in cmd
    env = vllm_server.server_env("/other/python", {"VLLM_API_KEY": "stale"}, api_key="s3cret")
    assert env["VLLM_API_KEY"] == "s3cret"
    assert "VLLM_API_KEY" not in vllm_server.server_env("/other/python", {"VLLM_API_KEY": "x"})


def test_api_key_from_env_then_file_and_refused_when_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMOPS_API_KEY", raising=False)
    with pytest.raises(access.ApiKeyError, match=r"set \$LLMOPS_API_KEY"):
        access.api_key(DEPLOY, one_time_ok=False)
    one_time = access.api_key(DEPLOY, one_time_ok=True)
    assert one_time and len(one_time) >= 24 and one_time != access.api_key(DEPLOY, one_time_ok=True)
    monkeypatch.setenv("LLMOPS_API_KEY", " from-env\n")
    assert access.api_key(DEPLOY, one_time_ok=False) == "from-env"
    secret = tmp_path / "key"
    secret.write_text("from-file\n")
    cfg = DEPLOY.model_copy(update={"api_key_file": str(secret)})
    assert access.api_key(cfg, one_time_ok=False) == "from-file"
    secret.write_text("")
    with pytest.raises(access.ApiKeyError, match="missing or empty"):
        access.api_key(cfg, one_time_ok=True)
    monkeypatch.delenv("LLMOPS_API_KEY")
    dev = DEPLOY.model_copy(update={"require_api_key": False})
    assert access.api_key(dev, one_time_ok=False) is None


# --- LoRA flags --------------------------------------------------------------------------------


def test_adapters_are_served_with_enable_lora():
    assert "--enable-lora" not in vllm_server.server_command("/m", DEPLOY, "x", python="p")
    cmd = vllm_server.server_command(
        "/m", DEPLOY, "x", python="p", adapters={"a": "/ad/a", "b": Path("/ad/b")}
    )
    assert "--enable-lora" in cmd and _flag(cmd, "--max-lora-rank") == "16"
    i = cmd.index("--lora-modules")
    assert cmd[i + 1 : i + 3] == ["a=/ad/a", "b=/ad/b"]
    runtime = DEPLOY.model_copy(update={"runtime_lora": True})
    assert "--enable-lora" in vllm_server.server_command("/m", runtime, "x", python="p")
    env = vllm_server.server_env("p", {}, runtime_lora=True)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "1"


# --- variants from the registry ----------------------------------------------------------------


@pytest.fixture
def registry(tmp_path, monkeypatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return MlflowClient()


def _version(client: MlflowClient, name: str, parent: str = ""):
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    return client.create_model_version(
        name, source="file:///nowhere", tags={TAG_PARENT_MODEL: parent} if parent else None
    )


def test_variant_is_the_version_quantized_from_the_champion_else_an_error_listing_them(registry):
    # One registry for both cases: creating an MLflow SQLite store costs seconds.
    old, champion = _version(registry, MODEL_POLICY), _version(registry, MODEL_POLICY)
    registry.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, champion.version)
    _version(registry, MODEL_POLICY_INT8, f"{MODEL_POLICY}/{old.version}")
    mine = _version(registry, MODEL_POLICY_INT8, f"{MODEL_POLICY}/{champion.version}")
    _version(registry, MODEL_POLICY_INT8, f"{MODEL_POLICY}/{old.version}")
    _version(registry, MODEL_POLICY_INT4, f"{MODEL_POLICY}/{old.version}")
    champ = access.champion_version(registry)
    assert deploy.variant_version(registry, champ, "fp")[1].version == champion.version
    name, v = deploy.variant_version(registry, champ, "int8")
    assert (name, v.version) == (MODEL_POLICY_INT8, mine.version)
    assert deploy.resolve_served(None, "int8") == f"models:/{MODEL_POLICY_INT8}/{mine.version}"
    assert deploy.resolve_served("models:/x/1", "int8") == "models:/x/1"

    with pytest.raises(deploy.VariantNotFoundError) as err:  # int4 only of the old policy
        deploy.variant_version(registry, champ, "int4")
    msg = str(err.value)
    assert f"no version of '{MODEL_POLICY_INT4}' was quantized from the champion" in msg
    assert f"1 (parent {MODEL_POLICY}/{old.version})" in msg
    assert f"{mine.version} (parent {MODEL_POLICY}/{champion.version})" in msg


# --- lm-eval against the endpoint: what it builds ----------------------------------------------


def test_live_eval_expands_the_bundled_group_and_sends_the_key(tasks_dir):
    tasks, n = live_eval.task_names(("llmops", "llmops_add"), tasks_dir / "eval.jsonl")
    assert "llmops_add" in tasks and len(tasks) == len(set(tasks)) >= 3
    assert all(t.startswith("llmops_") for t in tasks) and n > 0
    args = live_eval.model_args("http://127.0.0.1:9/v1", "llmops-policy", "k")
    assert args["base_url"] == "http://127.0.0.1:9/v1/chat/completions"
    assert args["header"] == {"Authorization": "Bearer k"} and args["model"] == "llmops-policy"
    from lm_eval.models.openai_completions import LocalChatCompletion

    lm = LocalChatCompletion(**args)  # the backend accepts these arguments as they are
    assert lm.header == {"Authorization": "Bearer k"}
    metrics = live_eval.flat({"llmops_add": {"acc": 0.5, "acc_stderr": 0.1234567}})
    assert metrics == {"lm_eval.llmops_add.acc": 0.5, "lm_eval.llmops_add.acc_stderr": 0.1235}


# --- the real server ---------------------------------------------------------------------------


def _get(url: str, key: str | None = None, body: dict | None = None) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _lora_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    peft = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    peft.save_pretrained(out)
    return out


# Paths vLLM 0.32 answers without the key (its AuthenticationMiddleware guards only /v1, /v2,
# /inference and /cohere prefixes), as documented in the README's serving section.
UNGUARDED = ("/health", "/ping", "/version", "/metrics", "/load")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_endpoint_requires_the_key_serves_adapters_and_is_evaluated_live(
    tiny_model_dir,  # noqa: F811
    tmp_path,
    tasks_dir,
):
    python = _serving_python()
    model_dir = shutil.copytree(tiny_model_dir, tmp_path / "model")
    first = _lora_adapter(model_dir, tmp_path / "adapter_a", 1)
    second = _lora_adapter(model_dir, tmp_path / "adapter_b", 2)
    cfg = DEPLOY.model_copy(
        update={
            "port": _free_port(),
            "runtime_lora": True,
            "max_lora_rank": 8,
            "eval_tasks": ("llmops",),
            "eval_limit": 2,
        }
    )
    key = "test-key-123"
    root = f"http://127.0.0.1:{cfg.port}"
    start = time.monotonic()
    with vllm_server.running_server(
        model_dir, cfg, "tiny", tmp_path / "server.log", python=python,
        api_key=key, adapters={"adapter-a": first},
    ) as server:  # fmt: skip
        print(f"ready after {server.startup_s:.1f} s; check reply {server.check_reply!r}")
        assert _get(f"{root}/v1/models") == 401
        assert _get(f"{root}/v1/models", "wrong") == 401
        assert _get(f"{root}/v1/models", key) == 200
        for path in UNGUARDED:
            assert _get(f"{root}{path}") == 200, path
        completion = {"model": "adapter-a", "prompt": "the king", "max_tokens": 4}
        # Outside /v1 and so answered without the key (README: why the server stays on localhost)
        assert _get(f"{root}/tokenize", None, {"model": "tiny", "prompt": "the king"}) == 200
        assert _get(f"{root}/invocations", None, {**completion, "model": "tiny"}) == 200
        assert _get(f"{root}/v1/completions", key, completion) == 200
        load = {"lora_name": "adapter-b", "lora_path": str(second)}
        assert _get(f"{root}/v1/load_lora_adapter", None, load) == 401
        assert _get(f"{root}/v1/load_lora_adapter", key, load) == 200
        assert _get(f"{root}/v1/completions", key, {**completion, "model": "adapter-b"}) == 200
        scores = live_eval.evaluate_endpoint(server, cfg, tasks_dir / "eval.jsonl")
        pid = server.pid
    print(f"start + checks + lm-eval + stop: {time.monotonic() - start:.1f} s; {scores}")
    assert scores and all(0.0 <= m["acc"] <= 1.0 for m in scores.values())
    assert all(t.startswith("llmops_") for t in scores)
    assert _group_gone(pid), "vLLM engine/worker processes outlived the server"
