import pytest
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

from components.training.planner import (
    Cluster,
    ModelShape,
    activation_bytes,
    count_parameters,
    make_plan,
    model_state_bytes,
)
from tests.helpers import project_params

LLAMA2_7B = ModelShape(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_layers=32,
    num_heads=32,
    num_kv_heads=32,
)
A100_8 = Cluster(
    nodes=1, gpus_per_node=8, gpu_memory_gb=80, cpu_memory_gb=1000, peak_tflops=312, mfu=0.4
)


def tiny(**kw) -> ModelShape:
    base = dict(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        tie_embeddings=False,
    )
    return ModelShape(**(base | kw))


@pytest.mark.parametrize("tied", [True, False])
def test_dense_count_matches_transformers(tied):
    shape = tiny(tie_embeddings=tied)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=tied,
        )
    )
    counted = count_parameters(shape)
    assert counted.total == counted.active == sum(p.numel() for p in model.parameters())


def test_moe_count_matches_transformers_and_active_is_top_k():
    shape = tiny(num_experts=4, experts_per_token=2)
    model = MixtralForCausalLM(
        MixtralConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_local_experts=4,
            num_experts_per_tok=2,
            tie_word_embeddings=False,
        )
    )
    counted = count_parameters(shape)
    assert counted.total == sum(p.numel() for p in model.parameters())
    assert counted.active == counted.total - 2 * 2 * 3 * 32 * 48  # 2 idle experts × 2 layers


def test_llama2_7b_is_about_6_7_billion():
    assert count_parameters(LLAMA2_7B).total == pytest.approx(6.74e9, rel=0.01)


def test_7b_model_states_match_the_zero_paper():
    """ZeRO paper: 7.5B params, 64 GPUs → 120 GB baseline; here 7B on 8 GPUs."""
    plan = make_plan(LLAMA2_7B, A100_8, tokens=140e9, seq_len=4096, n_params=7e9)
    assert plan.model_states_total_gb == pytest.approx(112.0)
    by_stage = {(o.zero_stage, o.offload): o for o in plan.options}
    gpu3, _ = model_state_bytes(7e9, 3, 8, "none", "mixed")
    assert gpu3 / 1e9 == pytest.approx(14.0)
    assert model_state_bytes(7e9, 0, 8, "none", "mixed")[0] / 1e9 == pytest.approx(112.0)
    assert model_state_bytes(7e9, 1, 8, "none", "mixed")[0] / 1e9 == pytest.approx(28 + 84 / 8)
    assert model_state_bytes(7e9, 2, 8, "none", "mixed")[0] / 1e9 == pytest.approx(14 + 98 / 8)
    # Stage 0 cannot hold 112 GB on an 80 GB GPU; stage 1 (38.5 GB) can.
    assert not by_stage[(0, "none")].fits
    assert plan.choice is not None and plan.choice.zero_stage == 1
    assert plan.reasons[0].startswith("rejected ZeRO-0")
    assert plan.chinchilla_tokens == pytest.approx(140e9)
    assert plan.tokens_per_parameter == pytest.approx(20.0)
    assert plan.training_flops == pytest.approx(6 * 7e9 * 140e9)
    assert plan.gpu_hours == pytest.approx(6 * 7e9 * 140e9 / (312e12 * 0.4) / 3600, rel=1e-3)


def test_70b_on_two_nodes_needs_zero3():
    shape = ModelShape(
        vocab_size=32000,
        hidden_size=8192,
        intermediate_size=28672,
        num_layers=80,
        num_heads=64,
        num_kv_heads=8,
    )
    cluster = Cluster(
        nodes=2, gpus_per_node=8, gpu_memory_gb=80, cpu_memory_gb=1000, peak_tflops=989, mfu=0.4
    )
    plan = make_plan(shape, cluster, tokens=2e12, seq_len=4096, n_params=70e9)
    assert plan.model_states_total_gb == pytest.approx(1120.0)
    assert plan.choice is not None and plan.choice.zero_stage == 3
    assert model_state_bytes(70e9, 3, 16, "none", "mixed")[0] / 1e9 == pytest.approx(70.0)
    # 70 GB of states + activations exceed 72 GB usable: checkpointing or offload is needed.
    assert plan.choice.activation_checkpointing or plan.choice.offload != "none"


def test_offload_moves_optimizer_states_to_cpu():
    gpu, cpu = model_state_bytes(1e9, 3, 4, "optimizer", "mixed")
    assert gpu == pytest.approx(4e9 / 4) and cpu == pytest.approx(12e9 / 4)
    gpu, cpu = model_state_bytes(1e9, 3, 4, "optimizer_and_params", "mixed")
    assert gpu == pytest.approx(2e9 / 4) and cpu == pytest.approx(14e9 / 4)


