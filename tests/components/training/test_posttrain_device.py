"""Where sft, reward and align run: `posttrain.device` / `precision` resolved to this machine,
bf16 switchable on CPU too, and the DeepSpeed config for several GPUs from pretraining's
generator (HF's own DeepSpeed integration fills its `auto` values)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

from components.config import PostTrainParams
from components.training import sft
from components.training.ds_config import deepspeed_config, trainer_deepspeed_config
from components.training.trainer_common import trainer_kwargs
from tests.components.training.tiny import save_base_model, sft_rows, tiny_params, write_jsonl


def test_auto_runs_on_this_cpu_in_fp32_without_deepspeed(tmp_path, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # one process: no DeepSpeed
    kw = trainer_kwargs(tmp_path, 0, PostTrainParams())
    assert kw["use_cpu"] is True and kw["bf16"] is False and "deepspeed" not in kw
    with pytest.raises(RuntimeError, match="device: cuda but torch sees no GPU"):
        trainer_kwargs(tmp_path, 0, PostTrainParams(device="cuda"))


def test_the_trainer_deepspeed_config_shares_pretrainings_zero_section():
    post = PostTrainParams()
    ds = trainer_deepspeed_config(post, "cuda")
    pre = deepspeed_config(tiny_params().pretrain, 8, "cuda", zero_stage=3)["zero_optimization"]
    assert ds["zero_optimization"] == {k: v for k, v in pre.items() if k in ds["zero_optimization"]}
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] is True
    assert ds["train_micro_batch_size_per_gpu"] == "auto"


def test_hf_fills_the_auto_values_from_the_stage_config(tmp_path):
    params = tiny_params()
    args = sft.sft_config(params.sft, tmp_path, params.seed, PostTrainParams(device="cpu"))
    hf = HfTrainerDeepSpeedConfig(trainer_deepspeed_config(PostTrainParams(), "cuda"))
    hf.trainer_config_process(args)
    assert hf.config["train_micro_batch_size_per_gpu"] == params.sft.batch_size
    assert hf.config["gradient_clipping"] == args.max_grad_norm


def test_sft_trains_a_step_in_bf16_on_the_cpu(tmp_path):
    base = save_base_model(tmp_path / "base")
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(8))
    params = tiny_params(sft={"max_examples": 4, "batch_size": 4})
    posttrain = PostTrainParams(device="cpu", precision="bf16")
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    dataset = sft.load_examples(data, params.sft.max_examples, params.seed)
    trainer = sft.build_trainer(
        model, tokenizer, dataset, params.sft, tmp_path / "s", params.seed, posttrain=posttrain
    )
    assert trainer.args.bf16 is True and trainer.args.use_cpu is True
    trainer.train()
    assert trainer.state.global_step == 1
    # bf16 autocast over fp32 master weights: the weights the stage saves stay fp32.
    assert next(trainer.model.parameters()).dtype == torch.float32
