"""`judge.serve: init`: the judge stage's own vLLM server, asked through the endpoint path."""

import socket

import pytest

from components.evaluation import pairwise
from components.evaluation.calibration import calibrate, calibration_pairs
from components.evaluation.eval_set import read_eval_set
from components.evaluation.served_judge import served_judge
from components.serving.client import make_client
from tests.components.serving.test_vllm_server import tiny_llama
from tests.helpers import project_params


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # one vLLM server on the CPU: ~40-90 s on 2 shared cores
def test_the_served_judge_always_answers_a_verdict_and_requires_its_key(tmp_path, tasks_dir):
    # The judge reads a prompt and two answers: more context than the serving tests' model.
    model_dir = tiny_llama(tmp_path / "judge_model", max_position_embeddings=2048)
    params = project_params(
        model={"init": str(model_dir)},
        judge={"serve": "init", "serve_port": _free_port(), "serve_max_model_len": 2048},
    )
    pairs = calibration_pairs(read_eval_set(tasks_dir / "eval.jsonl"), 4, seed=0)
    with served_judge(params.judge, params.deploy, model_dir, tmp_path / "j.log") as served:
        assert served.cfg.constrained and served.api_key
        judge = pairwise.EndpointJudge(served.cfg, served.api_key)
        result = calibrate(judge, pairs)
        # A random 1-layer model, free to answer, says anything; constrained, it names a verdict.
        assert result.metrics()["invalid_rate"] == 0.0 and result.metrics()["n_pairs"] == 4
        keyless = make_client(served.cfg.endpoint, api_key="wrong")
        with pytest.raises(Exception, match="401"):
            keyless.models.list()
