"""curate stage: the data refinery, a plain list of blocks in the datatrove shape.

split long documents → language ID → Gopher quality → Gopher repetition → C4 → FineWeb
→ toxicity → quality model (trained here on what the heuristics kept vs rejected)
→ PII redaction (a transform) → decontamination against the eval sets → exact dedup
→ near dedup. Every dropped document goes to the quarantine with the block's reason code and a
detail; every reason is a counter in the metrics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from components.atomic import atomic_dir
from components.config import CurateParams, Params
from components.constants import EVAL_SET_FILES
from components.data.decontam import DecontaminationFilter, load_eval_sets
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
from components.data.langid import LanguageFilter
from components.data.near_dedup import NearDedupConfig, NearDedupFilter
from components.data.pii import PiiRedactor
from components.data.quality_model import LOW_QUALITY_SCORE, cross_fit
from components.data.toxicity import ToxicityFilter
from components.data.web_rules import C4QualityFilter, FineWebQualityFilter
from components.stage import StageResult
from components.tracking.stage_run import Tracker


@dataclass(frozen=True)
class Paths:
    docs: Path   # ingested directory
    tasks: Path  # task directory holding the eval sets to decontaminate against
    out: Path    # curated directory: docs.parquet + quarantine.parquet
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
    return [Doc(f"{doc.id}-{i}", text, doc.source) for i, text in enumerate(chunks)]


def quality_filters(cfg: CurateParams) -> list[Filter]:
    """Blocks that judge a document on its own."""
    filters: list[Filter] = []
    if cfg.languages:
        filters.append(LanguageFilter(tuple(cfg.languages), cfg.min_language_score))
    filters += [
        GopherQualityFilter(cfg.min_words, cfg.max_words, cfg.min_alpha_ratio,
                            cfg.max_symbol_ratio),
        GopherRepetitionFilter(cfg.max_duplicate_line_fraction),
        C4QualityFilter(cfg.c4_filter_lorem_ipsum, cfg.c4_filter_curly_bracket,
                        cfg.c4_max_word_length, cfg.c4_min_sentences),
        FineWebQualityFilter(cfg.fineweb_line_punct_min, cfg.fineweb_short_line_max,
                             char_duplicates_max=cfg.fineweb_char_duplicates_max,
                             newline_ratio_max=cfg.fineweb_newline_ratio_max),
        ToxicityFilter(cfg.toxic_line_threshold, cfg.max_toxic_line_fraction),
    ]
    return filters


def corpus_filters(cfg: CurateParams, eval_sets: dict[str, list[str]]) -> list[Filter]:
    """Blocks that judge a document against others (eval sets, earlier documents).

    Dedup last: a duplicate of a rejected document should be reported for its own fault.
    """
    filters: list[Filter] = []
    if cfg.decontam_ngram is not None:
        filters.append(DecontaminationFilter(eval_sets, cfg.decontam_ngram,
                                             cfg.decontam_min_words))
    filters.append(ExactDedupFilter())
    nd = cfg.near_dedup
    if nd.enabled:
        filters.append(NearDedupFilter(NearDedupConfig(ngram=nd.ngram, bands=nd.bands,
                                                       rows=nd.rows, threshold=nd.threshold)))
    return filters


def build_filters(cfg: CurateParams, eval_sets: dict[str, list[str]] | None = None
                  ) -> list[Filter]:
    return [*quality_filters(cfg), *corpus_filters(cfg, eval_sets or {})]


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


def score_quality(kept: list[Doc], rejected: list[Rejected], min_score: float, seed: int
                  ) -> tuple[list[Doc], list[Rejected], dict]:
    """Train the quality model on this corpus (cross-fitted) and drop low scorers."""
    fit = cross_fit([d.text for d in kept], [r.text for r in rejected], folds=2, seed=seed)
    good, bad = [], []
    for doc, score in zip(kept, fit.scores, strict=True):
        doc = replace(doc, quality=round(float(score), 4))
        if score >= min_score:
            good.append(doc)
        else:
            bad.append(Rejected(doc.id, doc.source, doc.id, LOW_QUALITY_SCORE,
                                f"quality score {score:.3f} < {min_score}", doc.text))
    stats = {"quality_model.heldout_accuracy": round(fit.heldout_accuracy, 4),
             "quality_model.train_high": fit.n_high, "quality_model.train_low": fit.n_low,
             "quality_model.mean_score": round(float(np.mean(fit.scores)), 4)}
    return good, bad, stats


def refine(chunks: list[Doc], cfg: CurateParams, eval_sets: dict[str, list[str]],
           seed: int = 0) -> tuple[list[Doc], list[Rejected], dict]:
    """The whole chain; returns kept docs (language-tagged), rejects and block statistics."""
    quality = quality_filters(cfg)
    kept, rejected, counts = apply_filters(tqdm(chunks, desc="curate: quality", unit="doc"),
                                           quality)
    model_stats: dict = {}
    if cfg.quality_model_min_score is not None and kept and rejected:
        kept, low, model_stats = score_quality(kept, rejected, cfg.quality_model_min_score,
                                               seed)
        rejected += low
        counts[LOW_QUALITY_SCORE] += len(low)
    redactor = PiiRedactor()
    if cfg.redact_pii:
        kept = [redactor.apply(d) for d in kept]
    corpus = corpus_filters(cfg, eval_sets)
    kept, rejected2, counts2 = apply_filters(tqdm(kept, desc="curate: corpus", unit="doc"),
                                             corpus)
    lang = next((f for f in quality if isinstance(f, LanguageFilter)), None)
    if lang:
        kept = [lang.tag(d) for d in kept]
    stats: dict = {f"dropped.{r}": n for r, n in sorted((counts + counts2).items())}
    stats.update(model_stats)
    stats.update({f"pii.{k}": n for k, n in sorted(redactor.counts.items())})
    stats["pii.docs_redacted"] = redactor.docs_changed
    decontam = next((f for f in corpus if isinstance(f, DecontaminationFilter)), None)
    if decontam:
        stats.update({f"contaminated_docs.{name}": decontam.overlaps.get(name, 0)
                      for name in sorted(eval_sets)})
    return kept, rejected + rejected2, stats


def run(params: Params, paths: Paths, tracker: Tracker) -> StageResult:
    cfg = params.curate
    docs = read_docs(paths.docs / DOCS_FILE)
    chunks = [c for d in docs for c in split_long(d, cfg.max_chars_per_doc)]
    eval_sets = load_eval_sets([paths.tasks / name for name in EVAL_SET_FILES])
    kept, rejected, stats = refine(chunks, cfg, eval_sets, seed=params.seed)
    if not kept:
        raise ValueError("curation rejected every document; loosen params.curate")
    with atomic_dir(paths.out) as out:
        write_docs(kept, out / DOCS_FILE)
        write_quarantine(rejected, out / QUARANTINE_FILE)
    metrics: dict = {
        "docs_in": len(chunks),
        "docs_kept": len(kept),
        "docs_dropped": len(rejected),
        "chars_kept": sum(len(d.text) for d in kept),
        **stats,
    }
    metrics.update({f"kept.{s}": n for s, n in sorted(Counter(d.source for d in kept).items())})
    metrics.update({f"kept_lang.{lang}": n
                    for lang, n in sorted(Counter(d.lang for d in kept).items()) if lang})
    return StageResult(metrics=metrics)
