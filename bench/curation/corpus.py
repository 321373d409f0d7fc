"""The synthetic corpus, deterministic from its size and seed, and the eval sets it leaks.

Documents of 1-5 kB built from paragraph runs of the bundled raw corpus (data/raw, read by the
ingest stage's own reader: plays, Python docs through its HTML extractor, Debian licence
files), mixed with perturbations in KIND_SHARES: exact duplicates (verbatim or re-spaced),
near-duplicates made as tests/fixtures/planted.py makes them (word edits, reordered paragraphs,
added boilerplate), word salad, spam and navigation pages, low-alpha junk and lorem ipsum, PII,
German/French/Spanish pages, toxic lines and pasted eval items (snippets.py). Documents go
through `split_long` as in the curate stage.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.curation import snippets
from components.config import Params
from components.constants import EVAL_SET_FILES
from components.data.curate import split_long
from components.data.decontam import load_eval_sets
from components.data.documents import Doc
from components.data.ingest import ingest
from components.data.quality_model import corrupt
from tests.fixtures.planted import BOILERPLATE, edit_words, zipf_words

MIB = 1024 * 1024
MIN_CHARS, MAX_CHARS = 1000, 5000
SOURCE_WEIGHTS = {"shakespeare": 0.45, "pydocs": 0.30, "debian_copyright": 0.25}
# Share of documents per kind; "contaminated" falls back to "clean" without eval sets.
KIND_SHARES = {
    "clean": 0.55,
    "exact_duplicate": 0.07,
    "near_duplicate": 0.07,
    "word_salad": 0.06,
    "spam": 0.03,
    "junk": 0.03,
    "pii": 0.10,
    "foreign": 0.05,
    "toxic": 0.02,
    "contaminated": 0.02,
}
EvalSets = dict[str, list[str]]


def load_eval(tasks: Path) -> tuple[EvalSets, dict[str, Any]]:
    """The eval sets the curate stage decontaminates against, and what was found of them."""
    paths = [tasks / name for name in EVAL_SET_FILES]
    present = [p for p in paths if p.exists()]
    sets = load_eval_sets(present) if present else {}
    info: dict[str, Any] = {
        "files": [p.name for p in present],
        "missing": [p.name for p in paths if not p.exists()],
        "items": sum(len(v) for v in sets.values()),
    }
    if not present:
        info["note"] = (
            "no eval sets (the pipeline's tasks stage makes them): decontamination "
            "ran against an empty index and no contaminated documents were planted"
        )
    return sets, info


def build(
    params: Params, raw: Path, mib: float, seed: int, eval_sets: EvalSets
) -> tuple[list[Doc], dict[str, Any]]:
    """The corpus and its description for the report."""
    cfg = params.curate
    t0 = time.perf_counter()
    pools = paragraph_pools(read_raw_texts(raw, params))
    items = eval_items(eval_sets, cfg.decontam_ngram or 13)
    docs, kinds = generate(pools, items, mib, seed, cfg.max_chars_per_doc)
    gen_s = time.perf_counter() - t0
    size = sum(len(d.text.encode()) for d in docs)
    print(f"corpus: {len(docs)} docs, {size / MIB:.1f} MiB in {gen_s:.1f} s", flush=True)
    return docs, {
        "mib_requested": mib,
        "mib": round(size / MIB, 2),
        "bytes": size,
        "docs": len(docs),
        "seed": seed,
        "generation_seconds": round(gen_s, 2),
        "mean_doc_chars": round(sum(len(d.text) for d in docs) / len(docs)),
        "kinds": dict(kinds),
        "units_per_source": {s: len(p.units) for s, p in pools.items()},
    }


def read_raw_texts(raw: Path, params: Params) -> dict[str, list[str]]:
    """Texts per source, as the ingest stage reads and normalises them (its quarantine unused)."""
    p = params.ingest
    docs, _ = ingest(raw, p.sources, p.unicode_form, p.max_doc_chars)
    texts = {s: [d.text for d in docs if d.source == s] for s in SOURCE_WEIGHTS}
    return {s: ts for s, ts in texts.items() if ts}


@dataclass(frozen=True)
class Pool:
    sep: str  # how the source separates its units: blank lines, or lines
    units: list[str]  # paragraphs (or lines) in reading order


def paragraph_pools(texts: dict[str, list[str]]) -> dict[str, Pool]:
    """Units per source; long ones cut as the refinery cuts them. The extracted HTML has one
    paragraph per line (no blank lines), so there a line is the unit."""
    pools: dict[str, Pool] = {}
    for source, docs in texts.items():
        sep = "\n\n" if sum(t.count("\n\n") for t in docs) >= 5 * len(docs) else "\n"
        units = [u.strip() for t in docs for u in t.split(sep) if u.strip()]
        pools[source] = Pool(
            sep, [c.text for u in units for c in split_long(Doc("u", u, source), MAX_CHARS // 2)]
        )
    return pools


def eval_items(eval_sets: EvalSets, min_words: int) -> list[str]:
    """Eval items long enough to be caught by an n-gram of `min_words` words, for leaking."""
    return [t for texts in eval_sets.values() for t in texts if len(t.split()) >= min_words]


def generate(
    pools: dict[str, Pool], eval_items: list[str], mib: float, seed: int, max_chars: int
) -> tuple[list[Doc], Counter]:
    maker = CorpusMaker(pools, eval_items, seed)
    kinds_list, shares = list(KIND_SHARES), np.array(list(KIND_SHARES.values()))
    docs: list[Doc] = []
    kinds: Counter = Counter()
    total, goal = 0, int(mib * MIB)
    with tqdm(total=goal, desc="corpus", unit="B", unit_scale=True, mininterval=1.0) as bar:
        while total < goal:
            kind = kinds_list[int(maker.rng.choice(len(kinds_list), p=shares / shares.sum()))]
            text, source = maker.make(kind)
            kinds[kind] += 1
            size = len(text.encode())
            total += size
            bar.update(size)
            docs += split_long(Doc(f"syn{len(docs):07d}", text, source), max_chars)
    return docs, kinds


class CorpusMaker:
    """Draws documents of each kind; every choice comes from one seeded generator."""

    def __init__(self, pools: dict[str, Pool], eval_items: list[str], seed: int):
        self.rng = np.random.default_rng(seed)
        self.pools = pools
        self.sources = [s for s in SOURCE_WEIGHTS if s in pools]
        w = np.array([SOURCE_WEIGHTS[s] for s in self.sources])
        self.weights = w / w.sum()
        self.vocab = sorted(
            {w for pool in pools.values() for u in pool.units[:2000] for w in u.split()}
        )
        self.eval_items = eval_items
        self.made: list[str] = []  # earlier documents, for duplicates

    def make(self, kind: str) -> tuple[str, str]:
        """(text, source) of a document of `kind`; a duplicate needs an earlier document."""
        if kind == "contaminated" and not self.eval_items:
            kind = "clean"
        if kind in ("exact_duplicate", "near_duplicate") and not self.made:
            kind = "clean"
        if kind == "clean":
            text, source = self.clean()
        else:
            text, source = getattr(self, kind)(), f"synthetic_{kind}"
        self.made.append(text)
        return text, source

    def length(self) -> int:
        return int(self.rng.integers(MIN_CHARS, MAX_CHARS))

    def clean(self) -> tuple[str, str]:
        """Runs of consecutive paragraphs (1-4) or lines (2-8) from random places in one
        source, runs separated by blank lines."""
        source = str(self.rng.choice(self.sources, p=self.weights))
        pool, target = self.pools[source], self.length()
        lo, hi = (1, 5) if pool.sep == "\n\n" else (2, 9)
        runs: list[str] = []
        while sum(len(r) + 2 for r in runs) < target:
            start = int(self.rng.integers(len(pool.units)))
            runs.append(pool.sep.join(pool.units[start : start + int(self.rng.integers(lo, hi))]))
        text = "\n\n".join(runs)
        return (text if len(text) <= MAX_CHARS + 500 else text[:MAX_CHARS]), source

    def exact_duplicate(self) -> str:
        text = self.made[int(self.rng.integers(len(self.made)))]
        if self.rng.random() < 0.5:
            return text
        return text.replace("\n\n", "\n\n\n").replace(". ", ".  ")  # same normalised text

    def near_duplicate(self) -> str:
        paras = self.made[int(self.rng.integers(len(self.made)))].split("\n\n")
        kind = int(self.rng.integers(3))
        if kind == 0:  # planted.py's word edits, line by line so the layout survives
            rate = float(self.rng.uniform(0.0, 0.12))
            paras = ["\n".join(self.edited(ln, rate) for ln in p.split("\n")) for p in paras]
        elif kind == 1:
            paras = [paras[i] for i in self.rng.permutation(len(paras))]
        else:
            paras = [str(self.rng.choice(BOILERPLATE)), *paras, str(self.rng.choice(BOILERPLATE))]
        return "\n\n".join(paras)

    def edited(self, line: str, rate: float) -> str:
        return " ".join(edit_words(self.rng, line.split(), self.vocab, rate))

    def word_salad(self) -> str:
        if self.rng.random() < 0.5:
            return corrupt(self.clean()[0], self.rng)  # the quality model's own negatives
        target, lines = self.length(), []
        while sum(len(ln) for ln in lines) < target:
            words = zipf_words(self.rng, self.vocab, int(self.rng.integers(6, 16)))
            lines.append(" ".join(words).capitalize() + ".")
        return "\n".join(lines)

    def spam(self) -> str:
        lines = list(self.rng.choice(snippets.NAV, size=int(self.rng.integers(5, 12))))
        for _ in range(int(self.rng.integers(20, 60))):
            pool = snippets.SPAM if self.rng.random() < 0.6 else snippets.NAV
            lines.append(str(self.rng.choice(pool)))
        return "\n".join(lines)

    def junk(self) -> str:
        kind = int(self.rng.integers(4))
        if kind == 0:  # a numeric table
            rows = self.rng.integers(0, 10_000, size=(int(self.rng.integers(40, 120)), 6))
            return "\n".join(" | ".join(f"{v / 100:.2f}" for v in row) for row in rows)
        if kind == 1:  # hashtag soup
            tags = self.rng.choice(self.vocab[:3000], size=int(self.rng.integers(60, 200)))
            return " ".join(f"#{t}" for t in tags)
        if kind == 2:
            text, _ = self.clean()
            return text + "\n\n" + snippets.LOREM
        return " ".join(self.clean()[0].split()[: int(self.rng.integers(3, 25))])  # too short

    def pii(self) -> str:
        paras = self.clean()[0].split("\n\n")
        for _ in range(int(self.rng.integers(1, 4))):
            at = int(self.rng.integers(len(paras) + 1))
            paras.insert(at, snippets.pii_sentence(self.rng))
        return "\n\n".join(paras)

    def foreign(self) -> str:
        sentences = snippets.FOREIGN[str(self.rng.choice(sorted(snippets.FOREIGN)))]
        target, paras = self.length() // 2, []
        while sum(len(p) for p in paras) < target:
            n = int(self.rng.integers(2, 5))
            picks = self.rng.choice(len(sentences), size=n, replace=False)
            paras.append(" ".join(sentences[i] for i in picks))
        return "\n\n".join(paras)

    def toxic(self) -> str:
        lines = self.clean()[0].split("\n")
        for _ in range(max(3, len(lines) // 8)):
            at = int(self.rng.integers(len(lines) + 1))
            lines.insert(at, str(self.rng.choice(snippets.TOXIC)))
        return "\n".join(lines)

    def contaminated(self) -> str:
        paras = self.clean()[0].split("\n\n")
        item = self.eval_items[int(self.rng.integers(len(self.eval_items)))]
        paras.insert(int(self.rng.integers(len(paras) + 1)), item)
        return "\n\n".join(paras)
