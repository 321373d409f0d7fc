"""Toxicity filter: a linear classifier (TF-IDF + SVM, `alt-profanity-check`, model in the
wheel) scores every line; documents with too large a share of toxic lines are dropped.

A share rather than "any bad word" (C4's rule): literature such as Shakespeare has insults in
a few lines of otherwise clean text, and those documents should stay.
"""

from __future__ import annotations

from collections import Counter

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

    def toxic_fraction(self, text: str) -> float:
        lines = [ln for ln in text.splitlines() if len(ln.strip()) >= MIN_LINE_CHARS]
        if not lines:
            return 0.0
        probs = predict_prob(lines)
        return float((probs >= self.line_threshold).mean())

    def filter(self, doc: Doc) -> Decision:
        if self.max_fraction is None:
            return True
        frac = self.toxic_fraction(doc.text)
        if frac > self.max_fraction:
            return False, TOXIC, f"{frac:.1%} of lines scored toxic ≥ {self.line_threshold}"
        return True
