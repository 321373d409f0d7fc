"""The stage contract.

A stage is one module in `components/` with:
- a frozen dataclass of the paths it reads and writes (filled from `dvc.yaml`, where paths live),
  always including `metrics` (the DVC metrics JSON);
- a pure-ish entry point `run(params, paths, tracker) -> StageResult`.

`llmops stage NAME key=path ...` builds the paths, opens the stage's MLflow run, calls `run`, and
writes `StageResult.metrics` through the one metrics interface (DVC JSON + MLflow, same keys).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.config import Params

Metrics = dict[str, float | int | str]


@dataclass(frozen=True)
class StageResult:
    metrics: Metrics
    # Extra MLflow-only values (not DVC metrics): e.g. the number of quarantined documents by
    # reason when the reason set is open-ended.
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str  # "components.data.ingest": defines `Paths` and `run`

    def load(self) -> tuple[type, Callable[..., StageResult]]:
        mod = importlib.import_module(self.module)
        return mod.Paths, mod.run


# The DAG order; dvc.yaml declares the same stages with their deps and outs.
STAGES: tuple[StageSpec, ...] = (
    StageSpec("ingest", "components.data.ingest"),
    StageSpec("validate_raw", "components.data.validate"),
    StageSpec("curate", "components.data.curate"),
    StageSpec("validate_curated", "components.data.validate_curated"),
    StageSpec("mix", "components.data.mix"),
    StageSpec("tokenizer", "components.tokenizer.train"),
    StageSpec("pack", "components.data.pack"),
    StageSpec("validate_packed", "components.data.validate_packed"),
    StageSpec("pretrain", "components.training.pretrain"),
    StageSpec("sft", "components.training.sft"),
    StageSpec("reward", "components.training.reward"),
    StageSpec("align", "components.training.align"),
    StageSpec("quantize", "components.training.quantize"),
    StageSpec("evaluate", "components.evaluation.evaluate"),
    StageSpec("promote", "components.registry.promote"),
    StageSpec("deploy", "components.serving.deploy"),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def get_stage(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")


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


def run_stage(name: str, params: Params, path_args: Mapping[str, str]) -> StageResult:
    """Run one stage inside its MLflow run and write its metrics (DVC + MLflow)."""
    from components.tracking.stage_run import stage_run

    paths_cls, run = get_stage(name).load()
    paths = build_paths(paths_cls, path_args)
    with stage_run(name, params) as tracker:
        result = run(params, paths, tracker)
        tracker.write_metrics(paths.metrics, result.metrics)
        if result.notes:
            tracker.log_dict(result.notes, "notes.json")
    return result
