"""mix stage: the training mixture, LLaMA-style — each group (source or language) gets its
requested share of the data by repeating it (epochs > 1) or sampling it down (epochs < 1).

Sizes are measured in UTF-8 bytes here, before a tokenizer exists; the pack stage reports the
realised *token* shares next to the requested ones, and the validate_packed gate bounds the gap.
Repeated documents get ids `<id>@<k>` so the pack stage keeps all copies on one side of the
train/validation split. Output order is a seeded shuffle, so sources interleave in the stream.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from components.atomic import atomic_dir
from components.config import MixParams, StageParams
from components.data.corpus_layout import COPY_SEP, MIXTURE_FILE, group_of
from components.data.documents import DOCS_FILE, Doc, read_docs, write_docs
from components.stage import StageResult
from components.tracking.stage_run import Tracker


class Reads(StageParams):
    seed: int
    mix: MixParams


@dataclass(frozen=True)
class Paths:
    docs: Path  # curated directory
    out: Path  # mixed directory: docs.parquet + mixture.json
    metrics: Path


@dataclass(frozen=True)
class GroupPlan:
    docs: int
    bytes: int
    requested_share: float
    epochs: float


def _order(key: str, seed: int) -> str:
    return hashlib.sha1(f"{seed}:{key}".encode()).hexdigest()


def plan_mixture(
    sizes: dict[str, int], counts: dict[str, int], cfg: MixParams
) -> dict[str, GroupPlan]:
    """Epochs per group so that group shares of the (unchanged) total match the weights."""
    if cfg.weights:
        missing, unknown = (
            sorted(set(sizes) - set(cfg.weights)),
            sorted(set(cfg.weights) - set(sizes)),
        )
        if missing or unknown:
            raise ValueError(
                f"mix.weights must name exactly the {cfg.by} groups in the data "
                f"{sorted(sizes)}: missing {missing}, not in the data {unknown}. "
                "Set them (llmops params set 'mix.weights={a: 0.7, b: 0.3}'), or "
                "'mix.weights={}' for the corpus proportions"
            )
    weights = cfg.weights or sizes
    total_weight, total = sum(weights.values()), sum(sizes.values())
    plans = {}
    for group, size in sorted(sizes.items()):
        share = weights[group] / total_weight
        epochs = share * total / size
        if epochs > cfg.max_epochs:
            raise ValueError(
                f"mix: group {group!r} would be repeated {epochs:.1f} times to reach a share of "
                f"{share:.2f} (mix.max_epochs {cfg.max_epochs}); lower its weight or add data"
            )
        plans[group] = GroupPlan(counts[group], size, round(share, 6), round(epochs, 6))
    return plans


def sample_group(docs: list[Doc], epochs: float, seed: int) -> list[Doc]:
    """`floor(epochs)` full passes plus a seeded sample of the remaining fraction (by bytes)."""
    full, fraction = int(epochs), epochs - int(epochs)
    out = [
        d if k == 0 else replace(d, id=f"{d.id}{COPY_SEP}{k}") for k in range(full) for d in docs
    ]
    budget = fraction * sum(len(d.text.encode()) for d in docs)
    for d in sorted(docs, key=lambda d: _order(d.id, seed)):
        if budget <= 0:
            break
        out.append(d if full == 0 else replace(d, id=f"{d.id}{COPY_SEP}{full}"))
        budget -= len(d.text.encode())
    return out


def mix(docs: list[Doc], cfg: MixParams, seed: int) -> tuple[list[Doc], dict[str, GroupPlan]]:
    groups: dict[str, list[Doc]] = defaultdict(list)
    for d in docs:
        groups[group_of(d, cfg.by)].append(d)
    sizes = {g: sum(len(d.text.encode()) for d in ds) for g, ds in groups.items()}
    plans = plan_mixture(sizes, {g: len(ds) for g, ds in groups.items()}, cfg)
    mixed = [d for g, ds in sorted(groups.items()) for d in sample_group(ds, plans[g].epochs, seed)]
    return sorted(mixed, key=lambda d: _order(d.id, seed)), plans


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.mix
    docs = read_docs(paths.docs / DOCS_FILE)
    mixed, plans = mix(docs, cfg, params.seed)
    realised: dict[str, int] = defaultdict(int)
    for d in mixed:
        realised[group_of(d, cfg.by)] += len(d.text.encode())
    total = sum(realised.values())
    report = {
        "by": cfg.by,
        "groups": {
            g: {
                **p.__dict__,
                "mixed_bytes": realised[g],
                "realised_byte_share": round(realised[g] / total, 6),
            }
            for g, p in plans.items()
        },
    }
    with atomic_dir(paths.out) as out:
        write_docs(mixed, out / DOCS_FILE)
        (out / MIXTURE_FILE).write_text(json.dumps(report, indent=2) + "\n")
    tracker.log_dict(report, MIXTURE_FILE)
    metrics: dict = {"docs_in": len(docs), "docs_out": len(mixed), "bytes_out": total}
    for g, p in plans.items():
        metrics[f"requested_share.{g}"] = p.requested_share
        metrics[f"epochs.{g}"] = p.epochs
        metrics[f"byte_share.{g}"] = round(realised[g] / total, 4)
    return StageResult(metrics=metrics)
