"""Model-based quality scoring: a linear classifier on hashed word n-grams, trained in the
pipeline on a high/low-quality split built from the corpus itself.

Labels (no human annotation available offline): high = documents that passed the heuristic
blocks; low = documents the heuristics rejected plus corrupted copies of high ones (words
shuffled within each line: right vocabulary, no syntax — the "word salad" heuristics miss).
Scores are cross-fitted: each document is scored by a model that never saw it, so the reported
held-out accuracy is honest and no document is judged by a model trained on itself. The fit
runs once on the driver; the models travel to the workers that score the partitions.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

from components.data.blocks import Decision, Mean, Outcome, quarantined
from components.data.documents import Doc

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
    return HashingVectorizer(
        ngram_range=(1, 2), n_features=2**18, alternate_sign=False, norm="l2", lowercase=True
    )


def fold_of(doc_id: str, folds: int) -> int:
    # By id, not by position: a worker scoring one partition finds the same fold as the fit.
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=4).digest()) % folds


@dataclass(frozen=True)
class QualityModel:
    """One classifier per fold, each trained without its fold: scoring a document with the
    model of its own fold is scoring it out of sample."""

    models: tuple[LogisticRegression, ...]

    def score(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """P(high quality) per document."""
        if not texts:
            return np.zeros(0)
        x = _vectorizer().transform(texts)
        fold = np.array([fold_of(i, len(self.models)) for i in ids])
        proba = np.zeros(len(texts))
        for k, model in enumerate(self.models):
            rows = fold == k
            if rows.any():
                proba[rows] = model.predict_proba(x[rows])[:, 1]
        return proba


@dataclass(frozen=True)
class QualityFit:
    model: QualityModel
    heldout_accuracy: float  # over all training documents (high, rejected, corrupted)
    n_high: int
    n_low: int


def _train(x, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(max_iter=1000, C=4.0).fit(x, y)


def fit(
    high: Sequence[tuple[str, str]],
    rejected: Sequence[tuple[str, str]],
    folds: int = 2,
    seed: int = 0,
) -> QualityFit:
    """Cross-fitted models from (id, text) of heuristic keeps (high) and rejects (low)."""
    rng = np.random.default_rng(seed)
    # A corrupted copy keeps its original's id, hence its fold: no test document's words are
    # seen in training through its twin.
    corrupted = [(i, corrupt(t, rng)) for i, t in high]
    items = [*high, *rejected, *corrupted]
    y = np.array([1] * len(high) + [0] * (len(rejected) + len(corrupted)))
    fold = np.array([fold_of(i, folds) for i, _ in items])
    x = _vectorizer().transform([t for _, t in items])
    everything: LogisticRegression | None = None
    models = []
    for k in range(folds):
        train = fold != k
        if len(set(y[train])) == 2:
            models.append(_train(x[train], y[train]))
        else:  # a tiny corpus: this fold's complement lacks a class, fall back to all data
            everything = everything or _train(x, y)
            models.append(everything)
    model = QualityModel(tuple(models))
    proba = model.score([i for i, _ in items], [t for _, t in items])
    accuracy = float(((proba >= 0.5) == (y == 1)).mean())
    return QualityFit(model, accuracy, len(high), len(y) - len(high))


class QualityThreshold:
    """A step: scores a batch in one call (the vectorizer and the models are fast on many texts,
    slow one by one), drops documents under `min_score`; every document carries its score in
    `quality`. Counts the mean score (`quality_model.mean_score`)."""

    name = "quality_model"

    def __init__(self, model: QualityModel, min_score: float):
        self.model, self.min_score = model, min_score
        self.counters: Counter = Counter()

    def decide(self, score: float) -> Decision:
        if score >= self.min_score:
            return True
        return False, LOW_QUALITY_SCORE, f"quality score {score:.3f} < {self.min_score}"

    def run(self, docs: list[Doc]) -> Outcome:
        scores = self.model.score([d.id for d in docs], [d.text for d in docs])
        self.counters["quality_model.mean_score"] += Mean(float(scores.sum()), len(docs))
        out = Outcome()
        for doc, score in zip(docs, scores, strict=True):
            doc = replace(doc, quality=round(float(score), 4))
            decision = self.decide(score)
            if decision is True:
                out.kept.append(doc)
                continue
            _, reason, detail = decision
            out.rejected.append(quarantined(doc, reason, detail))
        return out
