import json
import socket
import time

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from transformers import AutoModelForSequenceClassification

from components.config import ParamsError
from components.constants import ALIAS_CHAMPION, MODEL_POLICY, REGISTRY_RECORD
from components.data.tasks import normalize_prompt, user_prompts
from components.evaluation import pairwise
from components.evaluation.answer_check import is_correct
from components.evaluation.calibration import (
    CalibrationSetError,
    calibrate,
    calibration_pairs,
)
from components.evaluation.eval_set import EvalSetError, read_eval_set
from components.evaluation.verdicts import parse_verdict, per_order
from components.modeling.llama import build_model
from components.registry import promote
from components.tokenizer.train import train_tokenizer
from components.tracking.stage_run import stage_run
from tests.components.evaluation.judge_server import judge_endpoint
from tests.components.training.tiny import TINY
from tests.helpers import ROOT, project_params, stage_view

PROMPTS = ROOT / "data" / "judge" / "prompts.jsonl"


def test_bundled_judge_prompts_are_valid_and_not_reward_model_tuning_prompts(tasks_dir):
    items = read_eval_set(PROMPTS, keys=pairwise.PROMPT_KEYS)
    assert len(items) >= 40 and len({ex["task"] for ex in items}) == 6
    tuning = {
        normalize_prompt(user_prompts(json.loads(line))[0])
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


def test_inconsistent_and_invalid_pairs_are_reported_apart_from_ties():
    # Shown first: A means the challenger won; shown second: B means it won.
    first = [per_order(v, "A") for v in ["A", "A", "B", "tie", "A", "invalid"]]
    second = [per_order(v, "B") for v in ["B", "A", "A", "tie", "B", "A"]]
    assert first == ["win", "win", "loss", "tie", "win", "invalid"]
    assert second == ["win", "loss", "loss", "tie", "win", "loss"]
    cfg = project_params().judge
    s = pairwise.summarize(first, second, cfg, seed=0)
    # win, inconsistent (A then A: position bias), loss, tie, win, invalid
    assert (s["wins"], s["ties"], s["losses"]) == (2, 1, 1)
    assert (s["inconsistent"], s["invalid"], s["n_pairs"]) == (1, 1, 6)
    assert s["win_rate"] == pytest.approx((2 + 0.5 + 0.5) / 5)  # the invalid pair is left out
    assert s["consistency"] == pytest.approx(4 / 5)  # of the five pairs with two valid verdicts
    assert s["invalid_rate"] == pytest.approx(1 / 12, abs=1e-4)  # of replies asked
    assert 0.0 <= s["win_rate_ci_low"] < s["win_rate"] < s["win_rate_ci_high"] <= 1.0
    m = pairwise.judge_matrix(first, second)
    assert m.trace() == 4 and m.sum() == 6 and m[0, 2] == 1  # win shown first, loss second
    assert m[3, 2] == 1  # invalid shown first


def test_a_comparison_without_one_valid_verdict_has_no_win_rate():
    invalid = ["invalid"] * 3
    s = pairwise.summarize(invalid, invalid, project_params().judge, seed=0)
    assert "win_rate" not in s and s["invalid_rate"] == 1.0


def test_unanimous_outcomes_have_a_point_interval():
    assert pairwise.win_rate_interval(["win"] * 6, 0.95, 200, 0) == (1.0, 1.0, 1.0)


def test_a_missing_judge_metric_is_skipped_or_failed_never_passed():
    rule = project_params().promote.gates["judge_win_rate"]
    metrics = {"judge.available": 0, "judge.error": "down"}
    assert promote.check_gate("j", "judge_win_rate", rule, 0.0, metrics, None).status == "skip"
    strict = rule.model_copy(update={"if_missing": "fail"})
    assert promote.check_gate("j", "judge_win_rate", strict, 0.0, metrics, None).status == "fail"
    # The gate reads the interval's upper bound: it fails when the judge shows a loss.
    lost = {"judge_win_rate": 0.3, "judge_win_rate_ci_high": 0.45, "judge_independent": 1}
    assert promote.check_gate("j", "judge_win_rate", rule, 0.0, lost, None).status == "fail"


def test_parse_verdict_reads_the_first_word_and_anything_else_is_invalid():
    replies = ("A", " b.", "**A** is better", "tie", "Neither.", "C", "", "  ", None, "Answer A")
    assert [parse_verdict(t) for t in replies] == [
        "A", "B", "A", "tie", "tie", "invalid", "invalid", "invalid", "invalid", "invalid",
    ]  # fmt: skip


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


def _eval_items(tasks_dir):
    return read_eval_set(tasks_dir / "eval.jsonl")


def test_calibration_pairs_hold_a_correct_and_a_wrong_answer_to_the_same_task(tasks_dir):
    items = _eval_items(tasks_dir)
    pairs = calibration_pairs(items, 16, seed=0)
    by_id = {str(ex["id"]): ex for ex in items}
    assert len({p.id for p in pairs}) == 16
    for p in pairs:
        assert p.right == by_id[p.id]["answer"] and not is_correct(p.right, p.wrong)
        assert p.wrong in {ex["answer"] for ex in items if ex["task"] == by_id[p.id]["task"]}
    assert calibration_pairs(items, 16, seed=0) == pairs  # drawn with the seed
    with pytest.raises(CalibrationSetError, match="lower judge.calibration.pairs"):
        calibration_pairs(items[:3], 4, seed=0)


def _knowing(pairs):
    """A judge that knows the right answer of every calibration prompt."""
    right = {p.prompt: p.right for p in pairs}

    def reply(prompt: str, a: str, b: str) -> str:
        return "tie" if a == b else "A" if a == right.get(prompt) else "B"

    return reply


def _endpoint_judge(url: str, timeout_s: float = 10.0) -> pairwise.EndpointJudge:
    cfg = project_params(judge={"endpoint": url, "model": "m", "timeout_s": timeout_s}).judge
    return pairwise.EndpointJudge(cfg)


def _random_reply(seed: int):
    import random

    rng = random.Random(seed)
    return lambda prompt, a, b: rng.choice(["A", "B"])


BROKEN_JUDGES = {
    "always A": lambda prompt, a, b: "A",
    "garbage": lambda prompt, a, b: "As an AI language model I cannot",
    "empty": lambda prompt, a, b: "",
    "random": _random_reply(0),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_JUDGES))
