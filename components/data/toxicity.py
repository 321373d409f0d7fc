"""Toxicity filter: a linear classifier (TF-IDF + SVM, `alt-profanity-check`, model in the
wheel) scores every line; documents with too large a share of toxic lines are dropped.

A share rather than "any bad word" (C4's rule): literature such as Shakespeare has insults in
a few lines of otherwise clean text, and those documents should stay.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from profanity_check import predict_prob

from components.data.blocks import Decision
from components.data.documents import Doc

TOXIC = "toxic_content"
MIN_LINE_CHARS = 10  # shorter lines (headers, speaker names) carry no signal


class ToxicityFilter:
    name = "toxicity"

    def __init__(self, line_threshold: float = 0.8, max_toxic_line_fraction: float | None = 0.05):
        self.line_threshold = line_threshold
        self.max_fraction = max_toxic_line_fraction
        self.counters: Counter = Counter()

    def toxic_fractions(self, texts: Sequence[str]) -> list[float]:
        """Share of toxic lines per text, all lines scored in one classifier call (the
        vectoriser and SVM cost little per line, much per call)."""
        per_text = [
            [ln for ln in t.splitlines() if len(ln.strip()) >= MIN_LINE_CHARS] for t in texts
        ]
        flat = [ln for lines in per_text for ln in lines]
        toxic = predict_prob(flat) >= self.line_threshold if flat else np.zeros(0, dtype=bool)
        fractions, at = [], 0
        for lines in per_text:
            n = len(lines)
            fractions.append(float(toxic[at : at + n].mean()) if n else 0.0)
            at += n
        return fractions

    def decide(self, fraction: float) -> Decision:
        if self.max_fraction is None or fraction <= self.max_fraction:
            return True
        return False, TOXIC, f"{fraction:.1%} of lines scored toxic ≥ {self.line_threshold}"

    def filter(self, doc: Doc) -> Decision:
        return self.filter_batch([doc])[0]

    def filter_batch(self, docs: Sequence[Doc]) -> list[Decision]:
        if self.max_fraction is None:
            return [True] * len(docs)
        return [self.decide(f) for f in self.toxic_fractions([d.text for d in docs])]
