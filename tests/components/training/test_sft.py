import json

import pytest
import torch
from mlflow import MlflowClient
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from components.constants import MODEL_SFT, REGISTRY_RECORD
from components.tracking.stage_run import stage_run
from components.training import sft
from components.training.trainer_common import subsample
from tests.components.training.tiny import (
    save_base_model,
    sft_rows,
    tiny_params,
    write_jsonl,
)
from tests.helpers import stage_view


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_base_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("tasks") / "sft_train.jsonl", sft_rows(40))


def _trainer(base_dir, data, scratch, **sft_values):
    params = tiny_params(sft=sft_values)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    dataset = sft.load_examples(data, params.sft.max_examples, params.seed)
    return sft.build_trainer(model, tokenizer, dataset, params.sft, scratch, params.seed), tokenizer


def test_loss_is_on_the_assistant_response_only(base_dir, data, tmp_path):
    trainer, tokenizer = _trainer(base_dir, data, tmp_path)
    rows = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in sft_rows(40)}
    assert len(trainer.train_dataset) == 24  # max_examples
    for ex in trainer.train_dataset:
        ids, labels = ex["input_ids"], ex["labels"]
        trained = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert all(lab in (-100, t) for t, lab in zip(ids, labels, strict=True))
        text = tokenizer.decode(ids)
        question = text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
        # The response and its end-of-turn token are learned; the prompt, the role headers and
        # the newline after <|im_end|> are not.
        assert tokenizer.decode(trained) == rows[question] + "<|im_end|>"
        first = labels.index(next(lab for lab in labels if lab != -100))
        assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")


def test_a_multi_turn_chat_learns_exactly_its_assistant_turns(base_dir, tmp_path):
    turns = [("what is 1 + 2?", "3"), ("what is 4 + 4?", "the answer is 8")]
    messages = [
        m
        for q, a in turns
        for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})
    ]
    data = write_jsonl(tmp_path / "chat.jsonl", [{"id": "c", "task": "t", "messages": messages}])
    trainer, tokenizer = _trainer(base_dir, data, tmp_path / "scratch", max_length=128)
    (ex,) = trainer.train_dataset
    assert tokenizer.decode(ex["input_ids"]).endswith("<|im_end|>\n")  # nothing truncated
    ids, labels = ex["input_ids"], ex["labels"]
    assert all(lab in (-100, t) for t, lab in zip(ids, labels, strict=True))
    # Token spans of the assistant turns, from the template itself: the turn's content and its
    # <|im_end|>, found after each "<|im_start|>assistant\n" header.
    header = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    want = [0] * len(ids)
    for start in (i for i in range(len(ids)) if ids[i : i + len(header)] == header):
        end = ids.index(tokenizer.convert_tokens_to_ids("<|im_end|>"), start + len(header))
        want[start + len(header) : end + 1] = [1] * (end + 1 - start - len(header))
    assert sum(want) > 0 and want.count(1) < len(ids)
    assert [int(lab != -100) for lab in labels] == want
    learned = tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
    assert learned == "3<|im_end|>the answer is 8<|im_end|>"  # both answers, no user text


def test_subsample_is_seeded_and_keeps_file_order():
    rows = [{"i": i} for i in range(50)]
    a = subsample(rows, 10, seed=1)
    assert a == subsample(rows, 10, seed=1)
    assert a != subsample(rows, 10, seed=2)
    assert [r["i"] for r in a] == sorted(r["i"] for r in a)
    assert subsample(rows, None, seed=1) == rows
    assert subsample(rows, 500, seed=1) == rows


def test_example_without_assistant_answer_is_refused(tmp_path):
    bad = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"id": "x", "task": "t", "messages": [{"role": "user", "content": "hi"}]}],
    )
    with pytest.raises(ValueError, match="must end with an assistant message"):
        sft.load_examples(bad, None, 0)


