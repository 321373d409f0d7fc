"""The data refinery: four phases of blocks, described as data (`phases`) and run by one runner.

1. judge — map, per partition on the engine: language ID → language tag (a transform) →
   Gopher quality → Gopher repetition → C4 line cleaning (a transform) → C4 → FineWeb →
   toxicity, with the thresholds of the document's source's rule set (`curate.rule_sets`,
   `curate.source_rule_set`; the quarantine names the set).
2. quality_model — fit, on the driver: the quality model, trained against the bundled
   reference sample (components/data/quality_model.py), not against judge's verdicts.
3. polish — map, per partition on the engine: quality-model threshold → PII redaction (a
   transform) → decontamination against the eval sets → MinHash signatures for near-dedup.
4. dedup — sequential, on the driver in corpus order: exact dedup → near dedup on the
   shipped signatures. Last, so a duplicate of a rejected document is reported for its own
   fault.

Blocks follow components/data/blocks.py: a filter says `True` or `(False, reason, detail)`,
and every block counts in its own `counters`. A map phase builds its blocks where the
partition is (a Dask worker), so their counters are that partition's and come back with its
outcome; partitions come back in order, so the driver's phases see the same corpus order
whichever engine ran. Every dropped document goes to the quarantine with its block's reason
and detail; the statistics are every reason's count plus every block's counters, assembled
once at the end (`statistics`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from datasketch import LeanMinHash

from components.config import CurateParams
from components.data.blocks import Block, Chain, Mean, Outcome, Step, merge, run_steps
from components.data.decontam import DecontaminationFilter
from components.data.documents import Doc, Rejected
from components.data.engine import Engine, InProcessEngine, partitions
from components.data.filters import ExactDedupFilter, GopherQualityFilter, GopherRepetitionFilter
from components.data.langid import LanguageFilter, LanguageTagger
from components.data.near_dedup import MinHashSigner, NearDedupConfig, NearDedupFilter
from components.data.pii import PiiRedactor
from components.data.quality_model import QualityModel, QualityThreshold, fit
from components.data.toxicity import ToxicityFilter
from components.data.web_rules import C4LineCleaner, C4QualityFilter, FineWebQualityFilter

# ---------------------------------------------------------------- blocks of each phase


def judge_blocks(cfg: CurateParams) -> list[Block]:
    """Blocks that judge (or clean) a document on its own."""
    blocks: list[Block] = []
    if cfg.languages:
        # The tagger right after the filter: it tags the text the filter judged.
        lid = LanguageFilter(tuple(cfg.languages), cfg.min_language_score, cfg.min_language_share)
        blocks += [lid, LanguageTagger()]
    blocks += [
        GopherQualityFilter(
            cfg.min_words, cfg.max_words, cfg.min_alpha_ratio, cfg.max_symbol_ratio
        ),
        GopherRepetitionFilter(
            cfg.max_duplicate_line_fraction, cfg.max_duplicate_line_char_fraction
        ),
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
    return blocks


def near_dedup_config(cfg: CurateParams) -> NearDedupConfig:
    nd = cfg.near_dedup
    return NearDedupConfig(ngram=nd.ngram, bands=nd.bands, rows=nd.rows, threshold=nd.threshold)


def decontam_filters(
    cfg: CurateParams, eval_sets: dict[str, list[str]]
) -> list[DecontaminationFilter]:
    if cfg.decontam_ngram is None:
        return []
    return [DecontaminationFilter(eval_sets, cfg.decontam_ngram, cfg.decontam_min_words)]


def dedup_filters(
    cfg: CurateParams, signatures: Mapping[str, LeanMinHash] | None = None
) -> list[Block]:
    """Exact dedup, then near dedup (if enabled) on signatures computed already."""
    near = [NearDedupFilter(near_dedup_config(cfg), signatures)] if cfg.near_dedup.enabled else []
    return [ExactDedupFilter(), *near]


# ---------------------------------------------------------------- steps of each phase


class RuleSetRouter:
    """The judge chain per rule set: each document goes through the chain of its source's rule
    set; kept documents stay in input order, rejected ones name the set."""

    name = "judge"

    def __init__(self, cfg: CurateParams):
        self.cfg = cfg
        names = sorted({"default", *cfg.rule_sets})
        self.chains = {n: Chain(judge_blocks(cfg.for_rule_set(n)), f"judge[{n}]") for n in names}

    @property
    def counters(self) -> Counter:
        total: Counter = Counter()
        for chain in self.chains.values():
            total.update(chain.counters)
        return total

    def run(self, docs: list[Doc]) -> Outcome:
        groups: dict[str, list[int]] = {}
        for i, d in enumerate(docs):
            groups.setdefault(self.cfg.rule_set_of(d.source), []).append(i)
        kept: list[tuple[int, Doc]] = []
        rejected: list[tuple[int, Rejected]] = []
        for name, idx in groups.items():
            out = self.chains[name].run([docs[i] for i in idx])
            position = {docs[i].id: i for i in idx}
            kept += [(position[d.id], d) for d in out.kept]
            rejected += [(position[r.id], replace(r, rule_set=name)) for r in out.rejected]
        return Outcome(
            kept=[d for _, d in sorted(kept, key=lambda x: x[0])],
            rejected=[r for _, r in sorted(rejected, key=lambda x: x[0])],
        )


def judge_steps(cfg: CurateParams, model: QualityModel | None) -> list[Step]:
    """`model`: unused, judge runs before the fit."""
    return [RuleSetRouter(cfg)]


def quality_thresholds(cfg: CurateParams, model: QualityModel) -> dict[str, float]:
    """Per source, the threshold of its rule set's `quality_model_keep`, where the set has one
    of its own (the fit's threshold is the section's)."""
    return {
        source: model.threshold_for(cfg.for_rule_set(name).quality_model_keep)
        for source, name in cfg.source_rule_set.items()
        if "quality_model_keep" in cfg.rule_sets.get(name, {})
    }


def polish_steps(
    cfg: CurateParams, eval_sets: dict[str, list[str]], model: QualityModel | None
) -> list[Step]:
    steps: list[Step] = []
    if model is not None:
        steps.append(QualityThreshold(model, quality_thresholds(cfg, model)))
    if cfg.redact_pii:
        steps.append(Chain([PiiRedactor()], "pii"))
    if decontam := decontam_filters(cfg, eval_sets):
        # A chain of its own, after redaction: a contaminated document is quarantined redacted.
        steps.append(Chain(decontam, "decontamination"))
    if cfg.near_dedup.enabled:
        steps.append(MinHashSigner(near_dedup_config(cfg)))
    return steps


def dedup_steps(cfg: CurateParams, signatures: Mapping[str, LeanMinHash]) -> list[Step]:
    return [Chain(dedup_filters(cfg, signatures), "dedup")]


def quality_fit(
    cfg: CurateParams, seed: int, reference: Sequence[tuple[str, str]]
) -> tuple[QualityModel | None, Counter]:
    """The fit phase, on the reference sample only: no model when it is switched off or there
    is no reference sample."""
    if cfg.quality_model_keep is None or not reference:
        return None, Counter()
    result = fit(reference, cfg.quality_model_keep, folds=2, seed=seed)
    return result.model, Counter(
        {
            "quality_model.heldout_accuracy": round(result.heldout_accuracy, 4),
            "quality_model.threshold": round(result.model.threshold, 4),
            "quality_model.reference_kept": round(result.reference_kept, 4),
            "quality_model.train_positive_windows": result.n_positive,
            "quality_model.train_negative_windows": result.n_negative,
        }
    )


# ---------------------------------------------------------------- phases and their runner


@dataclass(frozen=True)
class Map:
    """Per partition, on the engine. `steps(model)` is called where the partition is, so it
    must pickle (a partial of a module-level function); `model` is the fit phase's, if any."""

    name: str
    steps: Callable[[QualityModel | None], list[Step]]
    docs_per_partition: int


