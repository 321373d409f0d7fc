"""A pretrained checkpoint (model.init) through the stages that read it, at toy size: the
checkpoint stage resolves a tiny random Llama directory, the tokenizer stage adopts its
tokenizer, pack uses it, pretraining continues from its weights on 2 DeepSpeed ranks (ZeRO-3),
SFT fine-tunes the result, quantize compresses it, and every registered version names the
checkpoint in its lineage tags."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig

from components.config import SHAPE_KEYS, QuantizeVariant, QuantizeVariants
from components.constants import (
    ENV_PROJECT_DIR,
    MODEL_BASE,
    MODEL_POLICY_INT4,
    MODEL_SFT,
    TAG_INIT_HASH,
    TAG_INIT_ORIGIN,
)
from components.data import pack
from components.data.corpus_layout import MIXTURE_FILE
from components.data.documents import DOCS_FILE, Doc, write_docs
from components.modeling import materialise
from components.modeling.llama import build_model
from components.tokenizer import train as tokenizer_stage
from components.tokenizer.train import adopt_tokenizer, train_tokenizer
from components.tracking.stage_run import stage_run
from components.training import pretrain, pretrain_worker, quantize, sft
from tests.components.training.tiny import TINY, corpus, plain_tokenizer, tiny_params, write_jsonl
from tests.helpers import ROOT, stage_view

pytestmark = pytest.mark.timeout(900)

# Dims every quantize variant takes (k/v projections 32 wide: vLLM's int4 CPU kernel).
SHAPE = TINY.model_copy(update={"hidden_size": 64, "intermediate_size": 128})
STEPS = 3


def _stage(name, module, params, paths):
    with stage_run(name, stage_view(name, params)) as tracker:
        return module.run(tracker.params, paths, tracker)


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory):
    root = tmp_path_factory.mktemp("from-checkpoint")
    mp = pytest.MonkeyPatch()
    # Module scope: the autouse per-test fixtures (project dir, MLflow store) are set up here.
    mp.setenv(ENV_PROJECT_DIR, str(ROOT))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    src = root / "pretrained"
    tokenizer = train_tokenizer([corpus()], vocab_size=400, min_frequency=1)
    torch.manual_seed(0)
    build_model(SHAPE, tokenizer).save_pretrained(src)
    tokenizer.save_pretrained(src)

    params = tiny_params(
        model={"init": str(src)} | dict.fromkeys(SHAPE_KEYS),  # the shape from the checkpoint
        pack={"seq_len": 32, "val_fraction": 0.2},
        cluster={"nodes": 1, "ranks_per_node": 2},
        pretrain={
            "zero_stage": 3,
            "micro_batch_size": 2,
            "max_steps": STEPS,
            "warmup_steps": 1,
            "eval_every": STEPS,
            "eval_batches": 1,
            "checkpoint_every": 100,
        },
        sft={"max_examples": 8},
    )
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    mixed = root / "mixed"
    mixed.mkdir()
    write_docs(
        [Doc(id=f"d{i}", text=t, source="toy") for i, t in enumerate(corpus())], mixed / DOCS_FILE
    )
    groups = {"toy": {"requested_share": 1.0}}
    (mixed / MIXTURE_FILE).write_text(json.dumps({"by": "source", "groups": groups}))

    init = root / "models" / "init"
    _stage("checkpoint", materialise, params, materialise.Paths(init, root / "m-ckpt.json"))
    tok_dir = root / "models" / "tokenizer"
    _stage(
        "tokenizer",
        tokenizer_stage,
        params,
        tokenizer_stage.Paths(mixed, init, tok_dir, root / "m-tok.json"),
    )
    packed = root / "packed"
    _stage("pack", pack, params, pack.Paths(mixed, tok_dir, packed, root / "m-pack.json"))
    base = root / "models" / "base"
    pretrained = _stage(
        "pretrain",
        pretrain,
        params,
        pretrain.Paths(
            data=packed,
            tokenizer=tok_dir,
            init=init,
            params_file=params_file,
            checkpoints=root / "ckpt",
            out=base,
            history=root / "history.csv",
            plot=root / "loss.png",
            metrics=root / "m-pretrain.json",
        ),
    )
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [(f"what is {i} + 1?", str(i + 1)) for i in range(16)]
    ]
    data = write_jsonl(root / "sft_train.jsonl", rows)
    sft_dir = root / "models" / "sft"
    _stage("sft", sft, params, sft.Paths(base, data, sft_dir, root / "m-sft.json"))
    yield {
        "root": root,
        "src": src,
        "init": init,
        "tokenizer": tok_dir,
        "packed": packed,
        "base": base,
        "sft": sft_dir,
        "pretrain": pretrained.metrics,
        "client": MlflowClient(f"sqlite:///{root}/mlflow.db"),
    }
    mp.undo()


def _tags(client, name):
    (mv,) = client.search_model_versions(f"name = '{name}'")
    return mv.tags


def test_tokenizer_is_the_checkpoints_own_untrained(lifecycle):
    src = (lifecycle["src"] / "tokenizer.json").read_text()
    assert json.loads((lifecycle["tokenizer"] / "tokenizer.json").read_text()) == json.loads(src)


def test_pretraining_continues_from_the_checkpoints_weights(lifecycle):
    assert lifecycle["pretrain"]["steps"] == STEPS
    start = load_file(lifecycle["src"] / "model.safetensors")
    after = load_file(lifecycle["base"] / "model.safetensors")
    key = "model.layers.0.mlp.down_proj.weight"
    drift = (after[key] - start[key]).abs().max().item()
    assert 0 < drift < 0.05  # moved by 3 small steps, not re-initialised (std 0.02)


def test_every_registered_version_names_the_checkpoint(lifecycle):
    record = json.loads((lifecycle["init"] / "checkpoint.json").read_text())
    assert record["origin"] == str(lifecycle["src"]) and record["hash"]
    for name in (MODEL_BASE, MODEL_SFT):
        tags = _tags(lifecycle["client"], name)
        assert tags[TAG_INIT_ORIGIN] == record["origin"], name
        assert tags[TAG_INIT_HASH] == record["hash"], name


def test_zero_steps_registers_the_checkpoint_itself(lifecycle, tmp_path):
    params = tiny_params(
        model={"init": str(lifecycle["src"])} | dict.fromkeys(SHAPE_KEYS),
        pretrain={"max_steps": 0},
    )
    out = tmp_path / "base"
    paths = pretrain.Paths(
        data=lifecycle["packed"],
        tokenizer=lifecycle["tokenizer"],
        init=lifecycle["init"],
        params_file=tmp_path / "unused.yaml",
        checkpoints=tmp_path / "ckpt",
        out=out,
        history=tmp_path / "h.csv",
        plot=tmp_path / "p.png",
        metrics=tmp_path / "m.json",
    )
    result = _stage("pretrain", pretrain, params, paths)
    assert result.metrics["steps"] == 0
    start = load_file(lifecycle["src"] / "model.safetensors")
    assert all(torch.equal(v, load_file(out / "model.safetensors")[k]) for k, v in start.items())
    # No DeepSpeed launch, yet every output dvc.yaml declares exists (DVC fails the stage else).
    assert not any((tmp_path / "ckpt").iterdir())
    assert (tmp_path / "h.csv").read_text().startswith("step,") and (tmp_path / "p.png").is_file()


@pytest.mark.slow  # the llm-compressor worker: 15-35 s on 2 shared cores
def test_quantize_picks_a_group_size_and_keeps_the_lineage(lifecycle, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{lifecycle['root']}/mlflow.db")
    params = tiny_params(
        quantize={
            "calibration_samples": 4,
            "compare_rows": 4,
            "variants": QuantizeVariants(int4=QuantizeVariant(scheme="W4A16", group_size="auto")),
        }
    )
    paths = quantize.Paths(
        policy=lifecycle["sft"],
        packed=lifecycle["packed"],
        int8=tmp_path / "int8",
        int4=tmp_path / "int4",
        metrics=tmp_path / "m.json",
    )
    result = _stage("quantize", quantize, params, paths)
    assert result.metrics["int4.group_size"] == 64  # 64 and 128 wide inputs: 128 does not divide 64
    tags = _tags(lifecycle["client"], MODEL_POLICY_INT4)
    assert tags[TAG_INIT_ORIGIN] == str(lifecycle["src"])


def test_a_checkpoint_given_chatml_tokens_grows_its_embeddings(tmp_path):
    """A checkpoint without a chat template gets ChatML's tokens (tokenizer stage); the ranks
    build its model with embeddings for them, the checkpoint's own rows unchanged."""
    src = tmp_path / "pretrained"
    plain = plain_tokenizer(None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(llama_config_for(plain), dtype=torch.float32)
    model.save_pretrained(src)
    plain.save_pretrained(src)
    params = tiny_params(model={"init": str(src)} | dict.fromkeys(SHAPE_KEYS))
    init = tmp_path / "init"
    materialise.materialise(str(src), init, ROOT)
    tokenizer = adopt_tokenizer(init)
    ds_config = {"zero_optimization": {"stage": 0}}
    grown = pretrain_worker.build_model(
        pretrain_worker.Reads.narrow(params), tokenizer, ds_config, init
    )
    assert grown.get_input_embeddings().num_embeddings == len(plain) + 2 == len(tokenizer)
    before = model.get_input_embeddings().weight
    assert torch.equal(grown.get_input_embeddings().weight[: len(plain)], before)


def llama_config_for(tokenizer) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=SHAPE.hidden_size,
        intermediate_size=SHAPE.intermediate_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        eos_token_id=tokenizer.eos_token_id,
    )
