"""pretrain's launch, assembled once for the stage and for `llmops launch render`."""

import json

from transformers import LlamaConfig

from components.config import SHAPE_KEYS
from components.constants import CHECKPOINT_RECORD
from components.training.pretrain import assemble_launch
from components.training.pretrain_worker import Reads
from components.training.sizing import zero_stage_for
from tests.helpers import project_params


def _launch(params, tmp_path, init):
    return assemble_launch(
        Reads.narrow(params),
        data=tmp_path / "packed",
        tokenizer=tmp_path / "no-tokenizer-yet",
        init=init,
        params_file=tmp_path / "params.yaml",
        checkpoints=tmp_path / "ckpt",
        out=tmp_path / "base",
        ds_config_path=tmp_path / "ds_config.json",
        device="cpu",
    )


def test_without_a_checkpoint_record_the_launch_sizes_model_as_written(tmp_path):
    params = project_params(pretrain={"zero_stage": "auto"})
    ranks = _launch(params, tmp_path, init=tmp_path / "init")
    assert ranks.params.model == params.model
    assert ranks.stage == zero_stage_for(params, tmp_path / "no-tokenizer-yet", "cpu")
    assert ranks.ds_config["zero_optimization"]["stage"] == ranks.stage.zero_stage
    args = dict(zip(ranks.worker_args[::2], ranks.worker_args[1::2], strict=False))
    assert args["--out"] == str(tmp_path / "base.tmp") == str(ranks.tmp_out)
    assert args["--ds-config"] == str(tmp_path / "ds_config.json")
    assert args["--history"] == str(tmp_path / "ckpt" / "history.jsonl")


def test_a_checkpoint_gives_the_launch_its_shape(tmp_path):
    init = tmp_path / "init"
    LlamaConfig(hidden_size=96, intermediate_size=256, num_hidden_layers=3).save_pretrained(init)
    record = {"init": str(init), "kind": "dir", "origin": str(init), "hash": "h"}
    (init / CHECKPOINT_RECORD).write_text(json.dumps(record))
    params = project_params(model={"init": str(init), **dict.fromkeys(SHAPE_KEYS)})
    ranks = _launch(params, tmp_path, init=init)
    model = ranks.params.model
    assert (model.hidden_size, model.intermediate_size, model.num_hidden_layers) == (96, 256, 3)
