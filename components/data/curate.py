"""curate stage: ingested documents → the refinery (components/data/refinery.py) → curated.

Long documents are first cut into chunks of at most `max_chars_per_doc`; the refinery's
per-document passes run on the engine named in `curate.engine` (in-process, or Dask).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from components.atomic import atomic_dir
from components.config import CurateParams, StageParams
from components.constants import EVAL_SET_FILES
from components.data.decontam import load_eval_sets
from components.data.documents import (
    DOCS_FILE,
    QUARANTINE_FILE,
    Doc,
    read_docs,
    write_docs,
    write_quarantine,
)
from components.data.engine import open_engine
from components.data.quality_model import load_reference
from components.data.refinery import refine
from components.stage import StageResult
from components.tracking.stage_run import Tracker


class Reads(StageParams):
    seed: int
    curate: CurateParams


@dataclass(frozen=True)
class Paths:
    docs: Path  # ingested directory
    tasks: Path  # task directory holding the eval sets to decontaminate against
    reference: Path  # the quality model's reference sample (JSONL; its `tuning` split)
    out: Path  # curated directory: docs.parquet + quarantine.parquet
    metrics: Path


def _pieces(text: str, max_chars: int) -> Iterator[tuple[str, str]]:
    """(separator, piece) with every piece ≤ max_chars: paragraphs, else lines, else cuts."""
    for para in text.split("\n\n"):
        if len(para) <= max_chars:
            yield "\n\n", para
            continue
        sep = "\n\n"
        for line in para.split("\n"):
            while len(line) > max_chars:
                yield sep, line[:max_chars]
                sep, line = "", line[max_chars:]
            yield sep, line
            sep = "\n"


def split_long(doc: Doc, max_chars: int) -> list[Doc]:
    """Chunks of at most `max_chars`, cut at paragraph boundaries where possible (plays are
    ~150 kB; some licence files are one huge paragraph)."""
    if len(doc.text) <= max_chars:
        return [doc]
    chunks, current = [], ""
    for sep, piece in _pieces(doc.text, max_chars):
        if current and len(current) + len(sep) + len(piece) > max_chars:
            chunks.append(current)
            current = piece
        else:
            current = current + sep + piece if current else piece
    if current:
        chunks.append(current)
    return [replace(doc, id=f"{doc.id}-{i}", text=text) for i, text in enumerate(chunks)]


def quality_by_source(kept: list[Doc]) -> dict[str, float]:
    """The quality model's score distribution per source, as deciles of what was kept."""
    out: dict[str, float] = {}
    for source in sorted({d.source for d in kept}):
        scores = [d.quality for d in kept if d.source == source and d.quality is not None]
        if scores:
            for q in (10, 50, 90):
                out[f"quality.p{q}.{source}"] = round(float(np.percentile(scores, q)), 4)
    return out


def run(params: Reads, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.curate
    docs = read_docs(paths.docs / DOCS_FILE)
    chunks = [c for d in docs for c in split_long(d, cfg.max_chars_per_doc)]
    eval_sets = load_eval_sets([paths.tasks / name for name in EVAL_SET_FILES])
    with open_engine(cfg.engine) as engine:
        workers = engine.workers
        kept, rejected, stats = refine(
            chunks,
            cfg,
            eval_sets,
            seed=params.seed,
            engine=engine,
            reference=load_reference(paths.reference),
        )
    if not kept:
        raise ValueError("curation rejected every document; loosen params.curate")
    with atomic_dir(paths.out) as out:
        write_docs(kept, out / DOCS_FILE)
        write_quarantine(rejected, out / QUARANTINE_FILE)
    metrics: dict = {
        "docs_in": len(chunks),
        "engine_workers": workers,
        "docs_kept": len(kept),
        "docs_dropped": len(rejected),
        "chars_kept": sum(len(d.text) for d in kept),
        **stats,
    }
    metrics.update({f"kept.{s}": n for s, n in sorted(Counter(d.source for d in kept).items())})
    metrics.update(quality_by_source(kept))
    metrics.update(
        {
            f"kept_lang.{lang}": n
            for lang, n in sorted(Counter(d.lang for d in kept).items())
            if lang
        }
    )
    return StageResult(metrics=metrics)
