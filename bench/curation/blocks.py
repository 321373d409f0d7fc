"""The compared blocks, each declared once, in the refinery's order: our block (by the name the
refinery gives it and counts its reasons under; ours.py takes it from the refinery), DataTrove's
block (the class our params map onto and how the bench builds it offline), the mapping of our
params onto its arguments, and what has no mapping. The bench builds and runs DataTrove's side
from this table, picks the common chain from it, and writes the report's `mapping` and `skipped`
from it.

Notes are text with `{cfg.<param>}` (our params) and `{default.<argument>}` (DataTrove's
defaults) fields, filled in when the report is written.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from bench.curation import datatrove_side as dt
from components.config import CurateParams

Builder = Callable[[type, dict[str, Any], dt.Offline], Any]


@dataclass(frozen=True)
class Arg:
    """Our param -> DataTrove's argument. `off` is DataTrove's value for a check we switch off
    with null (None where DataTrove also takes None)."""

    ours: str  # a CurateParams field, dotted into sections ("near_dedup.bands")
    theirs: str
    off: Any = None
    note: str = ""

    def ours_value(self, cfg: CurateParams) -> Any:
        v: Any = cfg
        for part in self.ours.split("."):
            v = getattr(v, part)
        return v

    def value(self, cfg: CurateParams) -> Any:
        v = self.ours_value(cfg)
        if v is None:
            return self.off
        return list(v) if isinstance(v, tuple) else v  # DataTrove's signatures ask for lists

    def text(self, cfg: CurateParams) -> str:
        off = " (ours null: check off)" if self.ours_value(cfg) is None else ""
        return f"{self.theirs}={self.value(cfg)}{off}" + (f"; {self.note}" if self.note else "")


@dataclass(frozen=True)
class Block:
    name: str  # our block's name in the refinery
    theirs: str = ""  # DataTrove's class that the mapped arguments go to ("" = none offline)
    build: Builder = dt.construct  # how the bench makes a runnable block of it here
    args: tuple[Arg, ...] = ()
    theirs_only: Mapping[str, Any] = field(default_factory=dict)  # its rules we lack -> their `off`
    notes: Mapping[str, str] = field(default_factory=dict)  # topic -> text, where no mapping
    enabled: Callable[[CurateParams], bool] = lambda cfg: True  # the refinery builds it
    skipped: str = ""  # why DataTrove's side is missing, when `theirs` is empty


FILTERS = "datatrove.pipeline.filters"
BLOCKS: tuple[Block, ...] = (
    Block(
        "language_id",
        f"{FILTERS}.LanguageFilter",
        dt.language_filter,
        args=(Arg("languages", "languages"), Arg("min_language_score", "language_threshold", 0.0)),
        notes={
            "input": "ours: the prose, code left out, its first characters "
            "(components/data/langid.py SAMPLE_CHARS) and each language's share; "
            "DataTrove: the whole text"
        },
        enabled=lambda cfg: bool(cfg.languages),
    ),
    Block(
        "gopher_quality",
        f"{FILTERS}.GopherQualityFilter",
        args=(
            Arg("min_words", "min_doc_words"),
            Arg("max_words", "max_doc_words"),
            Arg("max_symbol_ratio", "max_symbol_word_ratio"),
        ),
        theirs_only={
            "min_avg_word_length": None,
            "max_avg_word_length": None,
            "max_bullet_lines_ratio": None,
            "max_ellipsis_lines_ratio": None,
            "min_stop_words": None,
        },
        notes={
            "min_alpha_ratio": "no mapping: ours {cfg.min_alpha_ratio} of non-space characters "
            "alphabetic; DataTrove's max_non_alpha_words_ratio "
            "{default.max_non_alpha_words_ratio} of words containing a letter (default kept)"
        },
    ),
    Block(
        "gopher_repetition",
        f"{FILTERS}.GopherRepetitionFilter",
        args=(Arg("max_duplicate_line_fraction", "dup_line_frac"),),
        theirs_only={
            "dup_para_frac": None,
            "dup_para_char_frac": None,
            "dup_line_char_frac": None,
            "top_n_grams": (),
            "dup_n_grams": (),
        },
    ),
    Block(
        "c4_quality",
        f"{FILTERS}.C4QualityFilter",
        args=(
            Arg("c4_remove_citations", "remove_citations"),
            Arg("c4_line_terminal_punct", "filter_no_terminal_punct"),
            Arg("c4_line_min_words", "min_words_per_line", -1),
            Arg("c4_line_javascript", "filter_javascript"),
            Arg("c4_line_policy", "filter_policy"),
            Arg("c4_filter_lorem_ipsum", "filter_lorem_ipsum"),
            Arg("c4_filter_curly_bracket", "filter_curly_bracket"),
            Arg("c4_max_word_length", "max_word_length", -1),
            Arg(
                "c4_min_sentences",
                "min_num_sentences",
                -1,
                "ours counts sentence ends with a regex, DataTrove splits every kept line with "
                "the spaCy sentencizer",
            ),
        ),
        notes={
            "blocks": "ours: the line-cleaning transform before our filter is timed with it "
            "(`includes`); DataTrove's C4QualityFilter does both"
        },
    ),
    Block(
        "fineweb_quality",
        f"{FILTERS}.FineWebQualityFilter",
        args=(
            Arg("fineweb_line_punct_min", "line_punct_thr", 0.0),
            Arg("fineweb_short_line_max", "short_line_thr", 1.0),
            Arg(
                "fineweb_char_duplicates_max",
                "char_duplicates_ratio",
                1.0,
                "a ratio of duplicated to all characters cannot exceed 1",
            ),
            Arg("fineweb_newline_ratio_max", "new_line_ratio", float("inf")),
        ),
    ),
    Block(
        "toxicity",
        skipped="no DataTrove counterpart that runs offline: C4BadWordsFilter downloads its "
        "word list from GitHub at first use",
    ),
    Block(
        "quality_model",
        skipped="no offline counterpart: DataTrove's FastTextClassifierFilter applies a "
        "pre-trained fastText classifier downloaded from a URL/the HF hub; ours is trained "
        "in the run on the bundled reference sample",
        enabled=lambda cfg: cfg.quality_model_keep is not None,
    ),
    Block(
        "pii",
        "datatrove.pipeline.formatters.PIIFormatter",
        notes={
            "redact_pii": "{cfg.redact_pii}: PIIFormatter(remove_emails={default.remove_emails}, "
            "remove_ips={default.remove_ips}): e-mails and public IPs only; ours also phones, "
            "cards (Luhn) and IBANs (mod 97)"
        },
        enabled=lambda cfg: cfg.redact_pii,
    ),
    Block(
        "decontamination",
        "datatrove.pipeline.decont.NGramsDecontConfig",
        dt.decont_filter,
        args=(Arg("decontam_ngram", "n_grams"),),
        notes={
            "decontam_min_words": "no mapping: ours also matches eval items of "
            "{cfg.decontam_min_words} words or more, shorter than the n-gram, as a whole; "
            "DataTrove only n-grams",
            "index": "written by this bench with DataTrove's normalisation, tokenizer, hash",
        },
        enabled=lambda cfg: cfg.decontam_ngram is not None,
    ),
    Block(
        "exact_dedup",
        "datatrove.pipeline.dedup.ExactDedupConfig",
        dt.exact_dedup,
        notes={
            "key": "content_getter=lower-cased text, whitespace collapsed, xxhash64; "
            "ours: sha1 of the same"
        },
    ),
    Block(
        "near_dedup",
        "datatrove.pipeline.dedup.MinhashConfig",
        dt.minhash_dedup,
        args=(
            Arg("near_dedup.ngram", "n_grams"),
            Arg("near_dedup.bands", "num_buckets"),
            Arg("near_dedup.rows", "hashes_per_bucket"),
        ),
        notes={
            "near_dedup.threshold": "no mapping: ours confirms Jaccard >= "
            "{cfg.near_dedup.threshold} on the shingle sets; DataTrove drops on any shared "
            "LSH bucket"
        },
        enabled=lambda cfg: cfg.near_dedup.enabled,
    ),
)


def compared(cfg: CurateParams) -> list[Block]:
    """Blocks both sides have under these params, in the refinery's order."""
    return [b for b in BLOCKS if b.theirs and b.enabled(cfg)]


