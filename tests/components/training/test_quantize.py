import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from pydantic import ValidationError
from safetensors import safe_open

from components.config import ModelParams, QuantizeVariant, QuantizeVariants, load_params
from components.constants import (
    ENV_PROJECT_DIR,
    ENV_QUANTIZE_PYTHON,
    MODEL_POLICY,
    MODEL_POLICY_INT4,
    MODEL_POLICY_INT8,
    REGISTRY_RECORD,
)
from components.evaluation import evaluate
from components.modeling.generate import generate_greedy, user_turns
from components.modeling.io import is_quantized, load_for_inference
from components.modeling.llama import build_model, llama_config
from components.tokenizer.train import train_tokenizer
from components.tracking.stage_run import stage_run
from components.training import quantize
from flows.params_overlay import apply_profile
from tests.helpers import ROOT, project_params, stage_view

# Dims that every default variant takes once int4's group size is 32 (smoke does the same).
TINY = ModelParams(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    rope_theta=10000,
    max_position_embeddings=128,
)
INT4_32 = QuantizeVariant(scheme="W4A16", group_size=32)
VARIANTS = {"int8": QuantizeVariant(scheme="W8A8"), "int4": INT4_32}


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"the fox {i} jumps over {i * 7} dogs; what is {i} + {i % 9}?" for i in range(300)]
    return train_tokenizer([texts], vocab_size=400, min_frequency=1)


def config_of(tokenizer, **dims):
    return llama_config(TINY.model_copy(update=dims), tokenizer)


# --- shapes are refused before quantizing, with the rule and the layer -----------------------


def test_int4_group_size_must_divide_every_in_features(tokenizer):
    config = config_of(tokenizer, hidden_size=128, intermediate_size=344, num_attention_heads=4)
    with pytest.raises(quantize.ShapeRefused) as err:
        quantize.check_shapes(
            config, {"int4": QuantizeVariant(scheme="W4A16", group_size=128)}, "p"
        )
    msg = str(err.value)
    assert "quantize.variants.int4 (W4A16) needs in_features % group_size (128) == 0" in msg
    assert "model.layers.0.mlp.down_proj (128 x 344)" in msg
    assert "q_proj" not in msg  # 128 input columns: fine
    assert "intermediate_size" in msg  # says what to change


def test_int4_dims_must_suit_the_cpu_kernel(tokenizer):
    # 336 = 16 * 21: group size 16 would divide it, but vLLM's CPU int4 kernel needs 32.
    config = config_of(tokenizer, intermediate_size=336)
    with pytest.raises(
        quantize.ShapeRefused, match=r"out_features % 32 == 0.*up_proj \(336 x 64\)"
    ):
        quantize.check_shapes(config, {"int4": INT4_32}, "p")


def test_int8_takes_any_shape_and_lm_head_is_not_checked(tokenizer):
    config = config_of(tokenizer, intermediate_size=344)
    quantize.check_shapes(config, {"int8": QuantizeVariant(scheme="W8A8")}, "p")
    shapes = quantize.linear_shapes(config)
    assert "lm_head" not in shapes  # vocab 400 is no multiple of 32, and it is not quantized
    assert shapes["model.layers.0.mlp.down_proj"] == (64, 344)


@pytest.mark.parametrize("profile", ["demo", "smoke", "cluster"])
def test_every_profile_takes_the_default_variants(profile, tokenizer, tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text((ROOT / "params.yaml").read_text())
    if profile != "demo":
        apply_profile(profile, params_file)
    params = load_params(params_file)
    v = params.quantize.variants
    quantize.check_shapes(
        llama_config(params.model, tokenizer), {"int8": v.int8, "int4": v.int4}, profile
    )


def test_auto_group_size_divides_a_checkpoints_dims_or_the_layers_are_named(tokenizer):
    # SmolLM2-135M's shape, on the meta device: 576-wide inputs take 64, not 128.
    smollm2 = dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9)
    auto = {"int4": QuantizeVariant(scheme="W4A16", group_size="auto")}
    resolved = quantize.check_shapes(
        config_of(tokenizer, **smollm2, num_hidden_layers=1), auto, "p"
    )
    assert resolved["int4"].group_size == 64
    # 344 inputs: no vLLM group size divides them, so auto is refused with the layer named.
    with pytest.raises(quantize.ShapeRefused, match=r"down_proj \(64 x 344\)"):
        quantize.check_shapes(config_of(tokenizer, intermediate_size=344), auto, "p")


