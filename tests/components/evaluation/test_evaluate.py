import json
import math

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from components.evaluation import evaluate, harness
from components.evaluation.eval_set import EvalSetError, read_eval_set
from components.modeling.generate import chat_prompts, generate_greedy, user_turns
from components.modeling.io import load_for_inference
from components.modeling.llama import build_model
from components.tokenizer.train import train_tokenizer
from components.tracking.stage_run import stage_run
from tests.components.training.tiny import TINY
from tests.helpers import project_params, stage_view

EXAMPLES = [
    {"id": "a1", "task": "add", "prompt": "What is 2 + 3?", "answer": "5"},
    {"id": "a2", "task": "add", "prompt": "What is 4 + 4?", "answer": "8"},
    {"id": "r1", "task": "reverse", "prompt": "Reverse: abc", "answer": "cba"},
    {"id": "a3", "task": "add", "prompt": "What is 1 + 1?", "answer": "2"},
    {"id": "r2", "task": "reverse", "prompt": "Reverse: xy", "answer": "yx"},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    texts = [f"What is {i} + {i % 9}? It is {i + i % 9}. Reverse: ab{i}" for i in range(300)]
    tokenizer = train_tokenizer([texts], vocab_size=400, min_frequency=1)
    torch.manual_seed(0)
    model = build_model(TINY, tokenizer)
    with torch.no_grad():  # wider than the init (std 0.02): varied greedy tokens, not one repeat
        for p in model.parameters():
            p.normal_(0, 0.3)
    out = tmp_path_factory.mktemp("model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_for_inference(model_dir)


def test_perplexity_is_exp_of_mean_token_nll(loaded):
    model, _ = loaded
    tokens = np.array(
        [[3, 17, 40, 5, 99, 7], [8, 8, 200, 31, 4, 6], [1, 2, 3, 4, 5, 6]], dtype=np.uint16
    )
    nlls = []
    with torch.no_grad():
        for row in tokens.astype(np.int64):
            logp = torch.log_softmax(model(input_ids=torch.from_numpy(row[None])).logits[0], -1)
            nlls += [-float(logp[t, row[t + 1]]) for t in range(len(row) - 1)]
    expected = math.exp(sum(nlls) / len(nlls))
    # Uneven last batch (2 + 1 rows) must weigh tokens, not batches.
    assert evaluate.perplexity(model, tokens, batch_size=2) == pytest.approx(expected, rel=1e-5)
    first_two = math.exp(sum(nlls[:10]) / 10)
    assert evaluate.perplexity(model, tokens, batch_size=2, max_batches=1) == pytest.approx(
        first_two, rel=1e-5
    )


def test_generation_uses_chat_template_and_left_padding_matches_single_prompts(loaded):
    model, tokenizer = loaded
    [formatted] = chat_prompts(tokenizer, user_turns(["What is 2 + 3?"]))
    assert formatted == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    prompts = ["What is 2 + 3?", "Reverse: a much longer prompt than the first one", "It is"]
    batched = generate_greedy(model, tokenizer, user_turns(prompts), max_new_tokens=5)
    single = [generate_greedy(model, tokenizer, user_turns([p]), 5)[0] for p in prompts]
    assert batched == single
    assert all(batched)  # not a degenerate comparison of empty strings
    assert not any("<|" in out for out in batched)  # special tokens are not decoded


def test_render_plot_writes_a_png(tmp_path):
    rows = [
        {"model": m, "eval_accuracy": a, "perplexity": p}
        for m, a, p in (("base", 0.0, 300.0), ("policy", 0.4, 40.0))
    ]
    evaluate.render_plot(rows, tmp_path / "plots" / "evaluation.png")
    assert (tmp_path / "plots" / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_eval_set_names_missing_keys_and_duplicate_ids(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"id": "x", "prompt": "p", "answer": "a"}) + "\n")
    with pytest.raises(EvalSetError, match=r"eval.jsonl:1 lacks keys \['task'\]"):
        read_eval_set(path, limit=10)
    path.write_text("".join(json.dumps(e) + "\n" for e in [*EXAMPLES, EXAMPLES[1]]))
    with pytest.raises(EvalSetError, match=r"eval.jsonl:6 repeats id 'a2' of line 2"):
        read_eval_set(path)
    path.write_text("{not json\n")
    with pytest.raises(EvalSetError, match=r"eval.jsonl:1 is not JSON"):
        read_eval_set(path)


def test_an_unknown_lm_eval_task_lists_the_available_ones(tmp_path):
    with pytest.raises(harness.UnknownTask, match=r"\['llmops_ad'\].*Bundled: \[.*'llmops_add'"):
        harness.task_manager(tmp_path / "eval.jsonl", 10, ["llmops_ad"])


def test_harness_scores_the_bundled_tasks_with_the_project_judge(loaded, tmp_path):
    model, tokenizer = loaded
    # An answer the tiny model certainly gets wrong, and one it gets right by construction:
    # the expected answer is whatever it generates greedily for that prompt.
    [first] = generate_greedy(model, tokenizer, user_turns(["Reverse: abc"]), max_new_tokens=4)
    examples = [
        {"id": "r1", "task": "reverse", "prompt": "Reverse: abc", "answer": first.split()[0]},
        {"id": "a1", "task": "add", "prompt": "What is 2 + 3?", "answer": "zzzz"},
    ]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in examples))
    tm = harness.task_manager(tmp_path / "eval.jsonl", 10)
    lm = harness.hf_backend(model, tokenizer, batch_size=2)
    tasks = harness.bundled_tasks(["add", "reverse"])
    result = harness.evaluate_tasks(lm, tm, tasks, limit=10, max_new_tokens=4)
    assert result.scores["llmops_reverse"]["acc"] == 1.0
    assert result.scores["llmops_add"]["acc"] == 0.0
    assert harness.overall(result) == (0.5, pytest.approx(0.5), 2)
    [sample] = result.samples["llmops_reverse"]
    assert sample["filtered_resps"][0] == first  # same text as the hand-written greedy loop


