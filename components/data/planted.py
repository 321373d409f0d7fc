"""A corpus with planted near-duplicates, for measuring dedup against brute-force Jaccard.

Each base document gets variants made the way near-duplicates arise on the web: word edits
(typos, substitutions, deletions), reordered paragraphs, and added boilerplate (headers,
footers). Edit rates span the 0.8 Jaccard boundary, so both misses and false alarms can occur.
"""

from __future__ import annotations

import numpy as np

from components.data.documents import Doc

BOILERPLATE = (
    "Home | About | Contact | Privacy policy",
    "Copyright all rights reserved.",
    "Subscribe to our newsletter for updates.",
    "Share this page on social media.",
)


def _words(rng: np.random.Generator, vocab: list[str], n: int) -> list[str]:
    # Zipf-like word frequencies, as in natural text.
    ranks = np.minimum(rng.zipf(1.3, n) - 1, len(vocab) - 1)
    return [vocab[r] for r in ranks]


def _edit(rng, words: list[str], vocab: list[str], rate: float) -> list[str]:
    out = []
    for w in words:
        u = rng.random()
        if u < rate / 3:
            continue  # deletion
        if u < 2 * rate / 3:
            out.append(vocab[rng.integers(len(vocab))])  # substitution
            continue
        out.append(w)
        if u < rate:
            out.append(vocab[rng.integers(len(vocab))])  # insertion
    return out


def _variant(rng, paragraphs: list[list[str]], vocab: list[str]) -> str:
    kind = rng.integers(3)
    if kind == 0:
        paras = [_edit(rng, p, vocab, rate=float(rng.uniform(0.0, 0.12))) for p in paragraphs]
    elif kind == 1:
        order = rng.permutation(len(paragraphs))
        paras = [paragraphs[i] for i in order]
    else:
        paras = [*paragraphs]
        paras.insert(0, BOILERPLATE[rng.integers(len(BOILERPLATE))].split())
        paras.append(BOILERPLATE[rng.integers(len(BOILERPLATE))].split())
    return "\n\n".join(" ".join(p) for p in paras)


def planted_corpus(
    n_base: int, variants_per_base: int = 2, seed: int = 0, words_per_doc: int = 300
) -> list[Doc]:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(5000)]
    docs = []
    for b in range(n_base):
        paragraphs = [_words(rng, vocab, words_per_doc // 5) for _ in range(5)]
        docs.append(Doc(f"base{b}", "\n\n".join(" ".join(p) for p in paragraphs), "planted"))
        for v in range(variants_per_base):
            docs.append(Doc(f"base{b}-v{v}", _variant(rng, paragraphs, vocab), "planted"))
    order = rng.permutation(len(docs))
    return [docs[i] for i in order]