@dataclass(frozen=True)
class Fit:
    """On the driver, once between map phases: (model, its counters)."""

    name: str
    fit: Callable[[], tuple[QualityModel | None, Counter]]


@dataclass(frozen=True)
class Sequential:
    """On the driver, every document in corpus order; `steps` gets the shipped signatures."""

    name: str
    steps: Callable[[Mapping[str, LeanMinHash]], list[Step]]


Phase = Map | Fit | Sequential


def phases(
    cfg: CurateParams,
    eval_sets: dict[str, list[str]],
    seed: int,
    reference: Sequence[tuple[str, str]] = (),
) -> list[Phase]:
    """The refinery, top to bottom."""
    size = cfg.engine.docs_per_partition
    return [
        Map("judge", partial(judge_steps, cfg), size),
        Fit("quality_model", partial(quality_fit, cfg, seed, reference)),
        Map("polish", partial(polish_steps, cfg, eval_sets), size),
        Sequential("dedup", partial(dedup_steps, cfg)),
    ]


@dataclass
class Corpus:
    """Where the documents stand between phases."""

    docs: list[Doc]
    rejected: list[Rejected] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    model: QualityModel | None = None
    signatures: dict[str, LeanMinHash] = field(default_factory=dict)

    def add(self, out: Outcome) -> None:
        self.docs = out.kept
        self.rejected += out.rejected
        self.counters.update(out.counters)
        self.signatures.update(out.signatures)


def map_partition(
    steps: Callable[[QualityModel | None], list[Step]], model: QualityModel | None, docs: list[Doc]
) -> Outcome:
    """One partition, on a worker: fresh blocks, so the counters are this partition's."""
    return run_steps(steps(model), docs)


def run_phases(phases: Sequence[Phase], docs: list[Doc], engine: Engine) -> Corpus:
    corpus = Corpus(docs)
    for phase in phases:
        match phase:
            case Map():
                # At least one partition, so every block reports its counters, even idle.
                parts = partitions(corpus.docs, phase.docs_per_partition) or [[]]
                fn = partial(map_partition, phase.steps, corpus.model)
                corpus.add(merge(engine.map(fn, parts, f"curate: {phase.name}")))
            case Fit():
                corpus.model, counters = phase.fit()
                corpus.counters.update(counters)
            case Sequential():
                corpus.add(run_steps(phase.steps(corpus.signatures), corpus.docs))
    return corpus


def statistics(corpus: Corpus) -> dict:
    """Documents dropped per reason (`dropped.<reason>`) and every block's counters."""
    dropped = Counter(r.reason for r in corpus.rejected)
    stats: dict = {f"dropped.{reason}": n for reason, n in dropped.items()}
    stats.update({k: v.value() if isinstance(v, Mean) else v for k, v in corpus.counters.items()})
    return dict(sorted(stats.items()))


def refine(
    chunks: list[Doc],
    cfg: CurateParams,
    eval_sets: dict[str, list[str]],
    seed: int = 0,
    engine: Engine | None = None,
    reference: Sequence[tuple[str, str]] = (),
) -> tuple[list[Doc], list[Rejected], dict]:
    """The whole refinery; returns kept docs (language-tagged), rejects and statistics.
    `reference`: (id, text) of the quality model's reference sample (none: no model)."""
    phased = phases(cfg, eval_sets, seed, reference)
    corpus = run_phases(phased, chunks, engine or InProcessEngine())
    return corpus.docs, corpus.rejected, statistics(corpus)
