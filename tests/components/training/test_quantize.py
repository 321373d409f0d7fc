import json

import pytest
import torch
from mlflow import MlflowClient
from optimum.quanto import QTensor
from safetensors import safe_open

from components.config import ModelParams
from components.constants import MODEL_POLICY, MODEL_POLICY_INT8, REGISTRY_RECORD
from components.modeling.io import is_quantized, load_for_inference
from components.modeling.llama import build_model
from components.tokenizer.train import train_tokenizer
from components.tracking.stage_run import stage_run
from components.training import quantize
from tests.helpers import project_params, stage_view

TINY = ModelParams(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    rope_theta=10000,
    max_position_embeddings=128,
)
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """A tiny random Llama saved the way the align stage saves the policy."""
    texts = [f"the fox {i} jumps over {i * 7} dogs; what is {i} + {i % 9}?" for i in range(300)]
    tokenizer = train_tokenizer([texts], vocab_size=400, min_frequency=1)
    torch.manual_seed(0)
    model = build_model(TINY, tokenizer)
    out = tmp_path_factory.mktemp("policy")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _probe_logits(model):
    ids = torch.arange(40).reshape(2, 20) % 400
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_linear_weights_become_int8_and_reload_matches_fp32(policy_dir, tmp_path):
    fp32, tokenizer = load_for_inference(policy_dir)
    model, _ = load_for_inference(policy_dir)
    qmap = quantize.quantize_model(model, "int8_weight_only")
    assert set(qmap) == {
        f"model.layers.0.{grp}.{n}"
        for grp, names in (("self_attn", LINEARS[:4]), ("mlp", LINEARS[4:]))
        for n in names
    }
    assert "lm_head" not in qmap  # tied to the fp32 embeddings, kept as is
    quantize.save_quantized(model, tokenizer, qmap, "int8_weight_only", tmp_path)

    with safe_open(tmp_path / "model.safetensors", "pt") as st:
        dtypes = {k: st.get_slice(k).get_dtype() for k in st.keys()}  # noqa: SIM118
    assert dtypes["model.layers.0.self_attn.q_proj.weight._data"] == "I8"
    assert dtypes["model.layers.0.mlp.down_proj.weight._scale"] == "F32"
    assert dtypes["model.embed_tokens.weight"] == "F32"
    assert not any(k.endswith("proj.weight") for k in dtypes)  # no float copy of a linear

    assert is_quantized(tmp_path)
    reloaded, _ = load_for_inference(tmp_path)
    assert isinstance(reloaded.model.layers[0].mlp.up_proj.weight, QTensor)
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    ref, got = _probe_logits(fp32), _probe_logits(reloaded)
    assert torch.equal(got, _probe_logits(model))  # disk round trip is exact
    assert (got - ref).abs().max() < 0.02 * ref.abs().max()
    assert (got - ref).abs().max() > 0  # it really is quantized


def test_size_report_counts_int8_linear_weights(policy_dir, tmp_path):
    model, tokenizer = load_for_inference(policy_dir)
    qmap = quantize.quantize_model(model, "int8_weight_only")
    quantize.save_quantized(model, tokenizer, qmap, "int8_weight_only", tmp_path)
    sizes = quantize.size_report(policy_dir, tmp_path, qmap)
    # int8 data plus one fp32 scale per output row: a bit over a quarter of fp32.
    assert 0.25 < sizes["linear_size_ratio"] < 0.6
    assert sizes["size_ratio"] < 1.0


def test_missing_tensor_is_refused(policy_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    model, tokenizer = load_for_inference(policy_dir)
    qmap = quantize.quantize_model(model, "int8_weight_only")
    quantize.save_quantized(model, tokenizer, qmap, "int8_weight_only", tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.layers.0.mlp.up_proj.weight._data"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks 1 tensors.*up_proj\.weight"):
        load_for_inference(tmp_path)


def test_run_writes_dir_atomically_and_registers(policy_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    (policy_dir / REGISTRY_RECORD).write_text(json.dumps({"name": MODEL_POLICY, "version": "3"}))
    out = tmp_path / "models" / "policy-int8"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from a previous run")
    paths = quantize.Paths(policy=policy_dir, out=out, metrics=tmp_path / "quantize.json")
    params = project_params()
    with stage_run("quantize", stage_view("quantize", params)) as tracker:
        result = quantize.run(tracker.params, paths, tracker)

    m = result.metrics
    assert m["quantized_modules"] == 7
    assert m["linear_size_ratio"] < 0.6
    assert m["logit_max_abs_diff"] < 0.02 * m["logit_ref_max_abs"]
    assert m["top1_agreement"] > 0.9
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["policy-int8"]  # no temp dirs left
    assert (
        json.loads((out / "llmops_quantization.json").read_text())["method"] == "int8_weight_only"
    )
    record = json.loads((out / REGISTRY_RECORD).read_text())
    assert record["name"] == MODEL_POLICY_INT8
    mv = MlflowClient().get_model_version(MODEL_POLICY_INT8, record["version"])
    assert mv.tags["parent_model"] == f"{MODEL_POLICY}/3"
    assert mv.tags["stage"] == "quantize"
