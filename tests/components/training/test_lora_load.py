"""QLoRA's NF4 base loaded for where it trains: today's fp32 CPU load, bf16 compute on this
process's GPU, bf16 quant storage and no device_map under ZeRO-3 ranks (PEFT's recipe); the
kwargs are built without a GPU, the CPU load is run."""

from __future__ import annotations

import pytest
import torch

from components.config import LoraParams, PostTrainParams
from components.training.lora_load import load_trainable, qlora_load_kwargs
from tests.components.training.tiny import save_base_model

QLORA = LoraParams(
    enabled=True, qlora=True, r=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj")
)


def nf4_fields(kwargs: dict) -> tuple[torch.dtype, torch.dtype]:
    q = kwargs["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    return q.bnb_4bit_compute_dtype, q.bnb_4bit_quant_storage


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("world_size", [1, 2])
def test_cpu_keeps_fp32_compute_on_the_cpu_whatever_the_precision(precision, world_size):
    kw = qlora_load_kwargs("cpu", precision, world_size, 0)
    assert nf4_fields(kw) == (torch.float32, torch.uint8)
    assert kw["dtype"] == torch.float32 and kw["device_map"] == "cpu"


def test_one_gpu_process_computes_in_bf16_on_its_gpu():
    kw = qlora_load_kwargs("cuda", "bf16", 1, 3)
    assert nf4_fields(kw) == (torch.bfloat16, torch.uint8)
    assert kw["device_map"] == {"": 3}  # the Trainer does not move a 4-bit model
    assert kw["dtype"] == torch.float32  # unquantised norms/head: fp32, as kbit prep casts them
    assert nf4_fields(qlora_load_kwargs("cuda", "fp32", 1, 0))[0] == torch.float32


def test_zero3_ranks_pack_nf4_in_the_compute_dtype_without_a_device_map():
    kw = qlora_load_kwargs("cuda", "bf16", 4, 1, zero_stage=3)
    assert nf4_fields(kw) == (torch.bfloat16, torch.bfloat16)
    assert kw["dtype"] == torch.bfloat16  # the model's dtype is the quant storage (PEFT's guide)
    assert "device_map" not in kw


def test_replicated_ranks_load_like_one_process_on_their_gpu():
    kw = qlora_load_kwargs("cuda", "bf16", 4, 2, zero_stage=2)
    assert nf4_fields(kw) == (torch.bfloat16, torch.uint8) and kw["device_map"] == {"": 2}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return save_base_model(tmp_path_factory.mktemp("base"))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_checkpointing_follows_posttrain(base_dir, monkeypatch, checkpointing):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    posttrain = PostTrainParams(device="cpu", gradient_checkpointing=checkpointing)
    model = load_trainable(base_dir, QLORA, posttrain=posttrain)
    assert model.is_gradient_checkpointing is checkpointing
    q_proj = model.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == "Linear4bit" and q_proj.compute_dtype == torch.float32
    assert model.model.norm.weight.dtype == torch.float32
    assert not any(p.requires_grad for p in model.parameters())  # the adapters are added later
