"""C4 and FineWeb document rules, with the published thresholds as defaults.

C4 (Raffel et al. 2020, §2.2), the document-level part: drop pages with "lorem ipsum", with a
curly bracket (code), with a word longer than 1,000 characters, or with fewer than 5 sentences.
(C4's line-level removals — lines without terminal punctuation, "javascript" and policy lines —
rewrite documents and are not implemented here.)
FineWeb (Penedo et al. 2024; datatrove's FineWebQualityFilter): share of lines ending in
punctuation ≥ 0.12, share of lines shorter than 30 characters ≤ 0.67, characters in duplicated
lines ≤ 1% of all characters, newlines per word ≤ 0.3.
Every threshold can be None to switch that rule off.
"""

from __future__ import annotations

import re

from components.data.documents import Doc

C4_LOREM_IPSUM = "c4_lorem_ipsum"
C4_CURLY_BRACKET = "c4_curly_bracket"
C4_LONG_WORD = "c4_word_too_long"
C4_FEW_SENTENCES = "c4_too_few_sentences"
FW_LINE_PUNCT = "fineweb_few_lines_end_in_punctuation"
FW_SHORT_LINES = "fineweb_too_many_short_lines"
FW_CHAR_DUPLICATES = "fineweb_duplicated_line_chars"
FW_NEWLINES = "fineweb_too_many_newlines"

_SENTENCE_END = re.compile(r"[.!?]+(?:[\"')\]]*)(?=\s|$)")
_LINE_END_PUNCT = (".", "!", "?", '"', "'", "…", ":", ";", ")")


class C4QualityFilter:
    name = "c4_quality"

    def __init__(self, filter_lorem_ipsum: bool = True, filter_curly_bracket: bool = True,
                 max_word_length: int | None = 1000, min_sentences: int | None = 5):
        self.lorem, self.curly = filter_lorem_ipsum, filter_curly_bracket
        self.max_word_length, self.min_sentences = max_word_length, min_sentences

    def filter(self, doc: Doc) -> bool | tuple[bool, str]:
        text = doc.text
        if self.lorem and "lorem ipsum" in text.lower():
            return False, C4_LOREM_IPSUM
        if self.curly and "{" in text:
            return False, C4_CURLY_BRACKET
        if self.max_word_length is not None and any(
                len(w) > self.max_word_length for w in text.split()):
            return False, C4_LONG_WORD
        if self.min_sentences is not None and len(_SENTENCE_END.findall(text)) < \
                self.min_sentences:
            return False, C4_FEW_SENTENCES
        return True


class FineWebQualityFilter:
    name = "fineweb_quality"

    def __init__(self, line_punct_min: float | None = 0.12, short_line_max: float | None = 0.67,
                 short_line_chars: int = 30, char_duplicates_max: float | None = 0.01,
                 newline_ratio_max: float | None = 0.3):
        self.line_punct_min, self.short_line_max = line_punct_min, short_line_max
        self.short_line_chars, self.char_duplicates_max = short_line_chars, char_duplicates_max
        self.newline_ratio_max = newline_ratio_max

    def filter(self, doc: Doc) -> bool | tuple[bool, str]:
        lines = [ln.strip() for ln in doc.text.split("\n") if ln.strip()]
        if not lines:
            return True  # empty documents are the Gopher filter's business
        if self.line_punct_min is not None and (
                sum(ln.endswith(_LINE_END_PUNCT) for ln in lines) / len(lines)
                < self.line_punct_min):
            return False, FW_LINE_PUNCT
        if self.short_line_max is not None and (
                sum(len(ln) < self.short_line_chars for ln in lines) / len(lines)
                > self.short_line_max):
            return False, FW_SHORT_LINES
        if self.char_duplicates_max is not None:
            seen, dup_chars = set(), 0
            for ln in lines:
                if ln in seen:
                    dup_chars += len(ln)
                seen.add(ln)
            if dup_chars / max(1, len(doc.text.replace("\n", ""))) > self.char_duplicates_max:
                return False, FW_CHAR_DUPLICATES
        words = len(doc.text.split())
        if self.newline_ratio_max is not None and words and (
                doc.text.count("\n") / words > self.newline_ratio_max):
            return False, FW_NEWLINES
        return True
