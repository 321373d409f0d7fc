"""The LiteLLM proxy in front of the champion and the challenger: weighted routing, fallback to
the champion, the API key enforced at the gateway.

The proxy runs from its own environment (`gateway_python()`: $LLMOPS_GATEWAY_PYTHON, else
`.venv-gateway`, built by `make setup`), because litellm[proxy] pins its own pydantic, fastapi
and openai. Its config is rendered from `deploy.canary` (`render_config`):

- `llmops-policy` (the served name clients use): one deployment per version, each with a
  `weight` (LiteLLM's default `simple-shuffle` routing picks a deployment in proportion to it)
  and `model_info.id` = the registry version, which LiteLLM returns as `x-litellm-model-id`;
- `llmops-policy-champion` / `llmops-policy-challenger`: each version alone, so lm-eval can
  score one version through the gateway, and the champion's group is the fallback of the
  served name (a request the challenger fails is answered by the champion:
  `x-litellm-attempted-fallbacks: 1`);
- `general_settings.master_key`: requests without it are refused. The key itself is never in
  the file: the config names environment variables (`os.environ/...`) that only the proxy's
  environment holds.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from components.config import CanaryWeights
from components.constants import ENV_GATEWAY_PYTHON, MODEL_POLICY
from components.serving.vllm_server import HOST, healthy, log_tail, port_in_use, stop

log = logging.getLogger(__name__)

Role = Literal["champion", "challenger"]
ROLES: tuple[Role, Role] = ("champion", "challenger")
PROXY_MODULE = "litellm.proxy.proxy_cli"
# Names of the variables the rendered config points at (values only in the proxy's environment).
ENV_MASTER_KEY = "LLMOPS_GATEWAY_MASTER_KEY"
ENV_UPSTREAM_KEY = "LLMOPS_GATEWAY_UPSTREAM_KEY"
GATEWAY_ENV: Mapping[str, str] = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list at start
    "LITELLM_TELEMETRY": "False",
    "DO_NOT_TRACK": "1",
}
MODEL_ID_HEADER = "x-litellm-model-id"
FALLBACKS_HEADER = "x-litellm-attempted-fallbacks"

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class GatewayError(RuntimeError):
    """The gateway did not come up; the message quotes its log."""


@dataclass(frozen=True)
class Upstream:
    """One version behind the gateway: an OpenAI-compatible server on 127.0.0.1."""

    role: Role
    version: str  # the registry version: the deployment's model_info.id
    base_url: str  # http://127.0.0.1:<port>/v1
    served_name: str = MODEL_POLICY  # the `model` the upstream serves


@dataclass(frozen=True)
class Gateway:
    base_url: str
    served_name: str
    api_key: str = field(repr=False)
    config: dict[str, Any] = field(repr=False)
    log_path: Path = Path()
    pid: int = 0

    def group(self, role: Role) -> str:
        """The model name that reaches one version only."""
        return role_group(self.served_name, role)


def gateway_python() -> Path:
    """The interpreter with litellm[proxy]: $LLMOPS_GATEWAY_PYTHON, else .venv-gateway."""
    env = os.environ.get(ENV_GATEWAY_PYTHON)
    path = Path(env) if env else _PROJECT_ROOT / ".venv-gateway" / "bin" / "python"
    if not path.exists():
        raise GatewayError(
            f"no gateway environment at {path}: run `make setup` (it builds .venv-gateway with "
            f"litellm[proxy]) or point ${ENV_GATEWAY_PYTHON} at a python that has it"
        )
    return path


def role_group(served_name: str, role: Role) -> str:
    return f"{served_name}-{role}"


def fallback_id(version: str) -> str:
    """model_info.id of the champion's deployment in its own group (ids are unique)."""
    return f"{version}-champion"


def _deployment(up: Upstream, model_id: str, weight: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": f"openai/{up.served_name}",  # LiteLLM's OpenAI-compatible provider
        "api_base": up.base_url,
        "api_key": f"os.environ/{ENV_UPSTREAM_KEY}",
    }
    if weight is not None:
        params["weight"] = weight
    return {"litellm_params": params, "model_info": {"id": model_id}}


