import json
import socket
import time

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from transformers import AutoModelForSequenceClassification

from components.constants import ALIAS_CHAMPION, MODEL_POLICY, REGISTRY_RECORD
from components.data.tasks import normalize_prompt, user_prompt
from components.evaluation import pairwise
from components.evaluation.eval_set import EvalSetError, read_eval_set
from components.modeling.llama import build_model
from components.registry import promote
from components.tokenizer.train import train_tokenizer
from components.tracking.stage_run import stage_run
from tests.components.training.tiny import TINY
from tests.helpers import ROOT, project_params, stage_view

PROMPTS = ROOT / "data" / "judge" / "prompts.jsonl"


def test_bundled_judge_prompts_are_valid_and_not_reward_model_tuning_prompts(tasks_dir):
    items = read_eval_set(PROMPTS, keys=pairwise.PROMPT_KEYS)
    assert len(items) >= 40 and len({ex["task"] for ex in items}) == 6
    tuning = {
        normalize_prompt(user_prompt(json.loads(line)))
        for line in (tasks_dir / "prefs_train.jsonl").read_text().splitlines()
    }
    assert not {normalize_prompt(ex["prompt"]) for ex in items} & tuning


def test_a_prompt_set_with_an_empty_field_or_a_repeated_id_names_the_line(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text(
        '{"id": "1", "task": "add", "prompt": "hi"}\n{"id": "2", "task": "add", "prompt": " "}\n'
    )
    with pytest.raises(EvalSetError, match=r"p.jsonl:2 has empty \['prompt'\]"):
        read_eval_set(bad, keys=pairwise.PROMPT_KEYS)
    bad.write_text(
        '{"id": "1", "task": "a", "prompt": "x"}\n{"id": "1", "task": "a", "prompt": "y"}\n'
    )
    with pytest.raises(EvalSetError, match=r"p.jsonl:2 repeats id '1' of line 1"):
        read_eval_set(bad, keys=pairwise.PROMPT_KEYS)


def test_position_inconsistent_verdicts_are_ties_and_win_rate_has_an_interval():
    # Shown first: A means the challenger won; shown second: B means it won.
    first = [pairwise.per_order(v, "A") for v in ["A", "A", "B", "tie", "A"]]
    second = [pairwise.per_order(v, "B") for v in ["B", "A", "A", "tie", "B"]]
    assert first == ["win", "win", "loss", "tie", "win"]
    assert second == ["win", "loss", "loss", "tie", "win"]
    cfg = project_params().judge
    s = pairwise.summarize(first, second, cfg, seed=0)
    # win, tie (A then A: position bias), loss, tie, win
    assert (s["wins"], s["ties"], s["losses"]) == (2, 2, 1)
    assert s["win_rate"] == pytest.approx((2 + 1) / 5)
    assert s["consistency"] == pytest.approx(4 / 5)
    assert 0.0 <= s["win_rate_ci_low"] < s["win_rate"] < s["win_rate_ci_high"] <= 1.0
    m = pairwise.judge_matrix(first, second)
    assert m.trace() == 4 and m.sum() == 5 and m[0, 2] == 1  # win shown first, loss second


def test_unanimous_outcomes_have_a_point_interval():
    assert pairwise.win_rate_interval(["win"] * 6, 0.95, 200, 0) == (1.0, 1.0, 1.0)


def test_a_missing_judge_metric_is_skipped_or_failed_never_passed():
    rule = project_params().promote.gates["judge_win_rate"]
    metrics = {"judge.available": 0, "judge.error": "down"}
    assert promote.check_gate("j", "judge_win_rate", rule, 0.0, metrics, None).status == "skip"
    strict = rule.model_copy(update={"if_missing": "fail"})
    assert promote.check_gate("j", "judge_win_rate", strict, 0.0, metrics, None).status == "fail"
    low = promote.check_gate("j", "judge_win_rate", rule, 0.0, {"judge_win_rate": 0.4}, None)
    assert low.status == "fail"


def test_parse_verdict_reads_the_first_word_and_defaults_to_tie():
    assert [
        pairwise.parse_verdict(t) for t in ("A", " b.", "**A** is better", "tie", "C", None)
    ] == [
        "A",
        "B",
        "A",
        "tie",
        "tie",
        "tie",
    ]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_judge_endpoint_that_is_down_raises_judge_unavailable_quickly():
    cfg = project_params(
        judge={"endpoint": f"http://127.0.0.1:{_closed_port()}/v1", "model": "m", "timeout_s": 2.0}
    ).judge
    judge = pairwise.EndpointJudge(cfg)
    start = time.monotonic()
    with pytest.raises(pairwise.JudgeUnavailable, match="did not answer.*judge.endpoint"):
        judge.judge(["What is 1 + 1?"], ["2"], ["3"])
    assert time.monotonic() - start < 20


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A tiny policy (also the SFT model) and a reward model on the same tokenizer."""
    texts = [f"What is {i} + {i % 9}? It is {i + i % 9}. Reverse: ab{i}" for i in range(300)]
    tokenizer = train_tokenizer([texts], vocab_size=400, min_frequency=1)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    policy, reward = root / "policy", root / "reward"
    build_model(TINY, tokenizer).save_pretrained(policy)
    tokenizer.save_pretrained(policy)
    rm = AutoModelForSequenceClassification.from_pretrained(
        policy, num_labels=1, pad_token_id=tokenizer.pad_token_id
    )
    rm.save_pretrained(reward)
    tokenizer.save_pretrained(reward)
    return policy, reward


def _policy_version(policy, version: str) -> None:
    (policy / REGISTRY_RECORD).write_text(json.dumps({"name": MODEL_POLICY, "version": version}))


def _run(tmp_path, policy, reward, **judge):
    params = project_params(judge={"max_prompts": 6, "max_new_tokens": 4, **judge})
    paths = pairwise.Paths(
        policy=policy,
        sft=policy,
        reward=reward,
        prompts=PROMPTS,
        verdicts=tmp_path / "judge.jsonl",
        plot=tmp_path / "judge.png",
        metrics=tmp_path / "judge.json",
    )
    with stage_run("judge", stage_view("judge", params)) as tracker:
        return pairwise.run(tracker.params, paths, tracker).metrics


@pytest.mark.slow  # loads TRL and three tiny models: ~25 s on a shared CPU
def test_reward_model_judge_vs_sft_on_a_first_run_writes_no_gated_key(dirs, tmp_path):
    policy, reward = dirs
    _policy_version(policy, "1")
    m = _run(tmp_path, policy, reward)
    assert m["judge.baseline"] == "sft" and "no champion" in m["judge.baseline_reason"]
    assert m["judge.judge"] == "reward_model" and m["judge.available"] == 1
    # Same weights on both sides: every reward ties, and the reward model is order-blind.
    assert (m["judge.ties"], m["judge.n_pairs"], m["judge.consistency"]) == (6, 6, 1.0)
    assert m["judge.win_rate"] == 0.5
    assert "judge_win_rate" not in m  # the gate is about the champion: skipped, not passed
    rows = [json.loads(line) for line in (tmp_path / "judge.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["outcome"] for r in rows} == {"tie"}
    assert (tmp_path / "judge.png").stat().st_size > 0


@pytest.mark.slow  # two tiny models generate: ~15 s on a shared CPU
def test_a_down_endpoint_reports_the_judge_missing_and_the_gate_never_passes(dirs, tmp_path):
    policy, reward = dirs
    _policy_version(policy, "1")
    m = _run(tmp_path, policy, reward, endpoint=f"http://127.0.0.1:{_closed_port()}/v1",
             model="judge", timeout_s=2.0)  # fmt: skip
    assert m["judge.available"] == 0 and "did not answer" in m["judge.error"]
    assert not any(k.startswith("judge_") for k in m)
    gates = project_params().promote
    rule = gates.gates["judge_win_rate"]
    result = promote.check_gate("judge_win_rate", "judge_win_rate", rule, 0.0, m, None)
    assert result.status == "skip"
    strict = rule.model_copy(update={"if_missing": "fail"})
    assert promote.check_gate("j", "judge_win_rate", strict, 0.0, m, None).status == "fail"


def _register(client, n: int) -> str:
    mlflow.set_experiment("judge-test")  # this test's store, not a cached experiment id
    if n == 1:
        client.create_registered_model(MODEL_POLICY)
    with mlflow.start_run() as run:
        mlflow.log_dict({"n": n}, "model/info.json")
    return client.create_model_version(
        MODEL_POLICY, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    ).version


def test_the_baseline_is_the_champion_unless_it_is_the_challenger(tmp_path):
    client = MlflowClient()
    policy = tmp_path / "policy"
    policy.mkdir()
    v1, v2 = _register(client, 1), _register(client, 2)
    _policy_version(policy, v2)
    assert pairwise.choose_baseline(client, policy).label == "sft"  # no champion yet
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, v1)
    b = pairwise.choose_baseline(client, policy)
    assert (b.label, b.version) == ("champion", str(v1))
    client.set_registered_model_alias(MODEL_POLICY, ALIAS_CHAMPION, v2)
    b = pairwise.choose_baseline(client, policy)
    assert b.label == "sft" and "already is champion" in b.reason
