"""curate stage: split long documents, exact dedup, Gopher heuristics; quarantine with reasons."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from components.config import CurateParams, Params
from components.data.documents import (
    DOCS_FILE,
    QUARANTINE_FILE,
    Doc,
    Rejected,
    read_docs,
    write_docs,
    write_quarantine,
)
from components.data.filters import (
    ExactDedupFilter,
    Filter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from components.data.near_dedup import NearDedupConfig, NearDedupFilter
from components.stage import StageResult
from components.tracking.stage_run import Tracker


@dataclass(frozen=True)
class Paths:
    docs: Path  # ingested directory
    out: Path   # curated directory: docs.parquet + quarantine.parquet
    metrics: Path


def split_long(doc: Doc, max_chars: int) -> list[Doc]:
    """Split at paragraph boundaries into chunks of about `max_chars` (plays are ~150 kB)."""
    if len(doc.text) <= max_chars:
        return [doc]
    chunks, current, size = [], [], 0
    for para in doc.text.split("\n\n"):
        if size + len(para) > max_chars and current:
            chunks.append("\n\n".join(current))
            current, size = [], 0
        current.append(para)
        size += len(para) + 2
    if current:
        chunks.append("\n\n".join(current))
    return [Doc(f"{doc.id}-{i}", text, doc.source) for i, text in enumerate(chunks)]


def build_filters(cfg: CurateParams) -> list[Filter]:
    # Dedup last: a duplicate of a rejected document should be reported as low quality.
    filters: list[Filter] = [
        GopherQualityFilter(cfg.min_words, cfg.max_words, cfg.min_alpha_ratio,
                            cfg.max_symbol_ratio),
        GopherRepetitionFilter(cfg.max_duplicate_line_fraction),
        ExactDedupFilter(),
    ]
    nd = cfg.near_dedup
    if nd.enabled:
        filters.append(NearDedupFilter(NearDedupConfig(ngram=nd.ngram, bands=nd.bands,
                                                       rows=nd.rows, threshold=nd.threshold)))
    return filters


def apply_filters(docs: Iterable[Doc], filters: Sequence[Filter]
                  ) -> tuple[list[Doc], list[Rejected], Counter]:
    kept: list[Doc] = []
    rejected: list[Rejected] = []
    counts: Counter = Counter()
    for doc in docs:
        for f in filters:
            decision = f.filter(doc)
            ok, reason = (decision, "") if isinstance(decision, bool) else decision
            if not ok:
                counts[reason] += 1
                detail = f.detail(doc) if hasattr(f, "detail") else f.name
                rejected.append(Rejected(doc.id, doc.source, doc.id, reason, detail, doc.text))
                break
        else:
            kept.append(doc)
    return kept, rejected, counts


def run(params: Params, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.curate
    docs = read_docs(paths.docs / DOCS_FILE)
    chunks = [c for d in docs for c in split_long(d, cfg.max_chars_per_doc)]
    kept, rejected, counts = apply_filters(tqdm(chunks, desc="curate", unit="doc"),
                                           build_filters(cfg))
    if not kept:
        raise ValueError("curation rejected every document; loosen params.curate")
    paths.out.mkdir(parents=True, exist_ok=True)
    write_docs(kept, paths.out / DOCS_FILE)
    write_quarantine(rejected, paths.out / QUARANTINE_FILE)
    metrics: dict = {
        "docs_in": len(chunks),
        "docs_kept": len(kept),
        "docs_dropped": len(rejected),
        "chars_kept": sum(len(d.text) for d in kept),
    }
    metrics.update({f"dropped.{r}": n for r, n in sorted(counts.items())})
    metrics.update({f"kept.{s}": n for s, n in sorted(Counter(d.source for d in kept).items())})
    return StageResult(metrics=metrics)
