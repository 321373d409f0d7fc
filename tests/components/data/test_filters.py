from components.data.documents import Doc
from components.data.filters import (
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
    # The reason says what the rule found; the detail names the block.
    assert f.filter(doc("too short")) == (False, TOO_FEW_WORDS, "gopher_quality")
    assert f.filter(doc(PROSE * 2)) == (False, TOO_MANY_WORDS, "gopher_quality")
    assert f.filter(doc("1234 5678 " * 10)) == (False, LOW_ALPHA_RATIO, "gopher_quality")
    assert f.filter(doc("# heading " * 10)) == (False, HIGH_SYMBOL_RATIO, "gopher_quality")


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
        "gopher_repetition",
    )


def test_exact_dedup_ignores_case_and_whitespace():
    f = ExactDedupFilter()
    assert f.filter(doc("Hello   World", "1")) is True
    assert f.filter(doc("hello world\n", "2")) == (False, EXACT_DUPLICATE, "exact_dedup")
    assert f.filter(doc("hello there", "3")) is True