def test_always_a_garbage_empty_and_random_judges_fail_calibration(tasks_dir, kind):
    pairs = calibration_pairs(_eval_items(tasks_dir), 16, seed=0)
    thresholds = project_params().judge.calibration
    with judge_endpoint(BROKEN_JUDGES[kind]) as url:
        result = calibrate(_endpoint_judge(url), pairs)
    problems = result.problems(thresholds)
    assert problems, (kind, result)
    if kind == "always A":  # right when the correct answer is shown first, wrong otherwise
        assert problems == [
            "calibration consistency 0.000 < 0.75",
            "calibration accuracy 0.000 < 0.75",
        ]
    elif kind == "random":  # right in both orders about a quarter of the time
        assert result.accuracy < thresholds.min_accuracy
    else:
        assert problems[0] == "calibration invalid rate 1.000 > 0.1"


def test_a_judge_that_knows_the_answers_calibrates(tasks_dir):
    pairs = calibration_pairs(_eval_items(tasks_dir), 16, seed=0)
    with judge_endpoint(_knowing(pairs)) as url:
        result = calibrate(_endpoint_judge(url), pairs)
    assert result.metrics() == {
        "accuracy": 1.0, "consistency": 1.0, "invalid_rate": 0.0, "n_pairs": 16
    }  # fmt: skip
    assert result.problems(project_params().judge.calibration) == []


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (lambda prompt, a, b: 500, "InternalServerError"),
        (lambda prompt, a, b: 429, "RateLimitError"),
        (lambda prompt, a, b: 3.0, "APITimeoutError"),
    ],
    ids=["http-500", "http-429", "timeout"],
)
def test_an_endpoint_that_errs_or_stalls_is_unavailable_with_the_reason(reply, reason):
    with judge_endpoint(reply) as url:
        judge = _endpoint_judge(url, timeout_s=0.5)
        with pytest.raises(pairwise.JudgeUnavailable, match=f"did not answer: {reason}"):
            judge.judge(["What is 1 + 1?"], ["2"], ["3"])


def test_a_constrained_endpoint_is_asked_for_a_verdict_and_nothing_else():
    seen: list[dict] = []
    with judge_endpoint(lambda prompt, a, b: "B", seen) as url:
        cfg = project_params(judge={"endpoint": url, "model": "m", "constrained": True}).judge
        assert pairwise.EndpointJudge(cfg).judge(["1 + 1?"], ["2"], ["3"]) == ["B"]
        free = project_params(judge={"endpoint": url, "model": "m"}).judge
        pairwise.EndpointJudge(free).judge(["1 + 1?"], ["2"], ["3"])
    assert seen[0]["structured_outputs"] == {"choice": ["A", "B", "tie"]}
    assert "structured_outputs" not in seen[1]  # not every endpoint is vLLM


def test_a_served_judge_needs_a_checkpoint_and_excludes_an_endpoint():
    with pytest.raises(ParamsError, match="judge.serve is 'init' but model.init is scratch"):
        project_params(judge={"serve": "init"})
    with pytest.raises(ParamsError, match="judge.endpoint and judge.serve both set"):
        project_params(
            model={"init": "some/dir"},
            judge={"serve": "init", "endpoint": "http://x/v1", "model": "m"},
        )


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


