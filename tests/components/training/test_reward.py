import json

import pytest
from mlflow import MlflowClient
from transformers import AutoTokenizer

from components.constants import MODEL_REWARD, REGISTRY_RECORD
from components.modeling import scoring
from components.modeling.io import load_for_inference
from components.tracking.stage_run import stage_run
from components.training import reward
from components.training.trainer_common import (
    DROP_REASONS,
    load_preference_pairs,
    pair_accuracy,
)
from tests.components.training.tiny import (
    pref_rows,
    save_base_model,
    tiny_params,
    write_jsonl,
)
from tests.helpers import stage_view


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_base_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    return (
        write_jsonl(d / "prefs_train.jsonl", pref_rows(48)),
        write_jsonl(d / "prefs_test.jsonl", pref_rows(16, offset=100)),
    )


def test_pair_accuracy_counts_strict_wins_only():
    #            win  tie   loss  win
    chosen = [1.0, 2.0, 3.0, 0.0]
    rejected = [0.0, 2.0, 4.0, -1.0]
    assert pair_accuracy(chosen, rejected) == 0.5
    assert pair_accuracy([1.0], [0.0]) == 1.0
    with pytest.raises(ValueError, match="equally many"):
        pair_accuracy([1.0, 2.0], [0.0])


def test_malformed_pair_is_refused(tmp_path):
    row = pref_rows(1)[0]
    row["chosen"] = row["chosen"] * 2
    bad = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(ValueError, match="exactly one assistant message"):
        load_preference_pairs(bad, None, 0)


def test_scoring_matches_trl_tokenization_and_ignores_padding(base_dir, tasks, tmp_path):
    params = tiny_params()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = reward.load_reward_model(base_dir, tokenizer, params.seed)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
    pairs = load_preference_pairs(tasks[0], params.reward.max_examples, params.seed)
    trainer = reward.build_trainer(model, tokenizer, pairs, params.reward, tmp_path, params.seed)
    # What TRL trains on is what `score` reads: the chat template of prompt + response.
    ours = tokenizer.apply_chat_template(
        pairs[0]["prompt"] + pairs[0]["chosen"], tokenize=True, return_dict=True
    )["input_ids"]
    assert trainer.train_dataset[0]["chosen_ids"] == ours

    convs = [p["prompt"] + p[k] for p in pairs[:6] for k in ("chosen", "rejected")]
    batched = scoring.score(model, tokenizer, convs, max_length=48, batch_size=6)
    single = scoring.score(model, tokenizer, convs, max_length=48, batch_size=1)
    assert batched == pytest.approx(single, abs=1e-5)  # right padding does not move the reward
    assert len(set(round(r, 6) for r in single)) > 1


def bad_pairs(offset: int) -> list[dict]:
    """One pair per drop reason: identical completions, an empty one, a prompt over max_length."""
    same, empty, long = pref_rows(3, offset=offset)
    same["rejected"] = [{"role": "assistant", "content": same["chosen"][0]["content"] + " "}]
    empty["chosen"] = [{"role": "assistant", "content": ""}]
    long["prompt"] = [{"role": "user", "content": "what is 1 + 2? " * 40}]
    return [same, empty, long]


def test_run_learns_preferences_and_registers(base_dir, tasks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    out = tmp_path / "models" / "reward"
    # The fixture's pairs plus bad ones, which are dropped and counted, never trained on.
    train = write_jsonl(tmp_path / "train.jsonl", pref_rows(48) + bad_pairs(500))
    test = write_jsonl(tmp_path / "test.jsonl", pref_rows(16, offset=100) + bad_pairs(600)[:1])
    paths = reward.Paths(
        base=base_dir, train=train, test=test, out=out, metrics=tmp_path / "reward.json"
    )
    params = tiny_params(reward={"epochs": 2, "max_examples": None})
    with stage_run("reward", stage_view("reward", params)) as tracker:
        result = reward.run(tracker.params, paths, tracker)

    m = result.metrics
    assert m["n_examples"] == 51 and m["n_train_pairs"] == 48 and m["n_test_pairs"] == 16
    assert [m[f"dropped.{r}"] for r in DROP_REASONS] == [1, 1, 1]
    assert [m[f"dropped_test.{r}"] for r in DROP_REASONS] == [1, 0, 0]
    assert m["train_loss_last"] < m["train_loss_first"]
    assert m["test_accuracy"] >= 0.9  # the rejected answers are easy to tell apart
    assert m["test_margin_mean"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["reward"]

    model, tokenizer = load_for_inference(out)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    test = load_preference_pairs(tasks[1], None, 0)
    again = reward.evaluate_pairs(model, tokenizer, test, params.reward.max_length, 4)
    assert again["test_accuracy"] == m["test_accuracy"]  # the saved model is the evaluated one

    record = json.loads((out / REGISTRY_RECORD).read_text())
    mv = MlflowClient().get_model_version(MODEL_REWARD, record["version"])
    assert mv.tags["parent_model"] == "llmops-base/1"
    assert mv.tags["stage"] == "reward"
