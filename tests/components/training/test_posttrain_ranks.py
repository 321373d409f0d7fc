"""Post-training on several ranks (`posttrain.ranks` > 1): the stage re-launches its training
step with pretraining's launcher, the HF Trainer runs DeepSpeed ZeRO-3 from ds_config.py (on
this machine: DeepSpeed's CPU accelerator over gloo), rank 0 writes the model and the stage
process registers it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

from components.config import PostTrainParams
from components.constants import (
    MODEL_POLICY,
    MODEL_POLICY_ADAPTER,
    MODEL_REWARD,
    MODEL_SFT,
    MODEL_SFT_ADAPTER,
    REGISTRY_RECORD,
)
from components.tracking.stage_run import stage_run
from components.training import align, launch, posttrain_worker, reward, sft
from components.training.ds_config import trainer_deepspeed_config
from components.training.trainer_common import ADAPTER_SUBDIR, trainer_kwargs
from tests.components.training.test_adapters import assert_adapter_on_base_gives_merged_logits
from tests.components.training.tiny import (
    pref_rows,
    save_base_model,
    sft_rows,
    tiny_params,
    write_jsonl,
)
from tests.helpers import stage_view

ROOT = Path(__file__).resolve().parents[3]
RANKED = {"ranks": 2, "device": "cpu", "zero_stage": 3}


def test_the_stage_launches_its_worker_with_pretrainings_launcher(tmp_path):
    cmd = posttrain_worker.launch_command(
        "sft", 2, tmp_path / "req.json", tmp_path / "res.json", master_port=29512
    )
    assert cmd[:4] == [sys.executable, "-m", "deepspeed.launcher.runner", "--num_accelerators"]
    assert cmd[4] == "2"
    at = cmd.index("--module")
    assert cmd[at + 1] == launch.POSTTRAIN_WORKER_MODULE == posttrain_worker.__name__
    assert cmd[at + 2 :] == ["--stage", "sft", "--request", str(tmp_path / "req.json"),
                             "--result", str(tmp_path / "res.json")]  # fmt: skip
    worker = posttrain_worker.parse_args([*cmd[at + 2 :], "--local_rank=1"])
    assert worker.stage == "sft" and worker.local_rank == 1
    env = launch.rank_env(2, on_gpu=False)
    assert env["DS_ACCELERATOR"] == "cpu"  # gloo ranks on DeepSpeed's CPU accelerator


def test_a_launched_rank_gives_the_trainer_pretrainings_zero3_config(tmp_path, monkeypatch):
    posttrain = PostTrainParams(**RANKED)
    assert "deepspeed" not in trainer_kwargs(tmp_path, 0, posttrain)  # the stage process
    monkeypatch.setenv("WORLD_SIZE", "2")  # as the launcher sets it on every rank
    kw = trainer_kwargs(tmp_path, 0, posttrain)
    assert kw["deepspeed"] == trainer_deepspeed_config(posttrain, "cpu")
    assert kw["deepspeed"]["zero_optimization"]["stage"] == 3
    assert kw["use_cpu"] is False  # use_cpu would make the Trainer skip DeepSpeed
    # ... and reuses the DeepSpeed state the rank configured with gloo (configure_cpu_ranks).
    assert kw["accelerator_config"] == {"use_configured_state": True}
    assert HfTrainerDeepSpeedConfig(kw["deepspeed"]).is_zero3()


def test_the_request_round_trips_the_stage_view(tmp_path):
    params = stage_view("sft", tiny_params(posttrain=RANKED))
    paths = sft.Paths(base=tmp_path / "b", data=tmp_path / "d", out=tmp_path / "o",
                      metrics=tmp_path / "m.json")  # fmt: skip
    doc = json.loads(json.dumps(posttrain_worker.request_doc(params, paths, tmp_path / "tmp")))
    assert sft.Reads.model_validate(doc["params"]) == params
    assert sft.Paths(**{k: Path(v) for k, v in doc["paths"].items()}) == paths


# Default tier (no `slow` mark): the one multi-rank post-training test of `make test-quick`.
def test_sft_step_on_two_cpu_ranks_with_zero3(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the ranks import this checkout
    monkeypatch.setenv("TQDM_DISABLE", "1")
    base = save_base_model(tmp_path / "base")
    data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(16))
    # 8 rows, 2 per rank per step: 2 optimizer steps on 2 ranks (one rank would take 4).
    params = tiny_params(posttrain=RANKED, sft={"max_examples": 8, "batch_size": 2, "epochs": 1})
    out = tmp_path / "models" / "sft"
    paths = sft.Paths(base=base, data=data, out=out, metrics=tmp_path / "sft.json")
    segments = f"{launch.SHM_BUFFER_PREFIX}_{os.getuid()}_*"
    before = set(launch.SHM_DIR.glob(segments))
    with stage_run("sft", stage_view("sft", params)) as tracker:
        result = sft.run(tracker.params, paths, tracker)
        run_id = tracker.run_id
    # The CPU ranks' shared-memory all-reduce segments (66 MB each) went with them.
    assert set(launch.SHM_DIR.glob(segments)) <= before

    m = result.metrics
    assert m["ranks"] == 2 and m["zero_stage"] == 3 and m["n_examples"] == 8  # as the engine ran
    assert sorted(p.name for p in out.parent.iterdir()) == ["sft"]  # no temp dirs left
    assert not (out / "training_args.bin").exists()
    # Rank 0's log history reached the stage's MLflow run: 2 steps, so both ranks took data.
    assert [m.step for m in MlflowClient().get_metric_history(run_id, "loss")] == [1, 2]
    record = json.loads((out / REGISTRY_RECORD).read_text())
    assert MlflowClient().get_model_version(MODEL_SFT, record["version"]).tags["stage"] == "sft"

    # The consolidated ZeRO-3 shards load as a full model, and training moved every tensor
    # the loss reaches.
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    assert trained.keys() == before.keys()
    for name, tensor in before.items():
        assert trained[name].shape == tensor.shape, name
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(trained[q], before[q])
    assert torch.isfinite(trained[q]).all()


@pytest.mark.slow
def test_reward_step_on_two_cpu_ranks_with_zero3(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    base = save_base_model(tmp_path / "base")
    train = write_jsonl(tmp_path / "prefs_train.jsonl", pref_rows(16))
    test = write_jsonl(tmp_path / "prefs_test.jsonl", pref_rows(6, offset=100))
    params = tiny_params(posttrain=RANKED, reward={"max_examples": 8, "batch_size": 2})
    out = tmp_path / "models" / "reward"
    paths = reward.Paths(base=base, train=train, test=test, out=out, metrics=tmp_path / "r.json")
    with stage_run("reward", stage_view("reward", params)) as tracker:
        m = reward.run(tracker.params, paths, tracker).metrics

    assert m["ranks"] == 2 and m["zero_stage"] == 3 and m["n_test_pairs"] == 6
    assert 0.0 <= m["test_accuracy"] <= 1.0
    trained = AutoModelForSequenceClassification.from_pretrained(out).state_dict()
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert trained[q].shape == before[q].shape and not torch.equal(trained[q], before[q])
    assert trained["score.weight"].shape[0] == 1  # the scalar head, consolidated


def _align_paths(tmp_path, sft_dir, reward_dir=None):
    return align.Paths(
        sft=sft_dir,
        reward=reward_dir or tmp_path / "unused-reward",
        train=write_jsonl(tmp_path / "prefs_train.jsonl", pref_rows(16)),
        test=write_jsonl(tmp_path / "prefs_test.jsonl", pref_rows(6, offset=100)),
        out=tmp_path / "models" / "policy",
        metrics=tmp_path / "align.json",
    )


def _ranked_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the ranks import this checkout
    monkeypatch.setenv("TQDM_DISABLE", "1")


def _changed(out: Path, base: Path, name: str = "model.layers.0.self_attn.q_proj.weight"):
    trained = AutoModelForCausalLM.from_pretrained(out).state_dict()[name]
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()[name]
    return (
        trained.shape == before.shape
        and torch.isfinite(trained).all()
        and not torch.equal(trained, before)
    )


@pytest.mark.slow
def test_dpo_and_a_compared_method_on_two_cpu_ranks_with_zero3(tmp_path, monkeypatch):
    _ranked_env(tmp_path, monkeypatch)
    sft_dir = save_base_model(tmp_path / "sft")
    paths = _align_paths(tmp_path, sft_dir)
    # 8 pairs, 2 per rank per step: 2 optimizer steps on 2 ranks (one rank would take 4).
    params = tiny_params(
        posttrain=RANKED,
        align={"method": "dpo", "compare": ["ipo"], "max_examples": 8, "batch_size": 2},
    )
    with stage_run("align", stage_view("align", params)) as tracker:
        m = align.run(tracker.params, paths, tracker).metrics
        run_id = tracker.run_id

    assert m["ranks"] == 2 and m["zero_stage"] == 3 and m["n_train_pairs"] == 8
    # The policy the ranks wrote was measured in the stage process, as in one rank.
    assert m["n_test_pairs"] == 6 and 0 <= m["test_accuracy"] <= 1 and m["heldout.kl"] > 0
    assert m["methods.dpo.test_accuracy"] == m["test_accuracy"]
    assert "methods.ipo.test_accuracy" in m and "methods.ipo.train_loss_last" in m
    # Only the served method's steps are the run's step metrics: 2 steps, both ranks took data.
    assert [x.step for x in MlflowClient().get_metric_history(run_id, "loss")] == [1, 2]
    assert sorted(p.name for p in paths.out.parent.iterdir()) == ["policy"]
    assert _changed(paths.out, sft_dir)
    record = json.loads((paths.out / REGISTRY_RECORD).read_text())
    assert (
        MlflowClient().get_model_version(MODEL_POLICY, record["version"]).tags["stage"] == "align"
    )


@pytest.mark.slow
def test_grpo_on_two_cpu_ranks_with_zero3(tmp_path, monkeypatch):
    _ranked_env(tmp_path, monkeypatch)
    sft_dir = save_base_model(tmp_path / "sft")
    # A reward model with a fresh head: rewards vary within a group, so the advantages (and
    # the update) are non-zero even for a random tiny policy that never answers right.
    rm_dir = tmp_path / "reward"
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(
        sft_dir, num_labels=1, pad_token_id=tokenizer.pad_token_id
    ).save_pretrained(rm_dir)
    tokenizer.save_pretrained(rm_dir)
    (rm_dir / REGISTRY_RECORD).write_text(json.dumps({"name": MODEL_REWARD, "version": "5"}))
    paths = _align_paths(tmp_path, sft_dir, rm_dir)
    rl = {"rewards": {"correct": 1.0, "reward_model": 1.0}, "num_generations": 2,
          "max_completion_length": 4, "use_vllm": "off", "eval_max_prompts": 4}  # fmt: skip
    params = tiny_params(
        posttrain=RANKED,
        align={"method": "grpo", "max_examples": 8, "batch_size": 2, "lr": 1e-2, "rl": rl},
    )
    with stage_run("align", stage_view("align", params)) as tracker:
        m = align.run(tracker.params, paths, tracker).metrics

    assert m["ranks"] == 2 and m["zero_stage"] == 3
    assert "train_reward_last" in m and "heldout_after.reward.reward_model" in m
    assert m["n_eval_prompts"] == 4
    assert _changed(paths.out, sft_dir)


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "qlora"), [("sft", False), ("align", False), ("sft", True)])
def test_lora_on_two_cpu_ranks_saves_the_adapter_and_the_merged_model(
    tmp_path, monkeypatch, stage, qlora
):
    """The gathered ZeRO-3 state dict is cut to the adapter by PEFT; the stage process merges
    it onto the base read from disk, so the merged model equals the adapter on its base."""
    _ranked_env(tmp_path, monkeypatch)
    base = save_base_model(tmp_path / "base")
    lora = {"enabled": True, "qlora": qlora, "r": 4, "alpha": 8, "dropout": 0.0}
    section = {"max_examples": 8, "batch_size": 2, "lr": 1e-2, "lora": lora}
    params = tiny_params(posttrain=RANKED, **{stage: section})
    if stage == "sft":
        data = write_jsonl(tmp_path / "sft.jsonl", sft_rows(16))
        paths = sft.Paths(base=base, data=data, out=tmp_path / "models" / "sft",
                          metrics=tmp_path / "sft.json")  # fmt: skip
    else:
        paths = _align_paths(tmp_path, base)
    module, names = (sft, (MODEL_SFT, MODEL_SFT_ADAPTER)) if stage == "sft" else (
        align, (MODEL_POLICY, MODEL_POLICY_ADAPTER))  # fmt: skip
    with stage_run(stage, stage_view(stage, params)) as tracker:
        m = module.run(tracker.params, paths, tracker).metrics

    assert m["ranks"] == 2 and m["zero_stage"] == 3 and m["lora"] == 1
    assert not (paths.out / ADAPTER_SUBDIR).exists()  # moved out, registered on its own
    kind = "qlora" if qlora else "lora"
    assert_adapter_on_base_gives_merged_logits(paths.out, *names, base, kind, tmp_path)
