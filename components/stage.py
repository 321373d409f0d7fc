"""The stage contract.

A stage is one module in `components/` with:
- `Reads`, a `StageParams` listing the params.yaml sections it reads (its only view of them);
- `Paths`, a frozen dataclass of the paths it reads and writes (filled from `dvc.yaml`, where
  paths live), always including `metrics` (the DVC metrics JSON);
- a pure-ish entry point `run(params: Reads, paths: Paths, tracker) -> StageResult`.

`llmops stage NAME key=path ...` builds the paths, narrows the params to `Reads`, opens the
stage's MLflow run, calls `run`, and writes `StageResult.metrics` through the one metrics
interface (DVC JSON + MLflow, same keys). `llmops dag` keeps dvc.yaml's `params:` and code
`deps:` equal to `Reads` and the stage's import closure.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Final

from components.config import Params, StageParams

Metrics = dict[str, float | int | str]


@dataclass(frozen=True)
class StageResult:
    metrics: Metrics
    # Extra MLflow-only values (not DVC metrics): e.g. the number of quarantined documents by
    # reason when the reason set is open-ended.
    notes: dict[str, Any] = field(default_factory=dict)


# Stage name -> the module that defines its `Reads`, `Paths` and `run`. Not the DAG: the order
# and the edges come from dvc.yaml's deps and outs (flows/dvc_stage.py reads them from DVC).
STAGE_MODULES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "align": "components.training.align",
        "checkpoint": "components.modeling.materialise",
        "curate": "components.data.curate",
        "deploy": "components.serving.deploy",
        "evaluate": "components.evaluation.evaluate",
        "ingest": "components.data.ingest",
        "judge": "components.evaluation.pairwise",
        "mix": "components.data.mix",
        "pack": "components.data.pack",
        "pretrain": "components.training.pretrain",
        "promote": "components.registry.promote",
        "quantize": "components.training.quantize",
        "report": "components.evaluation.report",
        "reward": "components.training.reward",
        "safety": "components.evaluation.safety",
        "sft": "components.training.sft",
        "tasks": "components.data.tasks",
        "tokenizer": "components.tokenizer.train",
        "validate_curated": "components.data.validate_curated",
        "validate_packed": "components.data.validate_packed",
        "validate_raw": "components.data.validate",
    }
)
STAGE_NAMES: Final = tuple(STAGE_MODULES)


def stage_module(name: str) -> ModuleType:
    """The stage's module: `Reads` (params sections), `Paths` (from dvc.yaml) and `run`."""
    if name not in STAGE_MODULES:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")
    return importlib.import_module(STAGE_MODULES[name])


def stage_reads(name: str) -> type[StageParams]:
    return stage_module(name).Reads


def build_paths(paths_cls: type, given: Mapping[str, str]) -> Any:
    """Fill a stage's Paths dataclass from `key=path` arguments, naming missing/unknown keys."""
    fields = {f.name for f in dataclasses.fields(paths_cls)}
    unknown = sorted(set(given) - fields)
    missing = sorted(fields - set(given))
    if unknown or missing:
        raise ValueError(
            f"{paths_cls.__module__}: "
            + (f"unknown path keys {unknown}; " if unknown else "")
            + (f"missing path keys {missing}; " if missing else "")
            + f"expected exactly {sorted(fields)}"
        )
    return paths_cls(**{k: Path(v) for k, v in given.items()})


def run_stage(
    name: str, params: Params, path_args: Mapping[str, str], params_file: Path | None = None
) -> StageResult:
    """Run one stage on its declared params (read from `params_file`, by default the project's
    params.yaml) inside its MLflow run; write its metrics (DVC + MLflow)."""
    from components.tracking.stage_run import stage_run

    module = stage_module(name)
    paths = build_paths(module.Paths, path_args)
    reads = module.Reads.narrow(params)
    with stage_run(name, reads, profile=params.profile, params_file=params_file) as tracker:
        result = module.run(reads, paths, tracker)
        tracker.write_metrics(paths.metrics, result.metrics)
        if result.notes:
            tracker.log_dict(result.notes, "notes.json")
    return result