def test_run_compares_five_models_and_logs_artifacts(model_dir, loaded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (tmp_path / "packed").mkdir()
    rng = np.random.default_rng(0)
    np.save(tmp_path / "packed" / "val.npy", rng.integers(0, 400, (20, 16), dtype=np.uint16))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    paths = evaluate.Paths(
        base=model_dir,
        sft=model_dir,
        policy=model_dir,
        # The quantized slots hold the fp model here: making real compressed-tensors
        # checkpoints takes the llm-compressor worker (tests/components/training/test_quantize.py
        # loads them, slow; the end-to-end test evaluates them).
        policy_int8=model_dir,
        policy_int4=model_dir,
        val=tmp_path / "packed",
        eval_set=tmp_path / "eval.jsonl",
        table=tmp_path / "reports" / "evaluation.json",
        plot=tmp_path / "plots" / "eval.png",
        predictions=tmp_path / "reports" / "predictions.jsonl",
        metrics=tmp_path / "m.json",
    )
    # 3 examples: a paired test at 0.8 can still show a gain on so few (0.95 needs 5).
    params = project_params(
        evaluate={"max_examples": 3, "ppl_batches": 2, "max_new_tokens": 4},
        promote={"confidence": 0.8},
    )
    with stage_run("evaluate", stage_view("evaluate", params)) as tracker:
        result = evaluate.run(tracker.params, paths, tracker)
        run_id = tracker.run_id

    m = result.metrics
    fp32_ppl = evaluate.perplexity(
        loaded[0], np.load(tmp_path / "packed" / "val.npy")[:16], batch_size=8
    )
    assert m["perplexity"] == m["policy.perplexity"] == pytest.approx(fp32_ppl, rel=1e-3)
    assert m["policy_int4.perplexity"] == pytest.approx(fp32_ppl, rel=1e-3)
    assert m["eval_accuracy"] == m["policy.eval_accuracy"]
    assert {
        "base.eval_accuracy",
        "sft.perplexity",
        "policy.accuracy.add",
        "policy.accuracy.reverse",
        "policy.accuracy_stderr.add",
        "policy_int8.n_examples",
        "policy_int4.eval_accuracy",
        "eval_accuracy_stderr",
    } <= set(m)
    rows = json.loads(paths.table.read_text())
    assert [r["model"] for r in rows] == ["base", "sft", "policy", "policy_int8", "policy_int4"]
    assert all(r["n_examples"] == 3 for r in rows)
    preds = [json.loads(x) for x in paths.predictions.read_text().splitlines()]
    assert len(preds) == 5 * 3
    assert set(preds[0]) == {"model", "id", "task", "prompt", "answer", "generated", "correct"}
    assert paths.plot.read_bytes()[:4] == b"\x89PNG"
    logged = {a.path for a in MlflowClient().list_artifacts(run_id, "evaluation")}
    assert logged == {
        "evaluation/evaluation.json",
        "evaluation/eval.png",
        "evaluation/predictions.jsonl",
    }