def _run(tmp_path, policy, reward, eval_set, init=None, **judge):
    model = {"model": {"init": init}} if init else {}
    params = project_params(judge={"max_prompts": 6, "max_new_tokens": 4, **judge}, **model)
    paths = pairwise.Paths(
        policy=policy,
        sft=policy,
        reward=reward,
        init=tmp_path / "init",
        prompts=PROMPTS,
        eval_set=eval_set,
        verdicts=tmp_path / "judge.jsonl",
        plot=tmp_path / "judge.png",
        metrics=tmp_path / "judge.json",
    )
    with stage_run("judge", stage_view("judge", params)) as tracker:
        return pairwise.run(tracker.params, paths, tracker).metrics


@pytest.mark.slow  # loads TRL and a tiny reward model: ~15 s on a shared CPU
def test_the_reward_model_judge_records_its_calibration_and_is_flagged(dirs, tmp_path, tasks_dir):
    policy, reward = dirs
    _policy_version(policy, "1")
    m = _run(tmp_path, policy, reward, tasks_dir / "eval.jsonl", calibration={"pairs": 8})
    assert m["judge.judge"] == "reward_model"
    assert m["judge.independent"] == 0 and "preference pairs" in m["judge.independence"]
    # Order-blind by construction; an untrained reward model knows no right answer.
    assert m["judge.calibration.consistency"] == 1.0 and m["judge.calibration.n_pairs"] == 8
    assert m["judge.calibration.accuracy"] < 0.75 and m["judge.available"] == 0
    assert m["judge.error"].startswith("calibration accuracy")
    assert m["judge.threshold.min_accuracy"] == 0.75
    assert not any(k.startswith("judge_") for k in m)  # nothing for a gate to pass on
    assert (tmp_path / "judge.png").stat().st_size > 0


@pytest.mark.slow  # two tiny models generate: ~15 s on a shared CPU
def test_a_calibrated_endpoint_judges_a_first_run_vs_sft_without_a_gated_key(
    dirs, tmp_path, tasks_dir
):
    policy, reward = dirs
    _policy_version(policy, "1")
    pairs = calibration_pairs(_eval_items(tasks_dir), 4, seed=project_params().seed)
    with judge_endpoint(_knowing(pairs)) as url:
        m = _run(tmp_path, policy, reward, tasks_dir / "eval.jsonl", endpoint=url, model="m",
                 calibration={"pairs": 4})  # fmt: skip
    assert m["judge.baseline"] == "sft" and "no champion" in m["judge.baseline_reason"]
    assert m["judge.available"] == 1 and m["judge.independent"] == 1
    assert m["judge.calibration.accuracy"] == 1.0
    # Same weights on both sides: the same answers, every pair a real tie.
    assert (m["judge.ties"], m["judge.n_pairs"], m["judge.consistency"]) == (6, 6, 1.0)
    assert m["judge.win_rate"] == 0.5
    assert "judge_win_rate" not in m  # the gate is about the champion: skipped, not passed
    rows = [json.loads(line) for line in (tmp_path / "judge.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["outcome"] for r in rows} == {"tie"}


def test_a_down_endpoint_reports_the_judge_missing_and_the_gate_never_passes(
    dirs, tmp_path, tasks_dir
):
    policy, reward = dirs
    _policy_version(policy, "1")
    down = f"http://127.0.0.1:{_closed_port()}/v1"
    m = _run(tmp_path, policy, reward, tasks_dir / "eval.jsonl", endpoint=down, model="judge",
             timeout_s=2.0)  # fmt: skip
    assert m["judge.available"] == 0 and "did not answer" in m["judge.error"]
    assert not any(k.startswith("judge_") for k in m)
    gates = project_params().promote
    rule = gates.gates["judge_win_rate"]
    result = promote.check_gate("judge_win_rate", "judge_win_rate", rule, 0.0, m, None)
    assert result.status == "skip"
    strict = rule.model_copy(update={"if_missing": "fail"})
    assert promote.check_gate("j", "judge_win_rate", strict, 0.0, m, None).status == "fail"


def test_a_served_judge_without_a_model_to_serve_is_unavailable_with_the_reason(
    dirs, tmp_path, tasks_dir
):
    policy, reward = dirs
    _policy_version(policy, "1")
    (tmp_path / "init").mkdir()  # what the checkpoint stage writes for `scratch`: no weights
    m = _run(tmp_path, policy, reward, tasks_dir / "eval.jsonl", init=str(tmp_path),
             serve="init")  # fmt: skip
    assert m["judge.judge"] == "served:init" and m["judge.available"] == 0
    assert (
        m["judge.error"].startswith("the judge server did not start")
        and "holds no model" in m["judge.error"]
    )
    assert not any(k.startswith("judge_") for k in m)


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