def render_config(
    upstreams: Mapping[Role, Upstream], weights: CanaryWeights, served_name: str = MODEL_POLICY
) -> dict[str, Any]:
    """The LiteLLM proxy config (a pure function of the two versions and the weights)."""
    champ, chall = upstreams["champion"], upstreams["challenger"]
    if champ.version == chall.version:
        raise ValueError(
            f"champion and challenger are the same version ({champ.version}): there is "
            "nothing to compare; register and promote a new policy first"
        )
    alone = {"champion": fallback_id(champ.version), "challenger": f"{chall.version}-challenger"}
    model_list = [
        {"model_name": served_name, **_deployment(champ, champ.version, weights.champion)},
        {"model_name": served_name, **_deployment(chall, chall.version, weights.challenger)},
        *(
            {"model_name": role_group(served_name, role), **_deployment(up, alone[role])}
            for role, up in (("champion", champ), ("challenger", chall))
        ),
    ]
    return {
        "model_list": model_list,
        "router_settings": {
            "routing_strategy": "simple-shuffle",
            # A retry would hide the challenger's failure behind a second try of the same
            # deployment; the fallback to the champion is the only second chance.
            "num_retries": 0,
            "fallbacks": [{served_name: [role_group(served_name, "champion")]}],
        },
        "litellm_settings": {"telemetry": False, "drop_params": True},
        "general_settings": {"master_key": f"os.environ/{ENV_MASTER_KEY}"},
    }


def gateway_env(api_key: str, upstream_key: str | None, base: Mapping[str, str] | None = None):
    env = dict(os.environ if base is None else base)
    env.update(GATEWAY_ENV)
    env[ENV_MASTER_KEY] = api_key
    env[ENV_UPSTREAM_KEY] = upstream_key or "EMPTY"
    env.pop("PYTHONPATH", None)  # a separate environment: our import paths would mix pins
    env.pop("PYTHONHOME", None)
    return env


def command(config_path: Path, port: int, python: Path | None = None) -> list[str]:
    return [
        str(python or gateway_python()),
        "-m",
        PROXY_MODULE,
        "--config",
        str(config_path),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]


def _alive_url(port: int) -> str:
    return f"http://{HOST}:{port}/health/liveliness"  # LiteLLM's spelling; no key needed


def wait_ready(proc: subprocess.Popen, port: int, timeout_s: float, log_path: Path) -> float:
    start = time.monotonic()
    while not healthy(_alive_url(port)):
        if proc.poll() is not None:
            raise GatewayError(
                f"the LiteLLM gateway exited with code {proc.returncode} before it was ready; "
                f"last lines of {log_path}:\n{log_tail(log_path)}"
            )
        if time.monotonic() - start > timeout_s:
            raise GatewayError(
                f"the LiteLLM gateway is not ready after {timeout_s} s (deploy.canary."
                f"startup_timeout_s); last lines of {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(0.5)
    return time.monotonic() - start


@contextmanager
def running_gateway(
    config: dict[str, Any],
    port: int,
    api_key: str,
    upstream_key: str | None,
    workdir: Path,
    *,
    timeout_s: float = 120,
    served_name: str = MODEL_POLICY,
    python: Path | None = None,
) -> Iterator[Gateway]:
    """The LiteLLM proxy on 127.0.0.1:`port` with `config`, for the duration of the block."""
    if not api_key:
        raise ValueError("the gateway needs an API key (its master_key); none was given")
    if port_in_use(port):
        raise GatewayError(
            f"port {port} (deploy.canary.gateway_port) is already in use on {HOST}; stop the "
            "process listening there or choose another port"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    config_path, log_path = workdir / "gateway.yaml", workdir / "gateway.log"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = command(config_path, port, python)
    log.info("starting the LiteLLM gateway: %s", " ".join(cmd))
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=gateway_env(api_key, upstream_key),
            cwd=workdir,
            start_new_session=True,
        )
        try:
            waited = wait_ready(proc, port, timeout_s, log_path)
            log.info("gateway ready on port %d after %.1f s", port, waited)
            yield Gateway(
                f"http://{HOST}:{port}/v1", served_name, api_key, config, log_path, proc.pid
            )
        finally:
            stop(proc, grace_s=10)
