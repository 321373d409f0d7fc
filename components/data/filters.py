"""Gopher's rules and exact dedup, in the datatrove shape (components/data/blocks.py):
`filter(doc) -> True | (False, reason, detail)`.

Thresholds are constructor arguments; None disables a check. Reason codes are constants so
metrics and the quarantine agree on spelling. The detail of these blocks is their name: the
reason says all they know.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter

from components.data.blocks import Decision
from components.data.documents import Doc

TOO_FEW_WORDS = "gopher_too_few_words"
TOO_MANY_WORDS = "gopher_too_many_words"
LOW_ALPHA_RATIO = "gopher_low_alpha_ratio"
HIGH_SYMBOL_RATIO = "gopher_high_symbol_ratio"
DUPLICATE_LINES = "gopher_duplicate_lines"
DUPLICATE_LINE_CHARS = "gopher_duplicate_line_chars"
EXACT_DUPLICATE = "exact_duplicate"

_WORD = re.compile(r"\S+")


class GopherQualityFilter:
    """A subset of Gopher's quality rules (Rae et al. 2021, appendix A)."""

    name = "gopher_quality"

    def __init__(
        self,
        min_words: int | None = 50,
        max_words: int | None = 100_000,
        min_alpha_ratio: float | None = 0.8,
        max_symbol_ratio: float | None = 0.1,
    ):
        self.min_words = min_words
        self.max_words = max_words
        self.min_alpha_ratio = min_alpha_ratio
        self.max_symbol_ratio = max_symbol_ratio
        self.counters: Counter = Counter()

    def filter(self, doc: Doc) -> Decision:
        words = _WORD.findall(doc.text)
        n = len(words)
        if self.min_words is not None and n < self.min_words:
            return False, TOO_FEW_WORDS, f"{n} words < {self.min_words}"
        if self.max_words is not None and n > self.max_words:
            return False, TOO_MANY_WORDS, f"{n} words > {self.max_words}"
        if self.min_alpha_ratio is not None:
            chars = [c for c in doc.text if not c.isspace()]
            alpha = sum(1 for c in chars if unicodedata.category(c).startswith("L"))
            if chars and (ratio := alpha / len(chars)) < self.min_alpha_ratio:
                return False, LOW_ALPHA_RATIO, f"alpha ratio {ratio:.2f} < {self.min_alpha_ratio}"
        if self.max_symbol_ratio is not None and n:
            symbols = doc.text.count("#") + doc.text.count("...") + doc.text.count("…")
            if (ratio := symbols / n) > self.max_symbol_ratio:
                detail = f"symbols per word {ratio:.2f} > {self.max_symbol_ratio}"
                return False, HIGH_SYMBOL_RATIO, detail
        return True


class GopherRepetitionFilter:
    """Gopher's duplicate-line rules: the fraction of lines that are duplicates of another line
    (dup_line_frac, published 0.30), and the fraction of characters in lines repeating an
    earlier one (dup_line_char_frac, published 0.20). The second is the one for structured
    text: short repeated headings (`Args:`, `Returns:`, a code fence) weigh by their length."""

    name = "gopher_repetition"

    def __init__(
        self,
        max_duplicate_line_fraction: float | None = 0.3,
        max_duplicate_line_char_fraction: float | None = None,
    ):
        self.max_duplicate_line_fraction = max_duplicate_line_fraction
        self.max_char_fraction = max_duplicate_line_char_fraction
        self.counters: Counter = Counter()

    def filter(self, doc: Doc) -> Decision:
        if self.max_duplicate_line_fraction is None and self.max_char_fraction is None:
            return True
        lines = [ln.strip() for ln in doc.text.split("\n") if ln.strip()]
        if not lines:
            return True
        counts = Counter(lines)
        if self.max_duplicate_line_fraction is not None:
            frac = sum(c for c in counts.values() if c > 1) / len(lines)
            if frac > self.max_duplicate_line_fraction:
                return False, DUPLICATE_LINES, f"{frac:.2f} of lines are repeated"
        if self.max_char_fraction is not None:
            repeated = sum(len(line) * (c - 1) for line, c in counts.items())
            frac = repeated / len(doc.text)
            if frac > self.max_char_fraction:
                return False, DUPLICATE_LINE_CHARS, f"{frac:.2f} of characters in repeated lines"
        return True


def normalized_hash(text: str) -> str:
    """Hash of lower-cased text with whitespace collapsed: what counts as an exact duplicate."""
    norm = " ".join(text.lower().split())
    return hashlib.sha1(norm.encode()).hexdigest()


class ExactDedupFilter:
    """Keeps the first document of each normalised-text hash. Stateful: one pass, in order."""

    name = "exact_dedup"

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self.counters: Counter = Counter()

    def filter(self, doc: Doc) -> Decision:
        h = normalized_hash(doc.text)
        if h in self._seen:
            return False, EXACT_DUPLICATE, f"normalised text {h[:12]} seen earlier"
        self._seen.add(h)
        return True
