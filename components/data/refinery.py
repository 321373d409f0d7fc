"""The data refinery: a plain list of blocks in the datatrove shape, run in four passes.

1. judge (per partition, on the engine): language ID → Gopher quality → Gopher repetition →
   C4 line cleaning (a transform) → C4 → FineWeb → toxicity. Kept documents get their
   language tag.
2. fit (driver): the quality model, trained on what the heuristics kept vs rejected.
3. polish (per partition, on the engine): quality-model threshold → PII redaction (a
   transform) → decontamination against the eval sets → MinHash signature for near-dedup.
4. dedup (driver, in corpus order): exact dedup → near dedup on the shipped signatures.

Passes 1 and 3 are pure functions of a partition, so any engine gives the same result as the
in-process one; passes 2 and 4 see every document, and see them in the same order whichever
engine ran (the engine returns partitions in order). Every dropped document goes to the
quarantine with the block's reason code and a detail; every reason is a counter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol, runtime_checkable

from datasketch import LeanMinHash

from components.config import CurateParams
from components.data.decontam import DecontaminationFilter
from components.data.documents import Doc, Rejected
from components.data.engine import Engine, InProcessEngine, partitions
from components.data.filters import (
    ExactDedupFilter,
    Filter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from components.data.langid import LanguageFilter
from components.data.near_dedup import NearDedupConfig, NearDedupFilter, lean_signature
from components.data.pii import PiiRedactor
from components.data.quality_model import LOW_QUALITY_SCORE, QualityModel, fit
from components.data.toxicity import ToxicityFilter
from components.data.web_rules import C4LineCleaner, C4QualityFilter, FineWebQualityFilter


@dataclass
class Outcome:
    """What a pass did to its documents; outcomes of partitions add up."""

    kept: list[Doc] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # reason code -> documents dropped
    stats: Counter = field(default_factory=Counter)  # other block counters
    signatures: list[LeanMinHash] = field(default_factory=list)  # parallel to kept, if any


def merge(outcomes: Iterable[Outcome]) -> Outcome:
    """Partition outcomes joined in partition order."""
    total = Outcome()
    for o in outcomes:
        total.kept += o.kept
        total.rejected += o.rejected
        total.counts.update(o.counts)
        total.stats.update(o.stats)
        total.signatures += o.signatures
    return total


@runtime_checkable
class Transform(Protocol):
    name: str

    def apply(self, doc: Doc) -> Doc: ...


Block = Filter | Transform


def quality_filters(cfg: CurateParams) -> list[Block]:
    """Blocks that judge (or clean) a document on its own."""
    filters: list[Block] = []
    if cfg.languages:
        filters.append(LanguageFilter(tuple(cfg.languages), cfg.min_language_score))
    filters += [
        GopherQualityFilter(
            cfg.min_words, cfg.max_words, cfg.min_alpha_ratio, cfg.max_symbol_ratio
        ),
        GopherRepetitionFilter(cfg.max_duplicate_line_fraction),
        C4LineCleaner(
            cfg.c4_remove_citations,
            cfg.c4_line_terminal_punct,
            cfg.c4_line_min_words,
            cfg.c4_line_javascript,
            cfg.c4_line_policy,
        ),
        C4QualityFilter(
            cfg.c4_filter_lorem_ipsum,
            cfg.c4_filter_curly_bracket,
            cfg.c4_max_word_length,
            cfg.c4_min_sentences,
        ),
        FineWebQualityFilter(
            cfg.fineweb_line_punct_min,
            cfg.fineweb_short_line_max,
            char_duplicates_max=cfg.fineweb_char_duplicates_max,
            newline_ratio_max=cfg.fineweb_newline_ratio_max,
        ),
        ToxicityFilter(cfg.toxic_line_threshold, cfg.max_toxic_line_fraction),
    ]
    return filters


def near_dedup_config(cfg: CurateParams) -> NearDedupConfig:
    nd = cfg.near_dedup
    return NearDedupConfig(ngram=nd.ngram, bands=nd.bands, rows=nd.rows, threshold=nd.threshold)


def decontam_filters(
    cfg: CurateParams, eval_sets: dict[str, list[str]]
) -> list[DecontaminationFilter]:
    if cfg.decontam_ngram is None:
        return []
    return [DecontaminationFilter(eval_sets, cfg.decontam_ngram, cfg.decontam_min_words)]


def dedup_filters(cfg: CurateParams) -> tuple[ExactDedupFilter, NearDedupFilter | None]:
    near = NearDedupFilter(near_dedup_config(cfg)) if cfg.near_dedup.enabled else None
    return ExactDedupFilter(), near


def corpus_filters(cfg: CurateParams, eval_sets: dict[str, list[str]]) -> list[Filter]:
    """Blocks that judge a document against others (eval sets, earlier documents).

    Dedup last: a duplicate of a rejected document should be reported for its own fault.
    """
    return [*decontam_filters(cfg, eval_sets), *(f for f in dedup_filters(cfg) if f)]


def build_filters(cfg: CurateParams, eval_sets: dict[str, list[str]] | None = None) -> list[Block]:
    """Every filtering block in order, for a single in-order pass (tests, small corpora)."""
    return [*quality_filters(cfg), *corpus_filters(cfg, eval_sets or {})]


def _rejected(doc: Doc, f: Filter, reason: str) -> Rejected:
    detail = f.detail(doc) if hasattr(f, "detail") else f.name
    return Rejected(doc.id, doc.source, doc.id, reason, detail, doc.text)


def apply_filters(
    docs: Iterable[Doc], blocks: Sequence[Block]
) -> tuple[list[Doc], list[Rejected], Counter]:
    """Each document through the blocks in order until a filter drops it; transforms (blocks
    with `apply`) rewrite it on the way. The quarantine keeps the original text."""
    out = Outcome()
    for doc in docs:
        current = doc
        for b in blocks:
            if isinstance(b, Transform):
                current = b.apply(current)
                continue
            decision = b.filter(current)
            ok, reason = (decision, "") if isinstance(decision, bool) else decision
            if not ok:
                out.counts[reason] += 1
                out.rejected.append(_rejected(doc, b, reason))
                break
        else:
            out.kept.append(current)
    return out.kept, out.rejected, out.counts


def judge(cfg: CurateParams, docs: list[Doc]) -> Outcome:
    """Pass 1 on one partition: the heuristic blocks, then the language tag on what is kept."""
    filters = quality_filters(cfg)
    kept, rejected, counts = apply_filters(docs, filters)
    lang = next((f for f in filters if isinstance(f, LanguageFilter)), None)
    if lang:
        kept = [lang.tag(d) for d in kept]
    cleaner = next(f for f in filters if isinstance(f, C4LineCleaner))
    return Outcome(
        kept,
        rejected,
        counts,
        Counter({f"c4_lines_removed.{k}": n for k, n in cleaner.counts.items()}),
    )


def fit_quality_model(
    kept: list[Doc], rejected: list[Rejected], seed: int
) -> tuple[QualityModel, dict]:
    """Pass 2: trained on this corpus, high = heuristic keeps, low = heuristic rejects."""
    result = fit(
        [(d.id, d.text) for d in kept], [(r.id, r.text) for r in rejected], folds=2, seed=seed
    )
    return result.model, {
        "quality_model.heldout_accuracy": round(result.heldout_accuracy, 4),
        "quality_model.train_high": result.n_high,
        "quality_model.train_low": result.n_low,
    }


def _threshold(docs: list[Doc], model: QualityModel, min_score: float) -> Outcome:
    scores = model.score([d.id for d in docs], [d.text for d in docs])
    out = Outcome(stats=Counter({"quality_model.score_sum": float(scores.sum())}))
    for doc, score in zip(docs, scores, strict=True):
        doc = replace(doc, quality=round(float(score), 4))
        if score >= min_score:
            out.kept.append(doc)
        else:
            out.counts[LOW_QUALITY_SCORE] += 1
            out.rejected.append(
                Rejected(
                    doc.id,
                    doc.source,
                    doc.id,
                    LOW_QUALITY_SCORE,
                    f"quality score {score:.3f} < {min_score}",
                    doc.text,
                )
            )
    return out


def polish(
    cfg: CurateParams, eval_sets: dict[str, list[str]], model: QualityModel | None, docs: list[Doc]
) -> Outcome:
    """Pass 3 on one partition: quality threshold, PII redaction, decontamination, MinHash."""
    out = Outcome(kept=docs)
    if model is not None and cfg.quality_model_min_score is not None:
        out = _threshold(docs, model, cfg.quality_model_min_score)
    if cfg.redact_pii:
        redactor = PiiRedactor()
        out.kept = [redactor.apply(d) for d in out.kept]
        out.stats.update({f"pii.{k}": n for k, n in redactor.counts.items()})
        out.stats["pii.docs_redacted"] += redactor.docs_changed
    for decontam in decontam_filters(cfg, eval_sets):
        out.kept, rejected, counts = apply_filters(out.kept, [decontam])
        out.rejected += rejected
        out.counts += counts
        out.stats.update({f"contaminated_docs.{k}": n for k, n in decontam.overlaps.items()})
    if cfg.near_dedup.enabled:
        nd = near_dedup_config(cfg)
        out.signatures = [lean_signature(d.text, nd) for d in out.kept]
    return out


def dedup(cfg: CurateParams, polished: Outcome) -> Outcome:
    """Pass 4, in corpus order: the first document of each exact or near cluster is kept."""
    exact, near = dedup_filters(cfg)
    out = Outcome()
    values = polished.signatures or [None] * len(polished.kept)
    for doc, sig in zip(polished.kept, values, strict=True):
        decision = exact.filter(doc)
        f: Filter = exact
        if decision is True and near is not None:
            decision, f = near.filter(doc, sig), near
        if decision is True:
            out.kept.append(doc)
        else:
            out.counts[decision[1]] += 1
            out.rejected.append(_rejected(doc, f, decision[1]))
    return out


def refine(
    chunks: list[Doc],
    cfg: CurateParams,
    eval_sets: dict[str, list[str]],
    seed: int = 0,
    engine: Engine | None = None,
) -> tuple[list[Doc], list[Rejected], dict]:
    """The whole chain; returns kept docs (language-tagged), rejects and block statistics."""
    engine = engine or InProcessEngine()
    size = cfg.engine.docs_per_partition
    judged = merge(engine.map(partial(judge, cfg), partitions(chunks, size), "curate: judge"))
    model, model_stats = None, {}
    if cfg.quality_model_min_score is not None and judged.kept and judged.rejected:
        model, model_stats = fit_quality_model(judged.kept, judged.rejected, seed)
    polished = merge(
        engine.map(
            partial(polish, cfg, eval_sets, model), partitions(judged.kept, size), "curate: polish"
        )
    )
    final = dedup(cfg, polished)
    counts = judged.counts + polished.counts + final.counts
    stats: dict = {f"dropped.{r}": n for r, n in sorted(counts.items())}
    stats.update(model_stats)
    stats.update(sorted(judged.stats.items()))
    if model is not None and judged.kept:
        stats["quality_model.mean_score"] = round(
            polished.stats.pop("quality_model.score_sum", 0.0) / len(judged.kept), 4
        )
    stats.update(sorted(polished.stats.items()))
    if cfg.redact_pii:
        stats["pii.docs_redacted"] = polished.stats.get("pii.docs_redacted", 0)
    if cfg.decontam_ngram is not None:
        stats.update(
            {
                f"contaminated_docs.{name}": polished.stats.get(f"contaminated_docs.{name}", 0)
                for name in sorted(eval_sets)
            }
        )
    return final.kept, judged.rejected + polished.rejected + final.rejected, stats
