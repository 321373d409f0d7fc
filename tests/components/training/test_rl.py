import json

import pytest
from mlflow import MlflowClient
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from components.constants import MODEL_POLICY, MODEL_REWARD, MODEL_SFT, REGISTRY_RECORD
from components.tracking.stage_run import stage_run
from components.training import align, rl_rewards
from tests.components.training.tiny import pref_rows, save_base_model, tiny_params, write_jsonl
from tests.helpers import stage_view

# Whole groups of 2 completions, 4 tokens each, 8 prompts: a few seconds on CPU.
RL = {
    "method": "grpo",
    "batch_size": 4,
    "max_examples": 8,
    "rl": {
        "rewards": {"correct": 1.0, "exact": 0.5, "reward_model": 0.1},
        "num_generations": 2,
        "max_completion_length": 4,
        "temperature": 1.0,
        "use_vllm": "auto",
        "eval_max_prompts": 4,
    },
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny SFT model and a reward model (fresh head) with their registry records."""
    sft = save_base_model(tmp_path_factory.mktemp("sft"))
    (sft / REGISTRY_RECORD).write_text(json.dumps({"name": MODEL_SFT, "version": "3"}))
    reward = tmp_path_factory.mktemp("reward")
    tokenizer = AutoTokenizer.from_pretrained(sft)
    rm = AutoModelForSequenceClassification.from_pretrained(
        sft, num_labels=1, pad_token_id=tokenizer.pad_token_id
    )
    rm.save_pretrained(reward)
    tokenizer.save_pretrained(reward)
    (reward / REGISTRY_RECORD).write_text(json.dumps({"name": MODEL_REWARD, "version": "5"}))
    return sft, reward


def _paths(models, tmp_path):
    d = tmp_path / "tasks"
    return align.Paths(
        sft=models[0],
        reward=models[1],
        train=write_jsonl(d / "prefs_train.jsonl", pref_rows(8)),
        test=write_jsonl(d / "prefs_test.jsonl", pref_rows(4, offset=100)),
        out=tmp_path / "models" / "policy",
        metrics=tmp_path / "align.json",
    )


def test_verifiable_rewards_follow_the_judge():
    done = [[{"role": "assistant", "content": "42"}], [{"role": "assistant", "content": "42 ok"}]]
    wrong = [[{"role": "assistant", "content": "421"}], [{"role": "assistant", "content": ""}]]
    assert rl_rewards.correct(done, answer=["42", "42"]) == [1.0, 1.0]
    assert rl_rewards.exact(done, answer=["42", "42"]) == [1.0, 0.0]  # stop after the answer
    assert rl_rewards.correct(wrong, answer=["42", "42"]) == [0.0, 0.0]


def test_reward_weights_are_checked():
    with pytest.raises(ValueError, match="unknown rewards \\['bogus'\\]"):
        rl_rewards.weighted_rewards({"bogus": 1.0}, None)
    with pytest.raises(ValueError, match="every reward weight 0"):
        rl_rewards.weighted_rewards({"correct": 0.0}, None)
    funcs, weights = rl_rewards.weighted_rewards({"correct": 1.0, "exact": 0.0}, None)
    assert [f.__name__ for f in funcs] == ["correct"] and weights == [1.0]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_rl_trains_measures_and_registers(models, tmp_path, monkeypatch, method):
    monkeypatch.chdir(tmp_path)
    paths = _paths(models, tmp_path)
    params = tiny_params(align={**RL, "method": method})
    with stage_run("align", stage_view("align", params)) as tracker:
        m = align.run(tracker.params, paths, tracker).metrics
        run_id = tracker.run_id

    for when in ("before", "after"):
        assert 0 <= m[f"heldout_{when}.accuracy"] <= 1
        assert f"heldout_{when}.reward.reward_model" in m
    assert m["n_eval_prompts"] == 4 and m["n_train_pairs"] == 8
    assert "train_kl_last" in m and "train_reward_last" in m
    history = MlflowClient().get_metric_history(run_id, "rewards/correct/mean")
    assert history  # per-step accuracy reached MLflow

    record = json.loads((paths.out / REGISTRY_RECORD).read_text())
    mv = MlflowClient().get_model_version(MODEL_POLICY, record["version"])
    assert mv.tags["parent_model"] == f"{MODEL_SFT}/3"
    assert mv.tags["reward_model"] == f"{MODEL_REWARD}/5"


def test_a_raising_reward_fails_the_stage_by_name(models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def flaky(completions, **_):
        raise KeyError("no answer column")

    monkeypatch.setitem(rl_rewards.VERIFIABLE, "flaky", flaky)
    paths = _paths(models, tmp_path)
    params = tiny_params(align={**RL, "rl": {**RL["rl"], "rewards": {"flaky": 1.0}}})
    with (
        pytest.raises(
            rl_rewards.RewardFunctionError, match="reward function 'flaky' raised KeyError"
        ),
        stage_run("align", stage_view("align", params)) as tracker,
    ):
        align.run(tracker.params, paths, tracker)
    assert not paths.out.exists()
    assert MlflowClient().search_model_versions(f"name='{MODEL_POLICY}'") == []
