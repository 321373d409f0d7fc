"""Model-based quality scoring: a linear classifier on hashed word n-grams, trained in the
pipeline on a high/low-quality split built from the corpus itself.

Labels (no human annotation available offline): high = documents that passed the heuristic
blocks; low = documents the heuristics rejected plus corrupted copies of high ones (words
shuffled within each line: right vocabulary, no syntax — the "word salad" heuristics miss).
Scores are cross-fitted: each document is scored by a model that never saw it, so the reported
held-out accuracy is honest and no document is judged by a model trained on itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

LOW_QUALITY_SCORE = "quality_model_low_score"


def corrupt(text: str, rng: np.random.Generator) -> str:
    lines = []
    for line in text.split("\n"):
        words = line.split()
        rng.shuffle(words)
        lines.append(" ".join(words))
    return "\n".join(lines)


def _vectorizer() -> HashingVectorizer:
    # fastText-style features: word unigrams and bigrams hashed into a fixed space.
    return HashingVectorizer(ngram_range=(1, 2), n_features=2**18, alternate_sign=False,
                             norm="l2", lowercase=True)


@dataclass(frozen=True)
class CrossFitResult:
    scores: np.ndarray        # P(high quality) for each high-labelled document, out of fold
    heldout_accuracy: float   # over all documents (high, rejected, corrupted), out of fold
    n_high: int
    n_low: int


def cross_fit(high: list[str], rejected: list[str], folds: int = 2, seed: int = 0
              ) -> CrossFitResult:
    rng = np.random.default_rng(seed)
    low = rejected + [corrupt(t, rng) for t in high]
    texts = high + low
    y = np.array([1] * len(high) + [0] * len(low))
    fold = rng.integers(folds, size=len(texts))
    # A corrupted copy shares its fold with its original, so no test document's words were
    # seen in training through its twin.
    fold[len(high) + len(rejected):] = fold[: len(high)]
    x = _vectorizer().transform(texts)
    proba = np.zeros(len(texts))
    for k in range(folds):
        train, test = fold != k, fold == k
        if not test.any() or len(set(y[train])) < 2:
            continue
        model = LogisticRegression(max_iter=1000, C=4.0)
        model.fit(x[train], y[train])
        proba[test] = model.predict_proba(x[test])[:, 1]
    accuracy = float(((proba >= 0.5) == (y == 1)).mean())
    return CrossFitResult(proba[: len(high)], accuracy, len(high), len(low))