def common_names(cfg: CurateParams) -> list[str]:
    return [b.name for b in compared(cfg)]


def kwargs(block: Block, cfg: CurateParams, matched: bool = False) -> dict[str, Any]:
    """DataTrove's arguments from our params; `matched`: its rules we lack switched off."""
    out = {a.theirs: a.value(cfg) for a in block.args}
    return {**out, **block.theirs_only} if matched else out


def datatrove_factories(
    cfg: CurateParams, offline: dt.Offline, matched: bool = False
) -> tuple[dict[str, dt.Factory], dict[str, str]]:
    """(name -> fresh DataTrove block, name -> why it cannot run here). `matched`: only the
    blocks with rules we lack, those rules switched off, to separate rule count from speed."""
    factories, unavailable = {}, {}
    for b in compared(cfg):
        if matched and not b.theirs_only:
            continue

        def make(b: Block = b) -> Any:
            return b.build(dt.load(b.theirs), kwargs(b, cfg, matched), offline)

        try:
            make()  # built once up front, so a block that cannot run here is reported, not run
        except dt.Unavailable as err:
            unavailable[b.name] = str(err)
            continue
        factories[b.name] = make
    return factories, unavailable


def skipped(cfg: CurateParams) -> dict[str, str]:
    return {b.name: b.skipped for b in BLOCKS if not b.theirs and b.enabled(cfg)}


def mapping(cfg: CurateParams) -> dict[str, dict[str, str]]:
    """Per compared block: DataTrove's class, our param -> its argument, and the rules without
    a mapping on either side."""
    return {b.name: block_mapping(b, cfg) for b in compared(cfg)}


def block_mapping(block: Block, cfg: CurateParams) -> dict[str, str]:
    cls = dt.load(block.theirs)
    defaults = {
        p.name: p.default
        for p in inspect.signature(cls).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    out = {"datatrove": cls.__name__}
    out.update({a.ours: a.text(cfg) for a in block.args})
    if block.theirs_only:
        rules = ", ".join(f"{name}={defaults[name]}" for name in block.theirs_only)
        out["DataTrove only (defaults kept; off in datatrove_rules_matched)"] = rules
    fields = {"cfg": cfg, "default": SimpleNamespace(**defaults)}
    out.update({topic: text.format(**fields) for topic, text in block.notes.items()})
    return out
