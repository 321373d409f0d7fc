import json

import pytest
import torch
from datasets import Dataset
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from components.constants import MODEL_POLICY, MODEL_SFT, REGISTRY_RECORD
from components.modeling.io import load_for_inference
from components.tracking.stage_run import stage_run
from components.training import align
from components.training.trainer_common import (
    DROP_EMPTY,
    DROP_IDENTICAL,
    DROP_LONG_PROMPT,
    drop_bad_pairs,
    load_preference_pairs,
)
from tests.components.training.tiny import (
    pref_rows,
    save_base_model,
    tiny_params,
    write_jsonl,
)
from tests.helpers import stage_view


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
    """Stands in for the SFT stage's output: a tiny model dir with its registry record."""
    d = save_base_model(tmp_path_factory.mktemp("sft"))
    (d / REGISTRY_RECORD).write_text(json.dumps({"name": MODEL_SFT, "version": "2"}))
    return d


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    return (
        write_jsonl(d / "prefs_train.jsonl", pref_rows(48)),
        write_jsonl(d / "prefs_test.jsonl", pref_rows(16, offset=100)),
    )


def policy_and_reference(sft_dir):
    return align.load_policy(sft_dir, tiny_params().align.lora), align.load_reference(sft_dir)


def _setup(sft_dir, tasks, scratch):
    params = tiny_params()
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    policy, reference = policy_and_reference(sft_dir)
    pairs = load_preference_pairs(tasks[0], params.align.max_examples, params.seed)
    trainer = align.build_trainer(
        policy, reference, tokenizer, pairs, params.align, scratch, params.seed
    )
    return params, tokenizer, policy, reference, pairs, trainer


def test_completion_split_matches_trl(sft_dir, tasks, tmp_path):
    params, tokenizer, policy, reference, pairs, trainer = _setup(sft_dir, tasks, tmp_path)
    assert trainer.args.beta == params.align.beta and trainer.args.loss_type == ["sigmoid"]
    assert not any(p.requires_grad for p in reference.parameters())
    for row, ex in zip(pairs, trainer.train_dataset, strict=True):
        prompt_ids, chosen_ids = align.split_completion(tokenizer, row["prompt"], row["chosen"])
        assert (prompt_ids, chosen_ids) == (ex["prompt_ids"], ex["chosen_ids"])
    assert tokenizer.decode(chosen_ids) == pairs[-1]["chosen"][0]["content"] + "<|im_end|>\n"
    assert tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")


def test_implicit_reward_is_zero_before_training(sft_dir, tasks, tmp_path):
    params, tokenizer, policy, reference, pairs, _ = _setup(sft_dir, tasks, tmp_path)
    chosen, rejected = align.implicit_rewards(
        policy, reference, tokenizer, pairs[:4], beta=0.1, max_length=48
    )
    assert chosen == [0.0] * 4 and rejected == [0.0] * 4
    # A tie is not a preference: the untrained policy scores 0, not 0.5 or 1.
    assert align.evaluate_pairs(policy, reference, tokenizer, pairs[:4], 0.1, 48) == {
        "test_accuracy": 0.0,
        "test_margin_mean": 0.0,
    }


def test_held_out_accuracy_agrees_with_trl_eval(sft_dir, tasks, tmp_path):
    params, tokenizer, policy, reference, pairs, trainer = _setup(sft_dir, tasks, tmp_path)
    trainer.train()
    test = load_preference_pairs(tasks[1], None, 0)
    ours = align.evaluate_pairs(
        policy, reference, tokenizer, test, params.align.beta, params.align.max_length
    )
    trl = trainer.evaluate(eval_dataset=Dataset.from_list(test))  # 16 pairs, 2 full batches of 8
    assert ours["test_accuracy"] > 0.5  # a real comparison, not two zeros
    assert ours["test_accuracy"] == pytest.approx(trl["eval_rewards/accuracies"])
    assert ours["test_margin_mean"] == pytest.approx(trl["eval_rewards/margins"], abs=1e-4)


