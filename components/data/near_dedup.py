"""Near-duplicate removal: MinHash signatures, LSH banding (datasketch), exact Jaccard check.

The FineWeb / NeMo-Curator recipe: word n-gram shingles of normalised text, a MinHash signature
of bands × rows permutations, and LSH buckets per band, so only documents sharing a bucket are
compared. Candidates are then confirmed on their true shingle-set Jaccard similarity (NeMo's
"false positive check"), so a kept/dropped decision never rests on a signature estimate.
The first document of a cluster is kept; later members are dropped with the kept one's id as
their cluster id.

Two blocks: `MinHashSigner`, a step that runs where the documents are (a worker) and ships
each document's signature, the costly part; and `NearDedupFilter`, which needs every earlier
document and so runs once, in corpus order, on those signatures.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from datasketch import LeanMinHash, MinHash, MinHashLSH

from components.data.blocks import Decision, Outcome
from components.data.documents import Doc

NEAR_DUPLICATE = "near_duplicate"

_NON_WORD = re.compile(r"[^\w\s]+")


def normalise(text: str) -> str:
    """Lower-case, NFKC, punctuation removed, whitespace collapsed (FineWeb's simplification)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def shingles(text: str, n: int) -> set[bytes]:
    words = normalise(text).split()
    if len(words) < n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass(frozen=True)
class NearDedupConfig:
    ngram: int = 5
    bands: int = 14
    rows: int = 8
    threshold: float = 0.8  # Jaccard similarity at or above which two documents are duplicates
    seed: int = 1

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows


def signature(shingle_set: set[bytes], cfg: NearDedupConfig) -> MinHash:
    m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
    m.update_batch(list(shingle_set))
    return m


def lean_signature(text: str, cfg: NearDedupConfig) -> LeanMinHash:
    """The MinHash of a document in datasketch's compact, picklable form: the costly part of
    near-dedup, computed where the document is (a worker) and shipped to the pass that
    compares documents."""
    return LeanMinHash(signature(shingles(text, cfg.ngram), cfg))


class MinHashSigner:
    """A step: passes every document on, with its `lean_signature` in `Outcome.signatures`."""

    name = "minhash"

    def __init__(self, cfg: NearDedupConfig):
        self.cfg = cfg
        self.counters: Counter = Counter()

    def run(self, docs: list[Doc]) -> Outcome:
        return Outcome(kept=docs, signatures={d.id: lean_signature(d.text, self.cfg) for d in docs})


class NearDedupFilter:
    """Stateful filter: drops a document whose Jaccard with an earlier kept one ≥ threshold.

    `signatures`: documents' `lean_signature`s by id, computed already (by `MinHashSigner`);
    a document without one is signed here.
    """

    name = "near_dedup"

    def __init__(self, cfg: NearDedupConfig, signatures: Mapping[str, LeanMinHash] | None = None):
        self.cfg = cfg
        self.signatures = signatures or {}
        self.lsh = MinHashLSH(num_perm=cfg.num_perm, params=(cfg.bands, cfg.rows))
        self.kept_shingles: dict[str, set[bytes]] = {}
        self.counters: Counter = Counter()

    def duplicate_of(self, doc: Doc, sig: MinHash | None = None) -> tuple[str, float] | None:
        """(cluster id, Jaccard) of the kept document this one duplicates, or None.

        `sig`: the document's `lean_signature`, if a worker computed it already.
        """
        sh = shingles(doc.text, self.cfg.ngram)
        sig = signature(sh, self.cfg) if sig is None else sig
        best = None
        for other in self.lsh.query(sig):
            sim = jaccard(sh, self.kept_shingles[other])
            if sim >= self.cfg.threshold and (best is None or sim > best[1]):
                best = (other, sim)
        if best is None:
            self.lsh.insert(doc.id, sig)
            self.kept_shingles[doc.id] = sh
        return best

    def filter(self, doc: Doc) -> Decision:
        found = self.duplicate_of(doc, self.signatures.get(doc.id))
        if found is None:
            return True
        kept, sim = found
        return False, NEAR_DUPLICATE, f"cluster {kept} (jaccard {sim:.3f})"


def candidate_pairs(docs: list[Doc], cfg: NearDedupConfig) -> set[tuple[int, int]]:
    """All index pairs (i < j) that LSH puts in a common bucket and whose Jaccard ≥ threshold.

    The all-pairs view of the filter's decisions, used to measure precision and recall.
    """
    lsh = MinHashLSH(num_perm=cfg.num_perm, params=(cfg.bands, cfg.rows))
    sets = [shingles(d.text, cfg.ngram) for d in docs]
    pairs = set()
    for i, sh in enumerate(sets):
        sig = signature(sh, cfg)
        for j in lsh.query(sig):
            if jaccard(sh, sets[j]) >= cfg.threshold:
                pairs.add((j, i))
        lsh.insert(i, sig)
    return pairs