def test_schema_ties_group_size_and_bits_to_the_scheme():
    with pytest.raises(ValidationError, match="W4A16 needs group_size auto or in"):
        QuantizeVariant(scheme="W4A16")
    with pytest.raises(ValidationError, match="drop group_size"):
        QuantizeVariant(scheme="W8A8", group_size=128)
    with pytest.raises(ValidationError, match="int8 must use a 8-bit weight scheme"):
        QuantizeVariants(int8=INT4_32)


def test_missing_quantize_env_names_make_setup(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_QUANTIZE_PYTHON, str(tmp_path / "nope" / "python"))
    with pytest.raises(FileNotFoundError, match="make setup"):
        quantize.quantize_python()


# --- the real worker: llm-compressor in .venv-quantize (slow: its imports alone take ~7 s) ---


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama saved the way the align stage saves the policy, with its record."""
    torch.manual_seed(0)
    model = build_model(TINY, tokenizer)
    out = tmp_path_factory.mktemp("policy")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / REGISTRY_RECORD).write_text(json.dumps({"name": MODEL_POLICY, "version": "3"}))
    return out


@pytest.fixture(scope="module")
def packed_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("packed")
    rng = np.random.default_rng(0)
    np.save(out / "train.npy", rng.integers(0, 400, (40, 32), dtype=np.uint16))
    np.save(out / "val.npy", rng.integers(0, 400, (8, 32), dtype=np.uint16))
    return out


@pytest.fixture(scope="module")
def quantized(policy_dir, packed_dir, tmp_path_factory):
    """The stage run once (one worker process for both variants, ~15 s on 2 cores)."""
    quantize.quantize_python()  # a missing env fails here, naming `make setup`
    root = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    # Module scope: the autouse per-test fixtures (project dir, MLflow store) are set up here.
    mp.setenv(ENV_PROJECT_DIR, str(ROOT))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    (root / "models" / "policy-int8").mkdir(parents=True)
    (root / "models" / "policy-int8" / "stale.txt").write_text("from a previous run")
    paths = quantize.Paths(
        policy=policy_dir,
        packed=packed_dir,
        int8=root / "models" / "policy-int8",
        int4=root / "models" / "policy-int4",
        metrics=root / "quantize.json",
    )
    params = project_params(
        quantize={
            "calibration_samples": 8,
            "compare_rows": 8,
            "variants": QuantizeVariants(int4=INT4_32),
        }
    )
    with stage_run("quantize", stage_view("quantize", params)) as tracker:
        result = quantize.run(tracker.params, paths, tracker)
    yield paths, result.metrics, f"sqlite:///{root}/mlflow.db"
    mp.undo()


def _dtypes(model_dir: Path) -> dict[str, str]:
    with safe_open(model_dir / "model.safetensors", "pt") as st:
        return {k: st.get_slice(k).get_dtype() for k in st.keys()}  # noqa: SIM118


@pytest.mark.slow  # the llm-compressor worker: 15-35 s on 2 shared cores
def test_run_writes_compressed_tensors_that_reload_close_to_fp(quantized):
    paths, m, _ = quantized
    int8, int4 = _dtypes(paths.int8), _dtypes(paths.int4)
    assert int8["model.layers.0.mlp.down_proj.weight"] == "I8"
    assert int8["model.layers.0.mlp.down_proj.weight_scale"] == "F32"
    assert int4["model.layers.0.mlp.down_proj.weight_packed"] == "I32"  # 8 int4 per int32
    assert not any(k.startswith("lm_head") for k in int8)  # tied to the fp32 embedding
    for d in (paths.int8, paths.int4):
        assert json.loads((d / "config.json").read_text())["quantization_config"]["ignore"] == [
            "lm_head"
        ]
        assert is_quantized(d)
    assert not is_quantized(paths.policy)

    # Embedding (fp32, 400 x 64) dominates the tiny model: int4 is smaller than int8, both < fp.
    assert 0 < m["int4.size_ratio"] < m["int8.size_ratio"] < 0.9
    assert abs(m["int8.perplexity_change"]) < 0.01
    assert abs(m["int4.perplexity_change"]) < 0.05
    assert m["int8.top1_agreement"] > 0.9
    assert m["int4.top1_agreement"] > 0.7
    assert m["int8.perplexity"] != m["fp.perplexity"]  # it really is quantized

    # What the evaluate stage does with them: perplexity and greedy generation, in process.
    val = np.load(paths.packed / "val.npy")
    for name, d in (("int8", paths.int8), ("int4", paths.int4)):
        model, tok = load_for_inference(d)
        assert evaluate.perplexity(model, val, batch_size=8) == pytest.approx(
            m[f"{name}.perplexity"], rel=1e-4
        )
        [text] = generate_greedy(model, tok, user_turns(["what is 2 + 3?"]), max_new_tokens=4)
        assert isinstance(text, str)


@pytest.mark.slow  # the llm-compressor worker: 15-35 s on 2 shared cores
def test_run_replaces_outputs_and_registers_with_lineage(quantized):
    paths, _, tracking_uri = quantized
    assert not (paths.int8 / "stale.txt").exists()
    assert sorted(p.name for p in paths.int8.parent.iterdir()) == ["policy-int4", "policy-int8"]
    for out, name in ((paths.int8, MODEL_POLICY_INT8), (paths.int4, MODEL_POLICY_INT4)):
        record = json.loads((out / REGISTRY_RECORD).read_text())
        assert record["name"] == name
        mv = MlflowClient(tracking_uri, tracking_uri).get_model_version(name, record["version"])
        assert mv.tags["parent_model"] == f"{MODEL_POLICY}/3"
        assert mv.tags["stage"] == "quantize"


@pytest.mark.slow  # the llm-compressor worker: 15-35 s on 2 shared cores
def test_missing_tensor_is_refused(quantized, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    paths, _, _ = quantized
    broken = shutil.copytree(paths.int4, tmp_path / "int4")
    state = load_file(broken / "model.safetensors")
    del state["model.layers.0.mlp.up_proj.weight_packed"]
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks 1 tensors.*up_proj\.weight_packed"):
        load_for_inference(broken)


def test_stage_refuses_shapes_before_starting_the_worker(
    tokenizer, packed_dir, tmp_path, monkeypatch
):
    torch.manual_seed(0)
    policy = tmp_path / "policy"
    build_model(TINY.model_copy(update={"intermediate_size": 96}), tokenizer).save_pretrained(
        policy
    )
    monkeypatch.setenv(ENV_QUANTIZE_PYTHON, str(tmp_path / "no-env" / "python"))  # never reached
    paths = quantize.Paths(
        policy=policy,
        packed=packed_dir,
        int8=tmp_path / "int8",
        int4=tmp_path / "int4",
        metrics=tmp_path / "m.json",
    )
    params = stage_view("quantize", project_params())  # int4 group size 128 > hidden 64
    with pytest.raises(quantize.ShapeRefused, match=r"group_size \(128\)"):
        quantize.run(params, paths, tracker=None)
    assert not paths.int8.exists() and not paths.int4.exists()


@pytest.mark.slow  # starts vLLM twice: minutes on CPU
@pytest.mark.parametrize("name", ["int8", "int4"])
def test_vllm_serves_each_variant(quantized, name):
    from bench.quantize import SERVE_DTYPE, serve_check

    paths, _, _ = quantized
    result = serve_check(getattr(paths, name), SERVE_DTYPE[name], port=8190)
    assert result["serves"], result
    assert isinstance(result["completion"], str)
