"""`model.init` as the checkpoint stage resolved it (components/modeling/materialise.py): the
record it writes into `models/init`, and the model shape a checkpoint fixes.

The record (`CHECKPOINT_RECORD`) says what was asked for, its kind, where it came from
(`origin`, with a version or commit where one exists) and the content hash of the checkpoint's
files; the lineage tags of every model trained from it repeat origin and hash
(components/tracking/registry.py). Ground floor: read by the tokenizer and pretrain stages and
by the pretraining ranks (so it imports only transformers and the schema).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig, PretrainedConfig

from components.config import SCRATCH, SHAPE_KEYS, ModelParams
from components.constants import CHECKPOINT_RECORD, TAG_INIT_HASH, TAG_INIT_ORIGIN


class CheckpointError(ValueError):
    """`model.init` names no checkpoint that can be loaded; the message says what to fix."""


@dataclass(frozen=True)
class Checkpoint:
    init: str  # model.init as written
    kind: str  # scratch | dir | gguf | hub | registry
    origin: str  # resolved: absolute path, hub id@commit, models:/name/version
    hash: str  # content hash of the materialised directory (record excluded); "" for scratch

    def to_dict(self) -> dict[str, str]:
        return {"init": self.init, "kind": self.kind, "origin": self.origin, "hash": self.hash}

    def tags(self) -> dict[str, str]:
        """Lineage tags of a model trained from this checkpoint."""
        return {TAG_INIT_ORIGIN: self.origin, TAG_INIT_HASH: self.hash}


def read(init_dir: Path) -> Checkpoint:
    """The record the checkpoint stage wrote into `init_dir`."""
    record = Path(init_dir) / CHECKPOINT_RECORD
    if not record.exists():
        raise FileNotFoundError(
            f"{record} is missing: the checkpoint stage has not run; run `dvc repro checkpoint`"
        )
    return Checkpoint(**json.loads(record.read_text()))


def is_scratch(init_dir: Path) -> bool:
    return read(init_dir).kind == SCRATCH


def model_params(model: ModelParams, init_dir: Path) -> ModelParams:
    """`model:` with its shape filled from the checkpoint in `init_dir` (scratch: unchanged).
    A shape key that is set and differs from the checkpoint's is an error."""
    if is_scratch(init_dir):
        return model
    config = AutoConfig.from_pretrained(init_dir)
    check_shape(model, config)
    shape: dict = {k: config_value(config, k) for k in SHAPE_KEYS}
    if config.model_type in ("llama", "mixtral"):
        shape["architecture"] = config.model_type
    return model.model_copy(update=shape)


def config_value(config: PretrainedConfig, key: str) -> object:
    """A shape key's value in a transformers config (v5 keeps rope_theta in rope_parameters)."""
    if key == "rope_theta" and not hasattr(config, key):
        return (getattr(config, "rope_parameters", None) or {}).get(key)
    return getattr(config, key, None)


def check_shape(model: ModelParams, config: PretrainedConfig) -> None:
    wrong = [
        f"model.{k} is {getattr(model, k)} but the checkpoint has {config_value(config, k)}"
        for k in SHAPE_KEYS
        if getattr(model, k) is not None and getattr(model, k) != config_value(config, k)
    ]
    if config.model_type in ("llama", "mixtral") and model.architecture != config.model_type:
        wrong.append(
            f"model.architecture is {model.architecture} but the checkpoint is {config.model_type}"
        )
    if wrong:
        raise CheckpointError(
            f"{'; '.join(wrong)} (model.init {model.init!r}): the shape comes from the "
            "checkpoint, so set these keys to null in params.yaml or to the checkpoint's values"
        )