def test_lora_adapters_are_merged_into_a_plain_model(base_dir, data, tmp_path):
    trainer, tokenizer = _trainer(
        base_dir,
        data,
        tmp_path / "scratch",
        lora={
            "enabled": True,
            "r": 4,
            "alpha": 8,
            "dropout": 0.0,
            "target_modules": ("q_proj", "v_proj", "down_proj"),
        },
    )
    assert 0 < sft.trainable_fraction(trainer.model) < 0.5
    trainer.train()
    model = sft.merged(trainer.model)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name, _ in model.named_modules())

    model.save_pretrained(tmp_path / "out")
    with safe_open(tmp_path / "out" / "model.safetensors", "pt") as st:
        keys = list(st.keys())
    assert not any("lora" in k or "base_layer" in k for k in keys)
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    q = "model.layers.0.self_attn.q_proj.weight"
    k = "model.layers.0.self_attn.k_proj.weight"
    state, base_state = reloaded.state_dict(), base.state_dict()
    assert not torch.equal(state[q], base_state[q])  # the adapter's update is in the weights
    assert torch.equal(state[k], base_state[k])  # untargeted layers are untouched


def test_run_trains_saves_atomically_and_registers(base_dir, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    out = tmp_path / "models" / "sft"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from a previous run")
    paths = sft.Paths(base=base_dir, data=data, out=out, metrics=tmp_path / "sft.json")
    params = tiny_params()
    with stage_run("sft", stage_view("sft", params)) as tracker:
        result = sft.run(tracker.params, paths, tracker)
        run_id = tracker.run_id

    m = result.metrics
    assert m["n_examples"] == 24 and m["n_train_sequences"] == 24
    assert m["trainable_fraction"] == 1.0 and m["lora"] == 0
    assert m["train_loss_last"] < m["train_loss_first"]
    assert m["train_runtime_s"] > 0
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["sft"]  # no temp dirs left
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    # Per-step losses reached the stage's MLflow run through the callback.
    history = MlflowClient().get_metric_history(run_id, "loss")
    assert len(history) >= 2 and history[0].step == 1

    record = json.loads((out / REGISTRY_RECORD).read_text())
    mv = MlflowClient().get_model_version(MODEL_SFT, record["version"])
    assert mv.tags["parent_model"] == "llmops-base/1"
    assert mv.tags["stage"] == "sft"

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "what is 1 + 2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    gen = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1]


def test_failed_save_leaves_the_previous_model_dir_intact(tmp_path):
    from components.training.trainer_common import atomic_model_dir

    out = tmp_path / "sft"
    out.mkdir()
    (out / "model.safetensors").write_text("previous model")
    with pytest.raises(RuntimeError, match="disk full"), atomic_model_dir(out) as tmp:
        (tmp / "model.safetensors").write_text("half written")
        raise RuntimeError("disk full")
    assert (out / "model.safetensors").read_text() == "previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["sft"]  # the temp dir is gone


# A checkpoint's own ChatML-like template (SmolLM2's shape: a default system turn), without
# the `{% generation %}` markers TRL's assistant-only loss needs.
OWN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_a_template_without_generation_markers_learns_the_last_answer(base_dir, data, tmp_path):
    params = tiny_params(sft={"max_examples": 8})
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    tokenizer.chat_template = OWN_TEMPLATE
    dataset = sft.as_prompt_completion(sft.load_examples(data, 8, params.seed))
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    trainer = sft.build_trainer(model, tokenizer, dataset, params.sft, tmp_path, params.seed)
    assert not trainer.args.assistant_only_loss
    for ex in trainer.train_dataset:
        batch = trainer.data_collator([ex])
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        text = tokenizer.decode(ids)
        assert text.startswith("<|im_start|>system\nYou are helpful.")  # the model's template
        answer = text.rsplit("<|im_start|>assistant\n", 1)[1]
        assert tokenizer.decode(ids[labels != -100]) == answer  # answer, <|im_end|>, newline
