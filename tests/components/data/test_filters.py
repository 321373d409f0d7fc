from components.data.documents import Doc
from components.data.filters import (
    DUPLICATE_LINE_CHARS,
    DUPLICATE_LINES,
    EXACT_DUPLICATE,
    HIGH_SYMBOL_RATIO,
    LOW_ALPHA_RATIO,
    TOO_FEW_WORDS,
    TOO_MANY_WORDS,
    ExactDedupFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

PROSE = "the quick brown fox jumps over the lazy dog " * 10


def doc(text: str, i: str = "d") -> Doc:
    return Doc(i, text, "test")


def test_quality_keeps_prose():
    assert GopherQualityFilter(min_words=10, max_words=1000).filter(doc(PROSE)) is True


def test_quality_reasons():
    f = GopherQualityFilter(min_words=10, max_words=50, min_alpha_ratio=0.8, max_symbol_ratio=0.1)
    # The reason says which rule tripped; the detail, the measured value against the threshold.
    assert f.filter(doc("too short")) == (False, TOO_FEW_WORDS, "2 words < 10")
    assert f.filter(doc("1234 5678 " * 10)) == (False, LOW_ALPHA_RATIO, "alpha ratio 0.00 < 0.8")
    ok, reason, detail = f.filter(doc(PROSE * 2))
    assert (ok, reason) == (False, TOO_MANY_WORDS) and detail.endswith(" words > 50")
    heading = f.filter(doc("# heading " * 10))
    assert heading == (False, HIGH_SYMBOL_RATIO, "symbols per word 0.50 > 0.1")


def test_none_disables_a_check():
    assert (
        GopherQualityFilter(
            min_words=None, max_words=None, min_alpha_ratio=None, max_symbol_ratio=None
        ).filter(doc("1 #"))
        is True
    )


def test_repetition():
    f = GopherRepetitionFilter(max_duplicate_line_fraction=0.3)
    assert f.filter(doc("a\nb\nc\nd")) is True
    assert f.filter(doc("same\nsame\nsame\nother")) == (
        False,
        DUPLICATE_LINES,
        "0.75 of lines are repeated",
    )


def test_repetition_by_characters_lets_short_repeated_headings_through():
    # An API page: `Args:` and `Returns:` repeat, a third of the lines, few of the characters.
    page = "\n".join(
        f"def f{i}(x)\nArgs:\n    x: the value number {i} to transform and return.\nReturns:\n"
        f"    the transformed value of number {i}, never None."
        for i in range(4)
    )
    assert GopherRepetitionFilter(0.3).filter(doc(page))[1] == DUPLICATE_LINES
    by_chars = GopherRepetitionFilter(None, max_duplicate_line_char_fraction=0.2)
    assert by_chars.filter(doc(page)) is True
    spam = "\n".join(["Buy cheap watches online now!!! Best prices guaranteed."] * 5 + ["Home"])
    ok, reason, detail = by_chars.filter(doc(spam))
    assert (ok, reason) == (False, DUPLICATE_LINE_CHARS) and "characters" in detail


def test_exact_dedup_ignores_case_and_whitespace():
    f = ExactDedupFilter()
    assert f.filter(doc("Hello   World", "1")) is True
    ok, reason, detail = f.filter(doc("hello world\n", "2"))
    assert (ok, reason) == (False, EXACT_DUPLICATE) and "seen earlier" in detail
    assert f.filter(doc("hello there", "3")) is True
