"""Model-based quality scoring against a declared reference sample, in the manner of the DCLM
and FineWeb-Edu classifiers: a linear classifier on hashed word n-grams, whose positives are a
bundled high-quality sample (data/keeprate/clean.jsonl, split `tuning`: prose, reference and
code docs, licences, plays) and never what the pipeline's own heuristics kept.

- Negatives: the same sample with its words shuffled within each line (right vocabulary, no
  syntax: the word salad the heuristics miss). Each positive has its negative twin, so the
  model learns "reads like language" rather than a topic or a genre, and not "looks like what
  the heuristics liked". (Collages of lines from unrelated documents were tried as a second
  negative: a window of real lines cannot be told from a real window, and the out-of-fold
  accuracy on the tuning split fell from 0.96 to 0.78.)
- Length-robust: texts are scored in windows of about WINDOW_CHARS (whole lines), the same size
  in training and scoring, and a document's score is the mean over its windows; a short page
  is not judged on a sparser vector than a long one.
- Threshold: not a fixed probability but a target keep-rate: the score that keeps `keep` of the
  reference sample, measured out of fold (each reference document scored by the fold model that
  did not train on it).

The fit runs once on the driver; the models travel to the workers that score the partitions.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression

from components.data.blocks import Decision, Mean, Outcome, quarantined
from components.data.documents import Doc

LOW_QUALITY_SCORE = "quality_model_low_score"
WINDOW_CHARS = 1000


def corrupt(text: str, rng: np.random.Generator) -> str:
    lines = []
    for line in text.split("\n"):
        words = line.split()
        rng.shuffle(words)
        lines.append(" ".join(words))
    return "\n".join(lines)


def windows(text: str, size: int = WINDOW_CHARS) -> list[str]:
    """Consecutive runs of whole lines of about `size` characters (at least one window); a
    last run shorter than half a window joins the one before."""
    out, current = [], ""
    for line in text.split("\n"):
        current = f"{current}\n{line}" if current else line
        if len(current) >= size:
            out.append(current)
            current = ""
    if current:
        if out and len(current) < size // 2:
            out[-1] = f"{out[-1]}\n{current}"
        else:
            out.append(current)
    return out or [text]


def load_reference(path: Path) -> list[tuple[str, str]]:
    """(id, text) of the reference sample: the `tuning` split of the clean-text benchmark
    (its `heldout` split is for measuring the refinery, so the model never sees it)."""
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line)
    return [(r["id"], r["text"]) for r in rows if r.get("split") == "tuning"]


def _vectorizer() -> HashingVectorizer:
    # fastText-style features: word unigrams and bigrams hashed into a fixed space; binary
    # counts and l2 norm, so a window's length does not scale its vector.
    return HashingVectorizer(
        ngram_range=(1, 2),
        n_features=2**18,
        alternate_sign=False,
        binary=True,
        norm="l2",
        lowercase=True,
    )


def fold_of(doc_id: str, folds: int) -> int:
    # By id, not by position: a worker scoring one partition finds the same fold as the fit.
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=4).digest()) % folds


@dataclass(frozen=True)
class QualityModel:
    """One classifier per fold, each trained without its fold's reference documents: a
    reference document scored here is scored out of sample, and so is any other document."""

    models: tuple[LogisticRegression, ...]
    threshold: float = 0.5
    reference_scores: tuple[float, ...] = ()  # out of fold: where other keep-rates lie

    def threshold_for(self, keep: float | None) -> float:
        """The score that keeps `keep` of the reference sample (None or 1: everything)."""
        if keep is None or keep >= 1 or not self.reference_scores:
            return 0.0 if keep is None or keep >= 1 else self.threshold
        return round(float(np.quantile(self.reference_scores, 1 - keep, method="lower")), 6)

    def score(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        """P(reads like the reference) per document: the mean over its windows."""
        if not texts:
            return np.zeros(0)
        parts = [windows(t) for t in texts]
        owner = np.repeat(np.arange(len(texts)), [len(p) for p in parts])
        x = _vectorizer().transform([w for p in parts for w in p])
        fold = np.array([fold_of(i, len(self.models)) for i in ids])[owner]
        proba = np.zeros(len(owner))
        for k, model in enumerate(self.models):
            rows = fold == k
            if rows.any():
                proba[rows] = model.predict_proba(x[rows])[:, 1]
        return np.bincount(owner, weights=proba) / np.bincount(owner)


@dataclass(frozen=True)
class QualityFit:
    model: QualityModel
    heldout_accuracy: float  # over reference and negative windows, out of fold
    reference_kept: float  # share of the reference sample at or above the threshold
    n_positive: int  # windows
    n_negative: int


def _train(x, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(max_iter=2000, C=4.0).fit(x, y)


def training_set(
    reference: Sequence[tuple[str, str]], seed: int
) -> tuple[list[str], list[str], np.ndarray]:
    """(fold ids, window texts, labels): reference windows, and the windows of a word-shuffled
    copy of each reference document, under its id (so in its fold: no test document's words
    are seen in training through its twin)."""
    rng = np.random.default_rng(seed)
    ids, items, labels = [], [], []
    for doc_id, text in reference:
        for label, version in ((1, text), (0, corrupt(text, rng))):
            for w in windows(version):
                ids.append(doc_id)
                items.append(w)
                labels.append(label)
    return ids, items, np.array(labels)


def fit(
    reference: Sequence[tuple[str, str]], keep: float, folds: int = 2, seed: int = 0
) -> QualityFit:
    """Cross-fitted models from (id, text) of the reference sample; the threshold keeps `keep`
    of the reference documents, scored out of fold."""
    ids, items, y = training_set(reference, seed)
    fold = np.array([fold_of(i, folds) for i in ids])
    x = _vectorizer().transform(items)
    everything: LogisticRegression | None = None
    models = []
    for k in range(folds):
        train = fold != k
        if len(set(y[train])) == 2:
            models.append(_train(x[train], y[train]))
        else:  # a tiny sample: this fold's complement lacks a class, fall back to all data
            everything = everything or _train(x, y)
            models.append(everything)
    unthresholded = QualityModel(tuple(models))
    proba = np.zeros(len(y))
    for k, model in enumerate(models):
        rows = fold == k
        if rows.any():
            proba[rows] = model.predict_proba(x[rows])[:, 1]
    accuracy = float(((proba >= 0.5) == (y == 1)).mean())
    ref_scores = unthresholded.score([i for i, _ in reference], [t for _, t in reference])
    scored = QualityModel(tuple(models), reference_scores=tuple(float(s) for s in ref_scores))
    model = replace(scored, threshold=scored.threshold_for(keep))
    kept = float((ref_scores >= model.threshold).mean())
    return QualityFit(model, accuracy, kept, int(y.sum()), int(len(y) - y.sum()))


class QualityThreshold:
    """A step: scores a batch in one call (the vectorizer and the models are fast on many texts,
    slow one by one), drops documents under the threshold of their source (`by_source`, else
    the model's); every document carries its score in `quality`. Counts the mean score
    (`quality_model.mean_score`)."""

    name = "quality_model"

    def __init__(self, model: QualityModel, by_source: Mapping[str, float] | None = None):
        self.model, self.by_source = model, dict(by_source or {})
        self.counters: Counter = Counter()

    def decide(self, score: float, source: str = "") -> Decision:
        threshold = self.by_source.get(source, self.model.threshold)
        if score >= threshold:
            return True
        return False, LOW_QUALITY_SCORE, f"quality score {score:.3f} < {threshold:.3f}"

    def run(self, docs: list[Doc]) -> Outcome:
        scores = self.model.score([d.id for d in docs], [d.text for d in docs])
        self.counters["quality_model.mean_score"] += Mean(float(scores.sum()), len(docs))
        out = Outcome()
        for doc, score in zip(docs, scores, strict=True):
            doc = replace(doc, quality=round(float(score), 4))
            decision = self.decide(score, doc.source)
            if decision is True:
                out.kept.append(doc)
                continue
            _, reason, detail = decision
            out.rejected.append(quarantined(doc, reason, detail))
        return out