def test_checkpointing_shrinks_activations():
    full = activation_bytes(LLAMA2_7B, 4096, 1, checkpointing=False, precision="mixed")
    ckpt = activation_bytes(LLAMA2_7B, 4096, 1, checkpointing=True, precision="mixed")
    eager = activation_bytes(
        LLAMA2_7B, 4096, 1, checkpointing=False, precision="mixed", flash_attention=False
    )
    assert ckpt < full / 5
    # Korthikanti et al.: 34·s·h + 5·a·s²  bytes per layer and sample.
    assert eager - full == pytest.approx(32 * 5 * 32 * 4096 * 4096)


def test_nothing_fits_says_so():
    cluster = Cluster(
        nodes=1, gpus_per_node=1, gpu_memory_gb=1, cpu_memory_gb=1, peak_tflops=1, mfu=0.5
    )
    plan = make_plan(LLAMA2_7B, cluster, tokens=1e9, seq_len=4096)
    assert plan.choice is None and "nothing fits" in plan.reasons[-1]


def test_zero3_states_agree_with_deepspeed_estimate():
    """DeepSpeed counts 18 bytes/param (an extra 16-bit copy) plus the largest layer."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    counted = count_parameters(LLAMA2_7B)
    ours = model_state_bytes(counted.total, 3, 8, "none", "mixed")[0] / 1e9
    _, gpu_bytes, _ = estimate_zero3_model_states_mem_needs(
        int(counted.total),
        counted.largest_layer,
        num_gpus_per_node=A100_8.gpus_per_node,
        num_nodes=A100_8.nodes,
        cpu_offload=False,
        cpu_offload_params=False,
    )
    theirs = gpu_bytes / 1e9
    assert ours == pytest.approx(theirs * 16 / 18, rel=0.05)
    assert ours < theirs


def test_fp32_keeps_a_master_copy_too():
    # DeepSpeed's ZeRO optimizer keeps an fp32 master partition even for fp32 weights.
    assert sum(model_state_bytes(1e6, 0, 1, "none", "fp32")) == pytest.approx(20e6)


# ---- pretrain.zero_stage: auto ---------------------------------------------------------


def auto_stage(cluster: dict, pretrain: dict | None = None, model: dict | None = None):
    from components.training.sizing import zero_stage_for

    params = project_params(
        cluster=cluster, pretrain={"zero_stage": "auto"} | (pretrain or {}), model=model or {}
    )
    return zero_stage_for(params, None, "cpu")


def test_auto_is_zero0_on_one_rank_and_for_small_model_states():
    one = auto_stage({"nodes": 1, "ranks_per_node": 1})
    assert one.zero_stage == 0 and "one rank" in one.reason
    demo = auto_stage({"nodes": 1, "ranks_per_node": 2})  # the demo model: a few MB of states
    assert demo.zero_stage == 0 and "least communication" in demo.reason


def test_auto_partitions_more_as_the_model_outgrows_a_rank():
    # ~1 B parameters in fp32 on CPU: 20 GB of states, more than a 10 GB rank holds unsharded.
    big = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22}
    big |= {"num_attention_heads": 32, "num_key_value_heads": 4}
    small = {"accelerator_memory_gb": 10, "cpu_memory_gb": 1000}
    stages = {
        ranks: auto_stage({"nodes": 1, "ranks_per_node": ranks} | small, model=big).zero_stage
        for ranks in (4, 16)
    }
    assert stages[4] == 3 and 0 < stages[16] <= 3
    none_fits = auto_stage({"nodes": 1, "ranks_per_node": 1} | small, model=big)
    assert none_fits.zero_stage == 3 and "no ZeRO stage fits" in none_fits.reason


def test_offload_limits_auto_to_the_stages_that_support_it():
    opt = auto_stage({"nodes": 1, "ranks_per_node": 1}, pretrain={"offload": "optimizer"})
    assert opt.zero_stage == 1
    both = auto_stage(
        {"nodes": 1, "ranks_per_node": 1}, pretrain={"offload": "optimizer_and_params"}
    )
    assert both.zero_stage == 3


def test_an_explicit_stage_is_kept_and_auto_must_be_resolved_for_deepspeed():
    from components.training.ds_config import deepspeed_config
    from components.training.sizing import zero_stage_for

    params = project_params(pretrain={"zero_stage": 2}, cluster={"nodes": 1, "ranks_per_node": 1})
    assert zero_stage_for(params, None, "cpu").zero_stage == 2
    auto = project_params(pretrain={"zero_stage": "auto"}).pretrain
    with pytest.raises(ValueError, match="zero_stage is auto"):
        deepspeed_config(auto, 2, "cpu")
    assert deepspeed_config(auto, 2, "cpu", zero_stage=0)["zero_optimization"]["stage"] == 0
