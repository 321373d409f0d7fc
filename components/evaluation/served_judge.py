"""The judge stage's own vLLM server (`judge.serve: init`).

The model.init checkpoint (an instruct model the pipeline has not trained) is served for the
length of the judge stage through the same code that serves the champion
(components/serving/vllm_server.py), on its own port and with a one-time API key, and the judge
asks it through the endpoint path like any OpenAI-compatible judge. Its replies are constrained
to a verdict (`judge.constrained`), so whether it can judge is left to its calibration.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from components.config import DeployParams, JudgeParams
from components.serving import vllm_server

SERVED_NAME = "judge"


@dataclass(frozen=True)
class JudgeEndpoint:
    cfg: JudgeParams  # endpoint and model filled in when the stage serves the judge
    api_key: str | None  # the served judge's one-time key; None: judge.api_key_env


@contextmanager
def served_judge(
    cfg: JudgeParams, deploy: DeployParams, init_dir: Path, log_path: Path
) -> Iterator[JudgeEndpoint]:
    """`cfg` as it is, or, with `judge.serve`, the checkpoint served by vLLM while the block
    runs (stopped on exit). Raises vllm_server.ServerError when the server cannot start."""
    if cfg.serve is None:
        yield JudgeEndpoint(cfg, api_key=None)
        return
    if not (init_dir / "config.json").is_file():
        raise vllm_server.ServerError(
            f"judge.serve is {cfg.serve!r} but {init_dir} holds no model (model.init is scratch "
            "or the checkpoint stage has not run)"
        )
    server_cfg = deploy.model_copy(
        update={"port": cfg.serve_port, "max_model_len": cfg.serve_max_model_len}
    )
    key = secrets.token_urlsafe(24)
    with vllm_server.running_server(
        init_dir, server_cfg, SERVED_NAME, log_path, api_key=key
    ) as server:
        served = cfg.model_copy(
            update={"endpoint": server.base_url, "model": SERVED_NAME, "constrained": True}
        )
        yield JudgeEndpoint(served, api_key=key)