def test_run_aligns_saves_and_registers(sft_dir, tasks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    out = tmp_path / "models" / "policy"
    paths = align.Paths(
        sft=sft_dir,
        reward=tmp_path / "unused-reward",  # DPO reads no reward model
        train=tasks[0],
        test=tasks[1],
        out=out,
        metrics=tmp_path / "align.json",
    )
    params = tiny_params(align={"epochs": 2, "max_examples": None})
    with stage_run("align", stage_view("align", params)) as tracker:
        result = align.run(tracker.params, paths, tracker)

    m = result.metrics
    assert m["n_examples"] == 48 and m["n_train_pairs"] == 48 and m["n_test_pairs"] == 16
    assert m["train_loss_last"] < m["train_loss_first"]
    assert m["train_loss_first"] == pytest.approx(0.6931, abs=1e-3)  # log 2: policy == reference
    assert m["test_accuracy"] >= 0.9
    assert m["test_margin_mean"] > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["policy"]

    policy, tokenizer = load_for_inference(out)
    sft = AutoModelForCausalLM.from_pretrained(sft_dir)
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(policy.state_dict()[name], sft.state_dict()[name])
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "what is 1 + 2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    gen = policy.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1]

    record = json.loads((out / REGISTRY_RECORD).read_text())
    mv = MlflowClient().get_model_version(MODEL_POLICY, record["version"])
    assert mv.tags["parent_model"] == f"{MODEL_SFT}/2"
    assert mv.tags["stage"] == "align"


def test_bad_pairs_are_dropped_with_counts(sft_dir):
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    good = pref_rows(3)
    same = {**good[0], "rejected": [{"role": "assistant", "content": " the answer is 0 "}]}
    same["chosen"] = [{"role": "assistant", "content": "the answer is 0"}]
    empty = {**good[1], "rejected": [{"role": "assistant", "content": "  "}]}
    long = {**good[2], "prompt": [{"role": "user", "content": "what is 1 + 2? " * 40}]}
    pairs = [
        {k: r[k] for k in ("prompt", "chosen", "rejected")} for r in [*good, same, empty, long]
    ]
    kept, dropped = drop_bad_pairs(pairs, tokenizer, max_length=48, what="test")
    assert kept == pairs[:3]
    assert dropped == {DROP_IDENTICAL: 1, DROP_EMPTY: 1, DROP_LONG_PROMPT: 1}
    with pytest.raises(ValueError, match="every pair was dropped"):
        drop_bad_pairs([same], tokenizer, max_length=48, what="test")


@pytest.mark.parametrize("method", ["ipo", "hinge", "robust", "apo_zero"])
def test_dpo_loss_variants_reach_trl(sft_dir, tasks, tmp_path, method):
    params = tiny_params(align={"method": method})
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    policy, reference = policy_and_reference(sft_dir)
    pairs = load_preference_pairs(tasks[0], 8, 0)
    trainer = align.build_trainer(
        policy, reference, tokenizer, pairs, params.align, tmp_path, params.seed
    )
    assert trainer.args.loss_type == [align.LOSS_TYPES[method]]


def test_kto_trains_on_unpaired_pairs(sft_dir, tasks, tmp_path):
    params = tiny_params(align={"method": "kto"})
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    policy, reference = policy_and_reference(sft_dir)
    pairs = load_preference_pairs(tasks[0], 8, 0)
    trainer = align.build_trainer(
        policy, reference, tokenizer, pairs, params.align, tmp_path, params.seed
    )
    labels = trainer.train_dataset["label"]
    assert sorted(labels) == [False] * 8 + [True] * 8
    assert labels[:4] != [labels[0]] * 4  # shuffled: batches mix desirable and undesirable
    trainer.train()
    assert any("loss" in e for e in trainer.state.log_history)


def test_compare_writes_a_method_table(sft_dir, tasks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = align.Paths(
        sft=sft_dir,
        reward=tmp_path / "unused-reward",
        train=tasks[0],
        test=tasks[1],
        out=tmp_path / "policy",
        metrics=tmp_path / "align.json",
    )
    params = tiny_params(align={"method": "dpo", "compare": ["ipo", "kto", "dpo"]})
    with stage_run("align", stage_view("align", params)) as tracker:
        m = align.run(tracker.params, paths, tracker).metrics
    for method in ("dpo", "ipo", "kto"):
        assert 0 <= m[f"methods.{method}.test_accuracy"] <= 1
        assert f"methods.{method}.train_loss_last" in m
    assert m["test_accuracy"] == m["methods.dpo.test_accuracy"]
    assert m["dropped.identical_chosen_rejected"] == 0 and m["n_train_pairs"] == 24
