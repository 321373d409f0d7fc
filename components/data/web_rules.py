"""C4 and FineWeb document rules, with the published thresholds as defaults.

C4 (Raffel et al. 2020, §2.2) in two blocks, as datatrove's C4QualityFilter does it:
- `C4LineCleaner`, a transform: removes Wikipedia citation markers and the lines that do not end
  in terminal punctuation, have fewer than 3 words, mention "javascript", or are cookie/privacy
  policy notices; counts removed lines per rule;
- `C4QualityFilter`, on the cleaned text: drops pages with "lorem ipsum", with a curly bracket
  (code), with a word longer than 1,000 characters, or with fewer than 5 sentences (a page left
  without lines is dropped as such).
FineWeb (Penedo et al. 2024; datatrove's FineWebQualityFilter): share of lines ending in
punctuation ≥ 0.12, share of lines shorter than 30 characters ≤ 0.67, characters in duplicated
lines ≤ 1% of all characters, newlines per word ≤ 0.3.
Every threshold can be None to switch that rule off.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

from components.data.blocks import Decision
from components.data.documents import Doc

C4_LOREM_IPSUM = "c4_lorem_ipsum"
C4_CURLY_BRACKET = "c4_curly_bracket"
C4_LONG_WORD = "c4_word_too_long"
C4_FEW_SENTENCES = "c4_too_few_sentences"
C4_NO_LINES_LEFT = "c4_no_lines_left"
FW_LINE_PUNCT = "fineweb_few_lines_end_in_punctuation"
FW_SHORT_LINES = "fineweb_too_many_short_lines"
FW_CHAR_DUPLICATES = "fineweb_duplicated_line_chars"
FW_NEWLINES = "fineweb_too_many_newlines"

_SENTENCE_END = re.compile(r"[.!?]+(?:[\"')\]]*)(?=\s|$)")
_LINE_END_PUNCT = (".", "!", "?", '"', "'", "…", ":", ";", ")")
_C4_TERMINAL = (".", "!", "?", '"', "”")
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
_POLICY = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)


class C4LineCleaner:
    """C4's line-level rules; a transform, so the document goes on with the lines it keeps."""

    name = "c4_lines"

    def __init__(
        self,
        remove_citations: bool = True,
        terminal_punct: bool = True,
        min_words_per_line: int | None = 3,
        javascript: bool = True,
        policy: bool = True,
    ):
        self.remove_citations, self.terminal_punct = remove_citations, terminal_punct
        self.min_words_per_line, self.javascript, self.policy = (
            min_words_per_line,
            javascript,
            policy,
        )
        enabled = {
            "no_terminal_punct": terminal_punct,
            "too_few_words": min_words_per_line is not None,
            "javascript": javascript,
            "policy": policy,
        }
        # Lines removed per rule; enabled rules start at 0 so metrics show them even when idle.
        self.counters: Counter = Counter({_counter(rule): 0 for rule, on in enabled.items() if on})

    def _rule_against(self, line: str) -> str | None:
        if self.terminal_punct and not line.endswith(_C4_TERMINAL):
            return "no_terminal_punct"
        if self.min_words_per_line is not None and len(line.split()) < self.min_words_per_line:
            return "too_few_words"
        lower = line.lower()
        if self.javascript and "javascript" in lower:
            return "javascript"
        if self.policy and any(p in lower for p in _POLICY):
            return "policy"
        return None

    def apply(self, doc: Doc) -> Doc:
        text = _CITATION.sub("", doc.text) if self.remove_citations else doc.text
        kept = []
        for line in text.split("\n"):
            rule = self._rule_against(line.strip()) if line.strip() else None
            if rule:
                self.counters[_counter(rule)] += 1
            else:
                kept.append(line)
        cleaned = "\n".join(kept).strip()
        return doc if cleaned == doc.text else replace(doc, text=cleaned)


def _counter(rule: str) -> str:
    return f"c4_lines_removed.{rule}"


class C4QualityFilter:
    name = "c4_quality"

    def __init__(
        self,
        filter_lorem_ipsum: bool = True,
        filter_curly_bracket: bool = True,
        max_word_length: int | None = 1000,
        min_sentences: int | None = 5,
    ):
        self.lorem, self.curly = filter_lorem_ipsum, filter_curly_bracket
        self.max_word_length, self.min_sentences = max_word_length, min_sentences
        self.counters: Counter = Counter()

    def filter(self, doc: Doc) -> Decision:
        text = doc.text
        if not text.strip():
            return False, C4_NO_LINES_LEFT, "no line survived the line cleaner"
        if self.lorem and (at := text.lower().find("lorem ipsum")) >= 0:
            return False, C4_LOREM_IPSUM, f"'lorem ipsum' at {at}"
        if self.curly and (at := text.find("{")) >= 0:
            return False, C4_CURLY_BRACKET, f"'{{' at {at}"
        if self.max_word_length is not None:
            longest = max(map(len, text.split()), default=0)
            if longest > self.max_word_length:
                return False, C4_LONG_WORD, f"a word of {longest} > {self.max_word_length} chars"
        if self.min_sentences is not None:
            sentences = len(_SENTENCE_END.findall(text))
            if sentences < self.min_sentences:
                return False, C4_FEW_SENTENCES, f"{sentences} sentences < {self.min_sentences}"
        return True


class FineWebQualityFilter:
    name = "fineweb_quality"

    def __init__(
        self,
        line_punct_min: float | None = 0.12,
        short_line_max: float | None = 0.67,
        short_line_chars: int = 30,
        char_duplicates_max: float | None = 0.01,
        newline_ratio_max: float | None = 0.3,
    ):
        self.line_punct_min, self.short_line_max = line_punct_min, short_line_max
        self.short_line_chars, self.char_duplicates_max = short_line_chars, char_duplicates_max
        self.newline_ratio_max = newline_ratio_max
        self.counters: Counter = Counter()

    def filter(self, doc: Doc) -> Decision:
        lines = [ln.strip() for ln in doc.text.split("\n") if ln.strip()]
        if not lines:
            return True  # empty documents are the Gopher filter's business
        if self.line_punct_min is not None:
            punct = sum(ln.endswith(_LINE_END_PUNCT) for ln in lines) / len(lines)
            if punct < self.line_punct_min:
                detail = f"lines ending in punctuation {punct:.2f} < {self.line_punct_min}"
                return False, FW_LINE_PUNCT, detail
        if self.short_line_max is not None:
            short = sum(len(ln) < self.short_line_chars for ln in lines) / len(lines)
            if short > self.short_line_max:
                detail = (
                    f"lines under {self.short_line_chars} chars {short:.2f} > {self.short_line_max}"
                )
                return False, FW_SHORT_LINES, detail
        if self.char_duplicates_max is not None:
            seen, dup_chars = set(), 0
            for ln in lines:
                if ln in seen:
                    dup_chars += len(ln)
                seen.add(ln)
            dup = dup_chars / max(1, len(doc.text.replace("\n", "")))
            if dup > self.char_duplicates_max:
                detail = f"chars in repeated lines {dup:.3f} > {self.char_duplicates_max}"
                return False, FW_CHAR_DUPLICATES, detail
        words = len(doc.text.split())
        if self.newline_ratio_max is not None and words:
            newlines = doc.text.count("\n") / words
            if newlines > self.newline_ratio_max:
                detail = f"newlines per word {newlines:.2f} > {self.newline_ratio_max}"
                return False, FW_NEWLINES, detail
        return True
